"""Anytime-valid statistics for the judge: tests that stay valid however often the controller looks.

Pure functions over counts; no I/O, no clock. docs/statistics.md explains the choices for users.

* **Two versions, one kind of event** (errors, wrong answers, slow requests, non-finite outputs):
  given where the events landed, each event came from the candidate with probability
  `q = n_c r / (n_c r + n_b)`, where `n_c`, `n_b` are the versions' trials (requests, labelled
  predictions) and `r` is the ratio of their event rates. That removes the baseline's unknown rate
  and leaves one parameter. The likelihood ratio of `r` against the edge of the null `r0`, mixed
  over a fixed prior on `ln r`, is an e-process (Lindon and Malek, NeurIPS 2022): under "no worse
  than r0" it exceeds `1/alpha` with probability at most `alpha`, at any look or number of looks
  (Ville's inequality). Periods with different traffic splits (steps) are `RatioSegment`s, each
  with its own `n_c : n_b`; their likelihoods multiply, so evidence carries across steps.
* **One version, one proportion** (the candidate's accuracy against its offline value, a bucket's
  share of predictions): the Beta-binomial mixture martingale gives a confidence sequence, an
  interval that holds at all looks at once with probability `1 - alpha` (Howard et al. 2021).

The rejection rates of both are checked on simulated A/A streams in tests/unit/analysis and, end to
end through the controller's own decision path, by bench/judge.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

PRIOR_SCALE = 1.0
"""Standard deviation of `ln r` under the mixing prior: most mass on ratios between 1/e and e,
where regressions worth catching quickly lie; larger ones are caught at once anyway."""
_GRID_HALF_WIDTH = math.log(32.0)
_GRID_POINTS = 65
RATIO_GRID: tuple[float, ...] = tuple(
    math.exp(-_GRID_HALF_WIDTH + 2 * _GRID_HALF_WIDTH * i / (_GRID_POINTS - 1)) for i in range(_GRID_POINTS)
)
"""Ratios the prior puts mass on: 1/32 to 32 in steps of about 11 %."""
_PRIOR_WEIGHTS: tuple[float, ...] = tuple(math.exp(-((math.log(r) / PRIOR_SCALE) ** 2) / 2) for r in RATIO_GRID)
POWER_Z = 0.8416
"""Standard normal quantile for 80 % power."""


# ---------------------------------------------------------------------------------------------
# Two versions: the ratio of event rates


@dataclass(frozen=True, kw_only=True)
class RatioSegment:
    """Counts of both versions over one period with a steady traffic split (one step)."""

    candidate_events: float
    candidate_trials: float
    baseline_events: float
    baseline_trials: float

    @property
    def usable(self) -> bool:
        return self.candidate_trials > 0 and self.baseline_trials > 0

    def log_likelihood(self, ratio: float) -> float:
        """Log-likelihood of the candidate/baseline split of this segment's events under `ratio`."""
        if not self.usable:
            return 0.0
        candidate_mass = self.candidate_trials * ratio
        log_total = math.log(candidate_mass + self.baseline_trials)
        return self.candidate_events * (math.log(candidate_mass) - log_total) + self.baseline_events * (
            math.log(self.baseline_trials) - log_total
        )


def pooled(segments: Iterable[RatioSegment]) -> RatioSegment:
    """All segments' counts added up (the rates per version do not depend on the split)."""
    items = list(segments)
    return RatioSegment(
        candidate_events=sum(s.candidate_events for s in items),
        candidate_trials=sum(s.candidate_trials for s in items),
        baseline_events=sum(s.baseline_events for s in items),
        baseline_trials=sum(s.baseline_trials for s in items),
    )


def _log_likelihood(segments: Sequence[RatioSegment], ratio: float) -> float:
    return sum(segment.log_likelihood(ratio) for segment in segments)


def _log_mixture(log_likelihoods: Sequence[float], weights: Sequence[float]) -> float:
    """ln of the prior-weighted mean of exp(log_likelihoods); -inf when no weight."""
    total_weight = sum(weights)
    if total_weight <= 0:
        return -math.inf
    top = max(log_likelihoods)
    mass = sum(w * math.exp(ll - top) for ll, w in zip(log_likelihoods, weights, strict=True))
    return top + math.log(mass / total_weight)


@dataclass(frozen=True, kw_only=True)
class RatioEvidence:
    """What the counts say about `r`, the candidate's event rate over the baseline's."""

    harm: float
    """E-value against "r <= null": large means the candidate is worse than the null allows."""
    safety: float
    """E-value against "r >= null": large means the candidate is within the null."""
    low: float
    """Confidence sequence for r at the level asked for (0 when nothing bounds it below)."""
    high: float
    """math.inf when nothing bounds it above."""


def ratio_evidence(segments: Sequence[RatioSegment], *, null: float, alpha: float) -> RatioEvidence:
    """E-values at the edge `null` of "no worse than null", and the ratio's confidence sequence.

    The harm e-value mixes the likelihood ratio over the prior's ratios above `null`, the safety
    e-value over those below; each is an e-process for its null. The interval keeps every grid
    ratio that neither one-sided test at `alpha / 2` rejects.
    """
    usable = [s for s in segments if s.usable]
    at_null = _log_likelihood(usable, null)
    grid_ll = [_log_likelihood(usable, r) for r in RATIO_GRID]
    above = [(ll, w) for r, ll, w in zip(RATIO_GRID, grid_ll, _PRIOR_WEIGHTS, strict=True) if r > null]
    below = [(ll, w) for r, ll, w in zip(RATIO_GRID, grid_ll, _PRIOR_WEIGHTS, strict=True) if r < null]
    harm = _log_mixture([ll for ll, _ in above], [w for _, w in above]) - at_null if above else -math.inf
    safety = _log_mixture([ll for ll, _ in below], [w for _, w in below]) - at_null if below else -math.inf
    low, high = _ratio_interval(grid_ll, alpha=alpha)
    return RatioEvidence(harm=_exp(harm), safety=_exp(safety), low=low, high=high)


def _exp(log_value: float) -> float:
    return math.exp(min(log_value, 700.0))


def _log_ratio(mass: float, weight: float) -> float:
    """ln(mass / weight), -inf without mass; in two logarithms, as mass may be subnormal."""
    return math.log(mass) - math.log(weight) if mass > 0 and weight > 0 else -math.inf


def _ratio_interval(grid_ll: Sequence[float], *, alpha: float) -> tuple[float, float]:
    """Grid ratios not rejected by either one-sided mixture test at alpha/2 (prefix/suffix sums)."""
    if not grid_ll:
        return 0.0, math.inf
    top = max(grid_ll)
    scaled = [w * math.exp(ll - top) for ll, w in zip(grid_ll, _PRIOR_WEIGHTS, strict=True)]
    limit = math.log(2 / alpha)
    count = len(grid_ll)
    # Prior mass and likelihood-weighted mass strictly below / above each grid point.
    below = [(0.0, 0.0)] * count
    above = [(0.0, 0.0)] * count
    for i in range(1, count):
        mass, weight = below[i - 1]
        below[i] = (mass + scaled[i - 1], weight + _PRIOR_WEIGHTS[i - 1])
    for i in range(count - 2, -1, -1):
        mass, weight = above[i + 1]
        above[i] = (mass + scaled[i + 1], weight + _PRIOR_WEIGHTS[i + 1])
    kept = [
        i
        for i in range(count)
        if _log_ratio(*above[i]) - (grid_ll[i] - top) < limit and _log_ratio(*below[i]) - (grid_ll[i] - top) < limit
    ]
    if not kept:
        return 0.0, math.inf
    low = 0.0 if kept[0] == 0 else RATIO_GRID[kept[0]]
    high = math.inf if kept[-1] == count - 1 else RATIO_GRID[kept[-1]]
    return low, high


# ---------------------------------------------------------------------------------------------
# One version: a proportion


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def proportion_interval(events: float, trials: float, *, alpha: float) -> tuple[float, float]:
    """Confidence sequence for a proportion from `events` out of `trials` (Beta(1/2, 1/2) mixture).

    Keeps every p whose mixture e-value against "the proportion is p" stays below 1/alpha: with
    probability 1 - alpha the interval holds the true proportion at every look.
    """
    if trials <= 0:
        return 0.0, 1.0
    k = min(max(events, 0.0), trials)
    f = trials - k
    level = _log_beta(0.5 + k, 0.5 + f) - _log_beta(0.5, 0.5) + math.log(alpha)

    def log_likelihood(p: float) -> float:
        return (k * math.log(p) if k > 0 else 0.0) + (f * math.log1p(-p) if f > 0 else 0.0)

    estimate = k / trials
    low = 0.0 if k == 0 else _crossing(log_likelihood, level, inside=estimate, outside=0.0)
    high = 1.0 if f == 0 else _crossing(log_likelihood, level, inside=estimate, outside=1.0)
    return low, high


def _crossing(function: object, level: float, *, inside: float, outside: float) -> float:
    """Bisection for where a concave function falls to `level` between `inside` and `outside`."""
    assert callable(function)
    for _ in range(48):
        middle = (inside + outside) / 2
        if middle in (0.0, 1.0):
            break
        if function(middle) > level:
            inside = middle
        else:
            outside = middle
    return (inside + outside) / 2


def upper_rate_bound(events: float, trials: float, *, alpha: float) -> float:
    return proportion_interval(events, trials, alpha=alpha)[1]


# ---------------------------------------------------------------------------------------------
# Distributions: a lower confidence bound on a divergence


def divergence_lower_bound(
    baseline: Sequence[tuple[float, float]], candidate: Sequence[tuple[float, float]], *, measure: str
) -> float:
    """Smallest PSI (`measure="psi"`) or Jensen-Shannon divergence in bits (`"js"`) that shares
    inside the given per-bucket intervals allow; each bucket's term is minimised on its own, which
    only lowers the bound. Where a baseline and a candidate interval overlap the term is 0;
    elsewhere it is taken at the nearest ends (an f-divergence term grows away from the diagonal)."""
    total = 0.0
    for (b_low, b_high), (c_low, c_high) in zip(baseline, candidate, strict=True):
        if c_low > b_high:
            b, c = b_high, c_low
        elif b_low > c_high:
            b, c = b_low, c_high
        else:
            continue
        total += _divergence_term(b, c, measure=measure)
    return total


def _divergence_term(b: float, c: float, *, measure: str) -> float:
    if measure == "psi":
        return (c - b) * math.log(c / b) if b > 0 and c > 0 else math.inf
    mixture = (b + c) / 2
    return sum(share * math.log2(share / mixture) / 2 for share in (b, c) if share > 0)


# ---------------------------------------------------------------------------------------------
# Power, for status: what the evidence so far can and cannot see


def z_boundary(standard_error: float, *, alpha: float) -> float:
    """How many standard errors an estimate must be from the null before the mixture test
    rejects, in the normal approximation of a mixture with prior scale PRIOR_SCALE."""
    v = standard_error**2
    s = PRIOR_SCALE**2
    return math.sqrt((1 + v / s) * (2 * math.log(1 / alpha) + math.log(1 + s / v)))


def log_ratio_standard_error(*, candidate_events: float, baseline_events: float) -> float:
    """Delta-method standard error of ln(rate_c / rate_b) from expected event counts."""
    return math.sqrt(1 / max(candidate_events, 1e-9) + 1 / max(baseline_events, 1e-9))


def smallest_detectable_ratio(
    *, candidate_trials: float, baseline_trials: float, baseline_rate: float, null: float, alpha: float
) -> float:
    """The ratio a candidate would need for the test to reject `null` with 80 % power on as many
    trials as these (normal approximation); math.inf when there is nothing to go on."""
    if candidate_trials <= 0 or baseline_trials <= 0 or baseline_rate <= 0:
        return math.inf
    ratio = null * 2
    for _ in range(8):  # fixed point: the candidate's expected events grow with the ratio
        se = log_ratio_standard_error(
            candidate_events=candidate_trials * baseline_rate * ratio,
            baseline_events=baseline_trials * baseline_rate,
        )
        ratio = null * math.exp((z_boundary(se, alpha=alpha) + POWER_Z) * se)
    return ratio


def seconds_to_resolve(
    *, candidate_rate: float, baseline_rate: float, event_rate: float, tolerance_ratio: float, alpha: float
) -> float:
    """Seconds of traffic (at these trials per second and this baseline event rate) after which a
    candidate as good as the baseline and one at the tolerance's edge are told apart with 80 %
    power; math.inf when they never are (no traffic, no events, or no tolerance)."""
    if candidate_rate <= 0 or baseline_rate <= 0 or event_rate <= 0 or tolerance_ratio <= 1:
        return math.inf
    distance = math.log(tolerance_ratio)

    def resolved(seconds: float) -> bool:
        se = log_ratio_standard_error(
            candidate_events=candidate_rate * event_rate * seconds, baseline_events=baseline_rate * event_rate * seconds
        )
        return (z_boundary(se, alpha=alpha) + POWER_Z) * se <= distance

    low, high = 1.0, 1.0
    while not resolved(high):
        high *= 2
        if high > 1e9:
            return math.inf
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (low, middle) if resolved(middle) else (middle, high)
    return high


def divergence_upper_bound(
    baseline: Sequence[tuple[float, float]], candidate: Sequence[tuple[float, float]], *, measure: str, floor: float
) -> float:
    """Largest PSI or Jensen-Shannon divergence (bits) that shares inside the intervals allow, each
    bucket's term maximised on its own (at a corner: the terms are convex). Shares below `floor`
    count as `floor` in PSI, whose logarithm is otherwise infinite at an empty bucket."""
    total = 0.0
    for (b_low, b_high), (c_low, c_high) in zip(baseline, candidate, strict=True):
        corners = [(b, c) for b in (b_low, b_high) for c in (c_low, c_high)]
        if measure == "psi":
            corners = [(max(b, floor), max(c, floor)) for b, c in corners]
        total += max(_divergence_term(b, c, measure=measure) for b, c in corners)
    return total
