"""The analysis `Checker`: measures when a measurement is due, keeps status.analysis, judges.

A run is one series of measurements judged together: the current `analyze` step's window
(`step-<index>`), or background analysis across the steps from `startingStep` on (`background`).
During an analyze step only the step's run measures, so no query runs twice in one interval.

A sequential metric's evidence outlives runs: it is kept per metric for the whole candidate, one
segment per step (controller.analysis.evidence), so a decision rests on all the traffic since the
metric was first measured and the rollout's error budget covers every step and look at once.

Everything the checker needs between passes is in status.analysis, so a restarted controller
resumes where the last one stopped; the clock comes in as `context.now`.

The checker never waits for a provider: every read of a look goes through `Measurements`
(controller.analysis.measurements), which runs it on the measurement pool. A pass whose look still
waits for a read changes nothing and asks to be called again; the pool re-enqueues the rollout
when the reads are in, and the next pass takes the look.

With `batch_period_seconds`, the count queries of the presets and of the model-aware checks'
defaults are batched (controller.analysis.batch): looks are taken on a grid, and each reads only
the counts since the metric's previous look, from one query that serves every rollout.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol, TypeVar
from urllib.parse import urlsplit

import httpx

from controller.analysis.batch import (
    Index,
    batch_query,
    counts_of,
    grid_ms,
    index_series,
    labels_of,
    latest_on_phase,
    seconds_between,
    tick_at_or_after,
)
from controller.analysis.evaluate import (
    Judgement,
    MetricState,
    Reading,
    Result,
    Tally,
    combine,
    judge,
    metric_state,
)
from controller.analysis.evidence import CountQuery, Evidence, Numbers, Segment, evidence_by_metric, number_key
from controller.analysis.fields import promql_string
from controller.analysis.judges import Budget, Versions, judge_evidence, slow_threshold
from controller.analysis.measurements import Finished, InlineMeasurements, Lane, Look, Measurements
from controller.analysis.plugins import DEFAULT_PLUGINS, AnalysisPlugins
from controller.analysis.prediction_logs import JudgedOnPredictionLogs, PredictionLogReader
from controller.analysis.presets import BATCHABLE, Counter, CounterSum
from controller.analysis.providers import (
    InvalidQuery,
    MetricProvider,
    MetricSource,
    PrometheusSource,
    SeriesProvider,
    VectorProvider,
)
from controller.analysis.rows import measured_summary
from controller.analysis.spec import (
    AnalysisMetric,
    AnalysisSpec,
    MetricSpec,
    PromoteWhen,
    SequentialSpec,
    SlowRequestsTest,
    check_unique_names,
    format_window,
    parse_analysis,
    parse_metrics,
    parse_post_promotion,
    render_template,
)
from controller.analysis.telemetry import MEASUREMENT_VALUE
from controller.api import JSON, AnalyzeStep, MirrorStep, SpecError, format_time, parse_time
from controller.checks import CheckContext, CheckOutcome, ReadConfigMap, RubricEntry, StepWindow, Verdict
from controller.errors import PermanentError, ReconcileError, ReferenceProblem, TemporaryError
from controller.outbound import DEFAULT_POLICY, OutboundPolicy, OutboundRefused
from controller.plan import measured_window, post_promotion_window

STATUS_FIELD = "analysis"
"""The status field this checker owns (listed in controller.plan.CHECK_STATUS_FIELDS)."""
BACKGROUND_RUN = "background"
POST_PROMOTION_RUN = "post-promotion"
"""The run after a promotion (spec.postPromotion); its looks are kept in status.postPromotion.analysis."""
WAITING_REQUEUE_SECONDS = 1.0
"""While a look waits for its reads and nothing re-enqueues the rollout when they are in: how
soon to look again."""
NOTIFIED_REQUEUE_SECONDS = 30.0
"""While a look waits for its reads and the pool re-enqueues the rollout when they are in: the
pass after this long is only a safety net."""
ASK_AHEAD_SECONDS = 120.0
"""A look due within this long is asked of a pool that notifies as soon as the previous one is
stored: its reads wait there until it is due, and its pass comes when they are in (one pass and
one wait in the work queue per look, not two). Well under the pool's `result_seconds`."""

_T = TypeVar("_T")


class TemplateLookup(Protocol):
    """The `spec` of an AnalysisTemplate in `namespace`, or None when there is none by that name."""

    def __call__(self, *, namespace: str, name: str) -> Mapping[str, Any] | None: ...


ReadSecret = Callable[[str, str], Mapping[str, str] | None]
"""`read_secret(namespace, name)`: the Secret's data, or None when it does not exist. The checker
only asks whether a Secret a metric's source reads (a web metric's `headersFrom`) is there; the
provider reads what it needs."""


class _MissingReference(Exception):
    """A read found an object missing (a provider raised ReferenceProblem on the pool). Deliberately
    not a ReconcileError: the measurement pool keeps a provider's TemporaryError or PermanentError
    for the look, and hands out any other exception once, so the read runs again at the next ask,
    when the object may exist."""


@dataclass(frozen=True, kw_only=True)
class Run:
    """One series of measurements judged together, as kept in status.analysis.runs."""

    name: str
    started_at: datetime
    last_measured_at: datetime | None = None
    tallies: Mapping[str, Tally] | None = None
    """Per metric name; None until the first measurement."""

    def tally(self, metric: str) -> Tally:
        return (self.tallies or {}).get(metric, Tally())

    def to_json(self) -> JSON:
        body: JSON = {"name": self.name, "startedAt": format_time(self.started_at)}
        if self.last_measured_at is not None:
            body["lastMeasuredAt"] = format_time(self.last_measured_at)
        body["metrics"] = [{"metric": name, **tally.to_json()} for name, tally in sorted((self.tallies or {}).items())]
        return body

    @staticmethod
    def from_json(raw: Mapping[str, Any]) -> Run | None:
        started = parse_time(raw.get("startedAt"))
        if started is None:
            return None
        tallies = {item["metric"]: Tally.from_json(item) for item in raw.get("metrics", [])}
        return Run(
            name=raw["name"],
            started_at=started,
            last_measured_at=parse_time(raw.get("lastMeasuredAt")),
            tallies=tallies,
        )


def _json_number(value: float | None) -> float | None:
    """JSON has no NaN or infinity; status keeps those as null."""
    return value if value is not None and math.isfinite(value) else None


@dataclass(frozen=True, kw_only=True)
class _Plan:
    """What the current pass judges: which run, which metrics, how often, until when."""

    analysis: AnalysisSpec
    metrics: tuple[AnalysisMetric, ...]
    metric_fields: Mapping[str, str]
    """Metric name -> the field configuring it (`spec.analysis.metrics[0]`,
    `AnalysisTemplate latency: spec.metrics[0]`), for errors found while Pending."""
    run_name: str
    started_at: datetime
    window_end: datetime | None
    """End of the analyze step's window; None for background analysis."""
    extension_end: datetime | None
    """With evidenceOfSafety: the latest an analyze step may run to; None otherwise."""
    segment_step: int
    """The step whose traffic split this look's counts are taken at."""
    segment_start: datetime
    """When the counts of this look's segment begin."""
    budget: Budget
    """Each sequential metric's share of the rollout's error rates."""
    stored: Mapping[str, Any]
    """The looks so far, as the last pass left them: status.analysis, or status.postPromotion.analysis
    after a promotion."""
    after_promotion: bool = False
    """The promoted version measured alone (spec.postPromotion): until its window is over, a look
    that cannot judge keeps it running (no undo on missing data)."""


class AnalysisChecker:
    """controller.checks.Checker for metric analysis; one instance serves all rollouts."""

    def __init__(
        self,
        *,
        providers: Mapping[str, MetricProvider],
        template_lookup: TemplateLookup,
        read_configmap: ReadConfigMap | None = None,
        read_secret: ReadSecret | None = None,
        outbound: OutboundPolicy = DEFAULT_POLICY,
        measurements: Measurements | None = None,
        batch_period_seconds: float | None = None,
        plugins: AnalysisPlugins = DEFAULT_PLUGINS,
        prediction_logs: PredictionLogReader | None = None,
    ) -> None:
        self._providers = providers
        self._prediction_logs = prediction_logs or PredictionLogReader(outbound=outbound)
        """Reads the versions' prediction logs for the checks judged on them (pairedPredictions)."""
        self._plugins = plugins
        """What parses the analysis: the providers' and checks' plug-ins."""
        self._measurements: Measurements = measurements or InlineMeasurements()
        """Where reads run: the controller's measurement pool, or at once on the calling thread."""
        prometheus = providers.get(PrometheusSource.provider)
        self._batch_period = batch_period_seconds if isinstance(prometheus, SeriesProvider) else None
        """Batched count queries on a grid of at most this period; None: every query per rollout."""
        self._template_lookup = template_lookup
        self._read_configmap = read_configmap
        """Reads training profiles; without it, a training-skew metric's profile is missing."""
        self._object_readers: dict[str, ReadSecret] = {
            kind: read for kind, read in (("Secret", read_secret), ("ConfigMap", read_configmap)) if read is not None
        }
        """Tell whether the objects a metric's source reads exist, by kind; a kind without one (the
        controller reads no Secrets) is not asked about, and the provider reports what it cannot read."""
        self._outbound = outbound
        """The fence the providers apply at request time (controller.outbound); `validate` applies
        its host-level part to every URL a planned metric would call."""

    def validate(self, *, context: CheckContext) -> None:
        """Plans every pass the rollout can make, measuring nothing: each analyze (or mirror) step's and, from
        `startingStep` on, background analysis. Whatever `_plan` would raise once traffic is
        shared (a spec mistake such as an unknown `{{variable}}`, in the rollout or in a template;
        a missing AnalysisTemplate) is raised now instead, and so is a URL of a planned metric
        that the outbound fence refuses by its host (`_check_outbound`). Then every object the
        planned metrics read must exist: a training profile's ConfigMap (with its key) and a web
        metric's `headersFrom` Secret (`_check_references`); a missing one is a ReferenceProblem
        naming the field, so the rollout waits for it before the first weight moves. Spec
        mistakes come first: a rollout that would fail anyway does not wait for an object."""
        analysis = parse_analysis(context.spec.analysis, plugins=self._plugins)
        steps = context.spec.steps
        plans: list[_Plan | None] = []
        for index in range(len(steps)):
            window = measured_window(context.spec, index, started_at=context.now)
            if window is not None:
                plans.append(self._plan(replace(context, step=window)))
        if analysis is not None and analysis.starting_step is not None:
            _check_starting_step(analysis.starting_step, step_count=len(steps))
            at_start = replace(context.status, current_step_index=analysis.starting_step)
            plans.append(self._plan(replace(context, status=at_start, step=None)))
        post_promotion = context.spec.post_promotion
        if post_promotion is not None:
            window = StepWindow(index=len(steps), started_at=context.now, seconds=post_promotion.duration_seconds)
            plans.append(self._post_promotion_plan(context, window, stored={}))
        for plan in plans:
            self._check_outbound(context, plan)
        self._check_references(context.namespace, [plan for plan in plans if plan is not None])

    def _check_references(self, namespace: str, plans: Sequence[_Plan]) -> None:
        """Raises ReferenceProblem for the first object the plans' metrics read that does not
        exist; a metric planned for several runs is looked at once."""
        located = {plan.metric_fields[metric.name]: metric for plan in plans for metric in plan.metrics}
        for metric_field, metric in located.items():
            if isinstance(metric, SequentialSpec):
                metric.test.read_reference(
                    namespace=namespace, metric_field=metric_field, read_configmap=self._read_configmap
                )
            else:
                self._check_source_references(namespace, metric.source, metric_field=metric_field)

    def _check_source_references(self, namespace: str, source: MetricSource, *, metric_field: str) -> None:
        """Each object the source reads (a web metric's `headersFrom` Secret) must exist; a kind
        this controller does not read (Secrets without --read-secrets) is not asked about."""
        for reference in source.references():
            read = self._object_readers.get(reference.kind)
            if read is not None and read(namespace, reference.name) is None:
                raise ReferenceProblem(reference.missing(namespace=namespace, metric_field=metric_field))

    def _check_outbound(self, context: CheckContext, plan: _Plan | None) -> None:
        """Each URL the plan's metrics would call (a web `url` rendered for both versions, a
        Prometheus `address`) against the fence's host-level rules: the allow list and literal
        addresses. Names are not resolved here; one resolving into a refused network is refused
        when the request is made (controller.outbound)."""
        if plan is None:
            return
        versions = dict.fromkeys((context.spec.candidate, context.stable_version))
        for metric in plan.metrics:
            metric_field = plan.metric_fields[metric.name]
            for called in _outbound_urls(context, plan, metric, metric_field, versions):
                problem = _outbound_problem(self._outbound, called.url, web=called.web)
                if problem is not None:
                    raise SpecError(called.field_path, called.preface + problem)

    def __call__(self, *, context: CheckContext) -> CheckOutcome | None:
        plan = self._plan(context)
        if plan is None:
            return None
        stored = _Stored.of(context, plan.stored)
        run = stored.run(plan.run_name)
        if run is None or run.started_at != plan.started_at:
            run = Run(name=plan.run_name, started_at=plan.started_at)
        interval = timedelta(seconds=plan.analysis.interval_seconds)
        measurements = list(stored.measurements)
        evidence = dict(stored.evidence)
        states = self._states(plan, run, now=context.now)
        waiting = [m for m, s in zip(plan.metrics, states, strict=True) if not s.complete]
        # Batched, looks are taken on the grid, so that rollouts looking at once share their queries.
        grid = self._grid(plan)
        due = _next_due(run, plan, interval, grid)
        proposed = context.now
        if grid is not None and context.now >= due:
            proposed = latest_on_phase(
                due, context.now, interval_seconds=plan.analysis.interval_seconds, period_ms=grid
            )
        reads_pending = False
        if waiting and context.now >= due:
            # Checked here, on the reconcile thread, so that a missing Secret holds the rollout
            # (ReferencesValid=False) every pass until it exists, rather than failing a read.
            for metric in waiting:
                if isinstance(metric, MetricSpec):
                    self._check_source_references(
                        context.namespace, metric.source, metric_field=plan.metric_fields[metric.name]
                    )
            look = Look(owner=(context.namespace, context.name), run=run.name, due=due)
            at = self._measurements.look_time(look, proposed)
            evaluated = at if self._measurements.deferred or grid is not None else None
            reads = _Reads(self._measurements, look, at=evaluated, grid=grid)
            looked = dict(evidence)
            records = []
            missing: list[ReferenceProblem] = []
            for metric in waiting:
                try:
                    if isinstance(metric, SequentialSpec):
                        gathered = looked.get(metric.name) or Evidence(metric=metric.name)
                        record, looked[metric.name] = self._look(context, plan, metric, gathered, at=at, reads=reads)
                    else:
                        record = self._measure(context, plan, metric, at=at, reads=reads)
                except ReferenceProblem as problem:
                    # The look's other reads are still asked for: none keeps an answer saying an
                    # object is missing for a pass after it exists again.
                    missing.append(problem)
                    continue
                records.append(record)
            if missing:
                raise missing[0]
            reads_pending = reads.pending
            if not reads_pending:
                # Every read is in: the look is taken, as of `at`.
                evidence = looked
                tallies = dict(run.tallies or {})
                for record in records:
                    record.export(context)
                    tallies[record.metric] = run.tally(record.metric).after(record.judgement)
                    measurements.append(record.to_json(run=run.name))
                run = replace(run, last_measured_at=at, tallies=tallies)
                states = self._states(plan, run, now=context.now)
        overall = combine(states, on_inconclusive=plan.analysis.on_inconclusive)
        if plan.after_promotion and overall.verdict == Verdict.INCONCLUSIVE and not _looked_at_window_end(plan, run):
            # Only the last look decides that the promoted version could not be judged.
            overall = replace(overall, verdict=Verdict.RUNNING)
        # Kept: the background run (paused during analyze steps) and the run measured now.
        runs = [r for r in stored.runs if r.name == BACKGROUND_RUN and r.name != run.name] + [run]
        status = {
            "candidateHash": context.spec.candidate_hash(),
            "verdict": overall.verdict.value,
            "message": overall.message,
            "falseRollbackRate": plan.analysis.false_rollback_rate,
            "runs": [r.to_json() for r in runs],
            "evidence": [entry.to_json() for _, entry in sorted(evidence.items())],
            "measurements": measurements[-plan.analysis.measurement_history_limit :],
        }
        requeue: float | None
        if reads_pending:
            requeue = NOTIFIED_REQUEUE_SECONDS if self._measurements.notifies else WAITING_REQUEUE_SECONDS
        else:
            next_due = _next_due(run, plan, interval, grid)
            requeue = _requeue_after(context.now, next_due, plan, states)
            if requeue is not None and self._ask_ahead(context, plan, run, evidence, states, due=next_due, grid=grid):
                # The pool brings the pass when the answers are in; this one is only a safety net.
                requeue += NOTIFIED_REQUEUE_SECONDS
        return CheckOutcome(
            verdict=overall.verdict,
            message=overall.message,
            requeue_after=requeue,
            on_inconclusive=overall.on_inconclusive,
            status_fields={STATUS_FIELD: status},
            # The rubric is about the candidate before its promotion.
            rubric=()
            if plan.after_promotion
            else tuple(
                RubricEntry(item=item, check=metric.name, verdict=state.verdict)
                for metric, state in zip(plan.metrics, states, strict=True)
                for item in metric.rubric_items
            ),
        )

    def _ask_ahead(
        self,
        context: CheckContext,
        plan: _Plan,
        run: Run,
        evidence: Mapping[str, Evidence],
        states: list[MetricState],
        *,
        due: datetime,
        grid: int | None,
    ) -> bool:
        """Asks the pool now for the reads of the look due at `due`, taken at that moment, as the
        pass at `due` would ask them (same keys): they wait in the pool until then. True when
        asked: a pool that notifies, a look due soon that no earlier moment (an extension's end)
        comes before. What the look computes from the stand-ins is discarded; a reference or
        query problem is left for the pass at `due` to report."""
        ahead = (due - context.now).total_seconds()
        if not self._measurements.notifies or not 0 < ahead <= ASK_AHEAD_SECONDS:
            return False
        if plan.extension_end is not None and plan.extension_end < due:
            return False
        waiting = [m for m, state in zip(plan.metrics, states, strict=True) if not state.complete]
        look = Look(owner=(context.namespace, context.name), run=run.name, due=due)
        at = self._measurements.look_time(look, due)
        reads = _Reads(self._measurements, look, at=at, grid=grid)
        for metric in waiting:
            try:
                if isinstance(metric, SequentialSpec):
                    gathered = evidence.get(metric.name) or Evidence(metric=metric.name)
                    self._look(context, plan, metric, gathered, at=at, reads=reads)
                else:
                    self._measure(context, plan, metric, at=at, reads=reads)
            except (ReconcileError, SpecError):
                return False
        return bool(waiting)

    def _grid(self, plan: _Plan) -> int | None:
        """The grid period (ms) of batched looks for this plan; None without batching."""
        if self._batch_period is None:
            return None
        return grid_ms(plan.analysis.interval_seconds, self._batch_period)

    def _states(self, plan: _Plan, run: Run, *, now: datetime) -> list[MetricState]:
        # The window is over once a look was taken at its end: the last interval's traffic counts.
        window_over = _looked_at_window_end(plan, run)
        extension_over = plan.extension_end is not None and now >= plan.extension_end
        return [
            metric_state(
                metric=m,
                tally=run.tally(m.name),
                window_over=window_over,
                needs_safety=plan.extension_end is not None and isinstance(m, SequentialSpec),
                extension_over=extension_over,
            )
            for m in plan.metrics
        ]

    def _plan(self, context: CheckContext) -> _Plan | None:
        promoted = post_promotion_window(context.spec, context.status)
        if promoted is not None:
            record = context.status.post_promotion
            return self._post_promotion_plan(context, promoted, stored=record.analysis if record is not None else {})
        analysis = parse_analysis(context.spec.analysis, plugins=self._plugins)
        step: StepWindow | None = context.step
        if step is not None:
            analysis = analysis or AnalysisSpec()
            located = self._metrics(context.namespace, analysis, step)
            _check_renders(context, located)
            metrics = tuple(located.values())
            if not metrics:
                raise SpecError(
                    f"spec.steps[{step.index}].analyze",
                    "has no metrics to measure; add spec.analysis.metrics or templates",
                )
            window_end = step.started_at + timedelta(seconds=step.seconds)
            return _Plan(
                analysis=analysis,
                metrics=metrics,
                metric_fields={metric.name: where for where, metric in located.items()},
                run_name=f"step-{step.index}",
                started_at=step.started_at,
                window_end=window_end,
                extension_end=_extension_end(context, analysis, step),
                segment_step=step.index,
                segment_start=step.started_at,
                budget=self._budget(context, analysis),
                stored=_analysis_status(context),
            )
        if analysis is None or analysis.starting_step is None:
            return None
        if context.status.current_step_index < analysis.starting_step:
            return None
        located = self._metrics(context.namespace, analysis, None)
        _check_renders(context, located)
        metrics = tuple(located.values())
        if not metrics:
            raise SpecError("spec.analysis", "startingStep is set but there are no metrics or templates to measure")
        previous = _Stored.of(context, _analysis_status(context)).run(BACKGROUND_RUN)
        started_at = previous.started_at if previous is not None else context.now
        step_started = parse_time(context.status.step_started_at) or started_at
        return _Plan(
            analysis=analysis,
            metrics=metrics,
            metric_fields={metric.name: where for where, metric in located.items()},
            run_name=BACKGROUND_RUN,
            started_at=started_at,
            window_end=None,
            extension_end=None,
            segment_step=context.status.current_step_index,
            # Each step of background analysis is a segment of its own: its weight is steady.
            segment_start=max(started_at, step_started),
            budget=self._budget(context, analysis),
            stored=_analysis_status(context),
        )

    def _post_promotion_plan(self, context: CheckContext, window: StepWindow, *, stored: Mapping[str, Any]) -> _Plan:
        """The promoted version alone over `window` (spec.postPromotion): its metrics each hold an
        absolute guardrail, and its error rate is shared between its sequential metrics."""
        assert context.spec.post_promotion is not None
        analysis = parse_analysis(context.spec.analysis, plugins=self._plugins)
        post = parse_post_promotion(context.spec.post_promotion.section, analysis=analysis, plugins=self._plugins)
        located = {f"spec.postPromotion.metrics[{i}]": metric for i, metric in enumerate(post.metrics)}
        _check_renders(context, located)
        shares = max(sum(isinstance(metric, SequentialSpec) for metric in post.metrics), 1)
        return _Plan(
            analysis=AnalysisSpec(
                interval_seconds=post.interval_seconds,
                metrics=post.metrics,
                false_rollback_rate=post.false_rollback_rate,
            ),
            metrics=post.metrics,
            metric_fields={metric.name: where for where, metric in located.items()},
            run_name=POST_PROMOTION_RUN,
            started_at=window.started_at,
            window_end=window.started_at + timedelta(seconds=window.seconds),
            extension_end=None,
            segment_step=window.index,
            segment_start=window.started_at,
            # Nothing waits for evidence of safety after a promotion: the second rate is never spent.
            budget=Budget(false_rollback=post.false_rollback_rate / shares, false_promotion=post.false_rollback_rate),
            stored=stored,
            after_promotion=True,
        )

    def _metrics(self, namespace: str, analysis: AnalysisSpec, step: StepWindow | None) -> dict[str, AnalysisMetric]:
        """spec.analysis.metrics and the metrics of every template the run names, each name once:
        a run keeps one tally per name, so two metrics of one name would be judged as one. Keyed
        by the field configuring each metric, in order."""
        metrics = {f"spec.analysis.metrics[{i}]": metric for i, metric in enumerate(analysis.metrics)}
        metrics.update(self._template_metrics(namespace, _templates_named_in(analysis, step)))
        check_unique_names(tuple(metrics.values()), path="spec.analysis (metrics and templates together)")
        return metrics

    def _template_metrics(self, namespace: str, named_in: Mapping[str, str]) -> dict[str, AnalysisMetric]:
        """The metrics of the AnalysisTemplates in `named_in` (template name -> the field naming
        it), keyed by the field configuring each (`AnalysisTemplate latency: spec.metrics[0]`)."""
        metrics: dict[str, AnalysisMetric] = {}
        for name, field_path in named_in.items():
            template = self._template(namespace, name, field_path=field_path)
            path = f"AnalysisTemplate {name}: spec.metrics"
            for i, metric in enumerate(parse_metrics(template.get("metrics"), path=path, plugins=self._plugins)):
                metrics[f"{path}[{i}]"] = metric
        return metrics

    def _template(self, namespace: str, name: str, *, field_path: str) -> Mapping[str, Any]:
        """The AnalysisTemplate's spec; ReferenceProblem naming `field_path` (the field naming it)
        when it does not exist: a missing object, not a mistake in the spec, so creating it lets
        the rollout go on."""
        template = self._template_lookup(namespace=namespace, name=name)
        if template is None:
            raise ReferenceProblem(
                f"{field_path}: AnalysisTemplate {name!r} does not exist in namespace {namespace}; "
                "create it or fix the name"
            )
        return template

    def _budget(self, context: CheckContext, analysis: AnalysisSpec) -> Budget:
        """An equal share of the rollout's error rates for every sequential metric the rollout
        measures in any step (Bonferroni: the shares add up to the whole). Every template named
        anywhere counts, so one missing (even a later step's) is a ReferenceProblem: without it
        the shares would silently change."""
        named_in = _templates_named_in(analysis, None)
        for index, step in enumerate(context.spec.steps):
            if isinstance(step, AnalyzeStep):
                for name in step.templates:
                    named_in.setdefault(name, f"spec.steps[{index}].analyze.templates")
        names = {m.name for m in analysis.metrics if isinstance(m, SequentialSpec)}
        for name, field_path in named_in.items():
            template = self._template(context.namespace, name, field_path=field_path)
            metrics = parse_metrics(
                template.get("metrics"), path=f"AnalysisTemplate {name}: spec.metrics", plugins=self._plugins
            )
            for metric in metrics:
                if isinstance(metric, SequentialSpec):
                    names.add(metric.name)
        shares = max(len(names), 1)
        return Budget(
            false_rollback=analysis.false_rollback_rate / shares,
            false_promotion=analysis.false_promotion_rate / shares,
        )

    def _measure(
        self, context: CheckContext, plan: _Plan, metric: MetricSpec, *, at: datetime, reads: _Reads
    ) -> _Record:
        readings = {"baseline": Reading(version=context.stable_version)}
        missing: list[ReferenceProblem] = []
        roles = [("candidate", context.spec.candidate)]
        if not plan.after_promotion:
            # After a promotion no baseline serves: its guardrails are absolute.
            roles.append(("baseline", context.stable_version))
        for role, version in roles:
            try:
                readings[role] = self._read(context, plan, metric, version, reads)
            except ReferenceProblem as problem:
                missing.append(problem)  # the other version's read is still asked for (see __call__)
        if missing:
            raise missing[0]
        judgement = judge(metric=metric, baseline=readings["baseline"], candidate=readings["candidate"])
        return _record(metric, judgement, readings["baseline"], readings["candidate"], at=at)

    def _look(
        self,
        context: CheckContext,
        plan: _Plan,
        metric: SequentialSpec,
        evidence: Evidence,
        *,
        at: datetime,
        reads: _Reads,
    ) -> tuple[_Record, Evidence]:
        """A sequential metric: read its counts over the segment so far, add them to its evidence,
        and judge all of it. While a read is not in, what comes back is a stand-in the caller
        discards (`reads.pending`)."""
        test = metric.test
        versions = Versions(baseline=context.stable_version, candidate=context.spec.candidate)
        roles = {"candidate": versions.candidate}
        if test.compares_baseline:
            roles["baseline"] = versions.baseline
        seconds = max((at - plan.segment_start).total_seconds(), 1.0)
        numbers: dict[str, dict[str, float]] = {"candidate": {}, "baseline": {}}
        # The segment so far: batched counts add what is new since its previous look.
        previous = next(
            (s for s in evidence.segments if (s.step, s.started_at) == (plan.segment_step, plan.segment_start)), None
        )
        since = _since(plan, previous, reads.grid)
        reading = "candidate"
        # What the test judges against (a training profile): missing, a ReferenceProblem for the
        # pass (the rollout holds); malformed, a permanent error of the metric (below).
        reference = test.read_reference(
            namespace=context.namespace,
            metric_field=plan.metric_fields[metric.name],
            read_configmap=self._read_configmap,
        )
        try:
            if reference is not None:
                evidence = replace(evidence, reference=reference())
            reading = "baseline"
            if isinstance(test, SlowRequestsTest) and evidence.threshold_basis < test.threshold_requests:
                lookback = self._read_counts(
                    context, test.queries, test.address, versions.baseline, test.lookback_seconds, reads
                )
                buckets = test.buckets(lookback)
                bound = slow_threshold(buckets, quantile=test.quantile)
                if bound is not None:
                    evidence = replace(evidence, threshold=bound, threshold_basis=max(buckets.values()))
            if isinstance(test, JudgedOnPredictionLogs):
                # Both logs since the segment began, joined: the pairs are the candidate's counts.
                # Only a mirror step sends a request to both versions; a split step has no pairs
                # to read, and the mirror step's stay in the evidence.
                reading = "candidate"
                if _is_mirror_step(context, plan.segment_step):
                    numbers["candidate"], numbers["baseline"] = self._read_pairs(
                        context, test, versions, since=plan.segment_start, reads=reads
                    )
            else:
                for reading, version in roles.items():
                    so_far = None if previous is None else getattr(previous, reading)
                    numbers[reading] = self._read_counts(
                        context, test.queries, test.address, version, seconds, reads, since=since, so_far=so_far or {}
                    )
        except _MissingReference as missing:
            raise ReferenceProblem(f"{plan.metric_fields[metric.name]}: {missing}") from missing
        except (TemporaryError, PermanentError) as error:
            permanent = isinstance(error, PermanentError)
            reason = f"{reading} {roles.get(reading, versions.baseline)}: {error}"
            judgement = Judgement(result=Result.ERROR, reason=reason, permanent=permanent)
            failed = Reading(version=roles.get(reading, versions.baseline), error=str(error), permanent=permanent)
            other = Reading(version=versions.candidate if reading == "baseline" else versions.baseline)
            baseline, candidate = (failed, other) if reading == "baseline" else (other, failed)
            return _record(metric, judgement, baseline, candidate, at=at), evidence
        segment = Segment(
            step=plan.segment_step,
            started_at=plan.segment_start,
            seconds=seconds,
            candidate=numbers["candidate"],
            baseline=numbers["baseline"],
        )
        evidence = replace(evidence.with_segment(segment), looks=evidence.looks + 1)
        look = judge_evidence(test, evidence, budget=plan.budget, versions=versions)
        judgement = replace(look.judgement, reason=f"look {evidence.looks}: {look.judgement.reason}")
        summary = {"look": evidence.looks, "verdict": judgement.result.value, **look.summary}
        evidence = replace(evidence, summary=summary)
        details = {"evidence": measured_summary(summary)}
        return _record(metric, judgement, look.baseline, look.candidate, at=at, details=details), evidence

    def _read_pairs(
        self,
        context: CheckContext,
        test: JudgedOnPredictionLogs,
        versions: Versions,
        *,
        since: datetime,
        reads: _Reads,
    ) -> tuple[dict[str, float], dict[str, float]]:
        """Both versions' prediction logs since the segment began, joined by request id (one read
        of the pool, both logs together, so the pairs are taken from one moment's logs)."""
        candidate_url = version_endpoint(context, versions.candidate)
        baseline_url = version_endpoint(context, versions.baseline)
        model, start = context.spec.model, since.timestamp()

        def job() -> tuple[dict[str, float], dict[str, float]]:
            candidate = self._prediction_logs.read(endpoint=candidate_url, model=model, since=start)
            baseline = self._prediction_logs.read(endpoint=baseline_url, model=model, since=start)
            return test.pair(candidate=candidate, baseline=baseline)

        lane = Lane(provider="prediction-log", address=urlsplit(candidate_url).netloc)
        nothing: tuple[dict[str, float], dict[str, float]] = ({}, {})
        return reads.get(("pairs", candidate_url, baseline_url, model, start), lane, job, stand_in=nothing)

    def _read_counts(
        self,
        context: CheckContext,
        queries: tuple[CountQuery, ...],
        address: str | None,
        version: str,
        seconds: float,
        reads: _Reads,
        *,
        since: datetime | None = None,
        so_far: Numbers | None = None,
    ) -> dict[str, float]:
        """Every count of a sequential metric for one version over the last `seconds`; a query
        without data leaves its key out.

        A batched query (`reads.grid`, a query of `presets.BATCHABLE`) is read from one query for
        every rollout. With `since`, it reads only the counts since then and adds them to
        `so_far`, the segment's counts at its previous look; without, it reads `seconds`."""
        variables = {**_version_variables(context, version), "window": format_window(round(seconds, 3))}
        numbers: dict[str, float] = {}
        for query in queries:
            batched = BATCHABLE.get(query.query) if reads.grid is not None else None
            if batched is not None:
                numbers.update(
                    self._read_batched(
                        query.name, batched, context.spec.model, version, address, reads,
                        seconds=seconds, since=since, so_far=so_far,
                    )
                )  # fmt: skip
                continue
            source = PrometheusSource(query=render_template(query.query, variables), address=address, at=reads.at)
            for label_value, value in self._read_numbers(
                source, by=query.by, namespace=context.namespace, reads=reads
            ).items():
                if math.isfinite(value):
                    numbers[number_key(query.name, label_value)] = value
        return numbers

    def _read_batched(
        self,
        name: str,
        counts: CounterSum,
        model: str,
        version: str,
        address: str | None,
        reads: _Reads,
        *,
        seconds: float,
        since: datetime | None,
        so_far: Numbers | None,
    ) -> dict[str, float]:
        """`counts` of one version from the batched queries of its counters (one per counter, for
        every rollout at once): over `seconds`, or since `since` added to `so_far`."""
        assert reads.moment is not None, "batched reads are taken at a grid moment"
        window = seconds if since is None else seconds_between(since, reads.moment)
        kept = {k: v for k, v in (so_far or {}).items() if k == name or k.startswith(f"{name}:")}
        if since is not None and window <= 0:
            return kept
        provider = self._providers[PrometheusSource.provider]
        assert isinstance(provider, SeriesProvider)
        labels = labels_of(counts)
        indexes: list[Index] = []
        lane = Lane(provider=PrometheusSource.provider, address=address or "")
        for counter in counts.counters:

            def job(models: frozenset[str], counter: Counter = counter) -> Index:
                query = batch_query(counter, by=counts.by, window_seconds=window, models=models)
                source = PrometheusSource(query=query, address=address, at=reads.at)
                return index_series(provider.measure_series(source=source, labels=labels), by=counts.by)

            key = ("batch", counter, counts.by, window, address, reads.at)
            indexes.append(reads.get_gathered(key, model, lane, job, stand_in={}))
        read = {
            number_key(name, key): value
            for key, value in counts_of(counts, indexes, model=model, version=version).items()
        }
        if since is None:
            return read
        return {key: kept.get(key, 0.0) + read.get(key, 0.0) for key in {*kept, *read}}

    def _read_numbers(
        self, source: PrometheusSource, *, by: str | None, namespace: str, reads: _Reads
    ) -> dict[str | None, float]:
        provider = self._providers[PrometheusSource.provider]
        if by is None:
            value = self._read_value(source, namespace=namespace, reads=reads)
            return {} if value is None else {None: value}
        if not isinstance(provider, VectorProvider):
            raise InvalidQuery(f"the {PrometheusSource.provider} provider cannot read one number per {by}")

        def job() -> dict[str | None, float]:
            return {key: value for key, value in provider.measure_by(source=source, label=by).items()}

        return reads.get(("by", source, by), _lane(source), job, stand_in={})

    def _read_value(self, source: MetricSource, *, namespace: str, reads: _Reads) -> float | None:
        """One number from `source` (rendered), through the measurement pool."""
        provider = self._providers[source.provider]

        def job() -> float | None:
            try:
                return provider.measure(source=source, namespace=namespace)
            except ReferenceProblem as error:
                # A Secret deleted since the pass checked it: not kept for the look, see _MissingReference.
                raise _MissingReference(str(error)) from error

        return reads.get(("one", source, namespace), _lane(source), job, stand_in=None)

    def _read(self, context: CheckContext, plan: _Plan, metric: MetricSpec, version: str, reads: _Reads) -> Reading:
        variables = _variables(context, plan, metric, version)
        source = metric.source
        try:
            value = self._read_value(source.rendered(variables, at=reads.at), namespace=context.namespace, reads=reads)
            samples = None
            if metric.min_samples is not None:
                samples = self._read_value(
                    PrometheusSource(
                        query=render_template(metric.min_samples.query, variables),
                        address=source.samples_address,
                        at=reads.at,
                    ),
                    namespace=context.namespace,
                    reads=reads,
                )
        except _MissingReference as missing:
            # An object the pass found (before the look) deleted since: named as the pass would.
            metric_field = plan.metric_fields[metric.name]
            references = source.references()
            problem = (
                references[0].missing(namespace=context.namespace, metric_field=metric_field)
                if references
                else f"{metric_field}: {missing}"
            )
            raise ReferenceProblem(problem) from missing
        except TemporaryError as error:
            return Reading(version=version, error=str(error))
        except PermanentError as error:
            return Reading(version=version, error=str(error), permanent=True)
        return Reading(version=version, value=value, samples=samples)


class _Reads:
    """The reads of one look, through `Measurements`. Each gives its answer when it is in (a
    provider's error is raised, as the provider raised it); one not in yet is submitted and gives
    the stand-in, and `pending` tells the caller to discard what it computed from it."""

    def __init__(self, measurements: Measurements, look: Look, *, at: datetime | None, grid: int | None) -> None:
        self._measurements = measurements
        self._look = look
        self.moment = at
        self.at = None if at is None else round(at.timestamp() * 1000) / 1000
        """When the queries are evaluated (Unix seconds): the look's moment, or None for now."""
        self.grid = grid
        """The grid period (ms) of batched looks; None: nothing batched."""
        self.pending = False

    def get(self, key: Hashable, lane: Lane, job: Callable[[], _T], *, stand_in: _T) -> _T:
        return self._answer(self._measurements.read(self._look, key=key, lane=lane, job=job), stand_in)

    def get_gathered(
        self, key: Hashable, member: str, lane: Lane, job: Callable[[frozenset[str]], _T], *, stand_in: _T
    ) -> _T:
        """A read shared with other rollouts' looks, asked for `member` among them."""
        finished = self._measurements.read_gathered(self._look, key=key, member=member, lane=lane, job=job)
        return self._answer(finished, stand_in)

    def _answer(self, finished: Finished[_T] | None, stand_in: _T) -> _T:
        if finished is None:
            self.pending = True
            return stand_in
        return finished.get()


def _lane(source: MetricSource) -> Lane:
    """The pool lane a read of `source` goes to: its provider at its address (a web URL's host)."""
    return Lane(provider=source.provider, address=source.lane_address)


def _templates_named_in(analysis: AnalysisSpec, step: StepWindow | None) -> dict[str, str]:
    """Each AnalysisTemplate a run measures, in order and once, with the field that names it."""
    named_in = dict.fromkeys(analysis.templates, "spec.analysis.templates")
    if step is not None:
        for name in step.templates:
            named_in.setdefault(name, f"spec.steps[{step.index}].analyze.templates")
    return named_in


def _check_starting_step(starting_step: int, *, step_count: int) -> None:
    """Background analysis from a step the rollout never reaches would silently never run."""
    if starting_step >= step_count:
        raise SpecError(
            "spec.analysis.startingStep",
            f"{starting_step} is beyond the last step; give a step index from 0 to {step_count - 1}",
        )


class _CalledUrl(NamedTuple):
    field_path: str
    url: str
    web: bool
    """A web metric's URL (httpx reads it), or a Prometheus address (requests reads it)."""
    preface: str = ""
    """How an error introduces a URL rendered from template variables."""


def _outbound_urls(
    context: CheckContext, plan: _Plan, metric: AnalysisMetric, metric_field: str, versions: Mapping[str, None]
) -> Iterator[_CalledUrl]:
    """Each URL the spec gives that the metric calls: its web `url`, rendered as the run renders
    it for each version measured, or its own Prometheus `address`. Nothing for a metric reading
    the controller's `--prometheus-address`, which the operator sets and the fence does not check."""
    if isinstance(metric, SequentialSpec):
        test = metric.test
        if test.address is not None:
            yield _CalledUrl(field_path=f"{metric_field}.{test.address_field}", url=test.address, web=False)
        if isinstance(test, JudgedOnPredictionLogs):
            yield from _prediction_log_urls(context, metric_field=metric_field, check=test.address_field)
        return
    variables_by_version = {version: _variables(context, plan, metric, version) for version in versions}
    for called in metric.source.outbound_urls(variables_by_version=variables_by_version):
        yield _CalledUrl(
            field_path=f"{metric_field}.{called.field}",
            url=called.url,
            web=called.parsed_by_httpx,
            preface="" if called.rendered_for is None else f"as rendered for version {called.rendered_for}, ",
        )


def _is_mirror_step(context: CheckContext, index: int) -> bool:
    steps = context.spec.steps
    return 0 <= index < len(steps) and isinstance(steps[index], MirrorStep)


def version_endpoint(context: CheckContext, version: str) -> str:
    """The version's model server (`spec.versions[].endpoint`), whose prediction log a paired check
    reads; a SpecError naming the field when it has none (validate raises it before any traffic)."""
    for index, entry in enumerate(context.spec.versions):
        if entry.version == version:
            if not entry.endpoint:
                raise SpecError(
                    f"spec.versions[{index}].endpoint",
                    f"is required for version {version}: a paired check reads its prediction log from its model "
                    "server; give the server's base URL, e.g. http://iris-v2.models.svc:8080",
                )
            return entry.endpoint
    raise SpecError("spec.versions", f"version {version} is not listed; a paired check reads its model server")


def _prediction_log_urls(context: CheckContext, *, metric_field: str, check: str) -> Iterator[_CalledUrl]:
    """The model servers a paired check reads, which must exist and be reachable; and the mirror
    step it needs, without which no request reaches both versions and the check could only hold."""
    if not any(isinstance(step, MirrorStep) for step in context.spec.steps):
        raise SpecError(
            f"{metric_field}.{check}",
            "compares the versions' answers to the same requests, which only a mirror step gives both; "
            "add a mirror step (e.g. setWeight: 0, then mirror: {duration: 10m}) or drop this metric",
        )
    for version in dict.fromkeys((context.spec.candidate, context.stable_version)):
        url = version_endpoint(context, version)
        index = next(i for i, entry in enumerate(context.spec.versions) if entry.version == version)
        yield _CalledUrl(field_path=f"spec.versions[{index}].endpoint", url=url, web=True)


def _outbound_problem(policy: OutboundPolicy, url: str, *, web: bool) -> str | None:
    """What is wrong with `url` by the fence's host-level rules (no name is resolved), with the
    fix; None when they let it through. The host is read as the provider's HTTP library reads it
    (httpx for web metrics, requests for Prometheus), and the URL is never quoted (it may hold
    credentials)."""
    try:
        host = httpx.URL(url).raw_host.decode("ascii") if web else urlsplit(url).hostname or ""
    except (httpx.InvalidURL, ValueError) as error:  # UnicodeDecodeError is a ValueError
        return f"the URL cannot be parsed ({error}); write a URL with a valid host"
    refusal = policy.refusal_for_host(host)
    if refusal is None:
        return None
    if policy.allowed_hosts:
        fix = f"the operator's --allowed-hosts lists {', '.join(policy.allowed_hosts)}"
    else:
        fix = "any host but a link-local or cloud metadata address will do (--allowed-hosts is not set)"
    return (
        f"{OutboundRefused(host, refusal)}, so the metric could never be measured; use an address the controller "
        f"may call; {fix} (docs/operations.md#outbound-requests-are-fenced)"
    )


def _extension_end(context: CheckContext, analysis: AnalysisSpec, step: StepWindow) -> datetime | None:
    """With evidenceOfSafety: how long the step may wait for it; checked against the deadline."""
    if analysis.promote_when != PromoteWhen.EVIDENCE_OF_SAFETY:
        return None
    longest = analysis.max_duration_seconds or 3 * step.seconds
    if longest < step.seconds:
        raise SpecError(
            "spec.analysis.maxDuration",
            f"{longest:g}s is shorter than analyze step {step.index} ({step.seconds:g}s); give at least that",
        )
    deadline = context.spec.progress_deadline_seconds
    if longest - step.seconds >= deadline:
        raise SpecError(
            "spec.analysis.maxDuration",
            f"lets analyze step {step.index} run {longest - step.seconds:g}s past its duration, as long as "
            f"spec.progressDeadlineSeconds ({deadline:g}s) or longer, so the deadline would fail the rollout first; "
            "raise progressDeadlineSeconds or lower maxDuration",
        )
    return step.started_at + timedelta(seconds=longest)


def _variables(context: CheckContext, plan: _Plan, metric: AnalysisMetric, version: str) -> dict[str, str]:
    """What `{{...}}` stands for in the queries measuring `version`."""
    return {
        **_version_variables(context, version),
        "window": format_window(metric.window(plan.analysis.interval_seconds)),
    }


def _version_variables(context: CheckContext, version: str) -> dict[str, str]:
    """What `{{...}}` stands for in any query about `version`, but `{{window}}`. `{{service}}` and
    `{{port}}` (its backend: the gateway presets find the version's cluster by them) only for a
    version the route sends to a Service; the service escaped for a PromQL string, as the presets
    quote it (a DNS label, so this changes nothing in a valid spec)."""
    variables = {"model": context.spec.model, "version": version, "namespace": context.namespace}
    entry = context.spec.find_version(version)
    backend = None if entry is None else entry.backend
    if backend is not None:
        variables.update(service=promql_string(backend.service), port=str(backend.port))
    return variables


def _check_renders(context: CheckContext, metrics: Mapping[str, AnalysisMetric]) -> None:
    """Every query and URL of `metrics` (keyed by the field configuring each) renders for each
    version measured. What can be missing is a version's `{{service}}` or `{{port}}`: a router
    whose versions are not Services (KServe's revisions) has none, and a gateway preset could only
    find no series and hold until the deadline. Checked as the run is planned, so while Pending
    before any traffic moves."""
    for version in dict.fromkeys((context.spec.candidate, context.stable_version)):
        variables = {**_version_variables(context, version), "window": "1s"}
        for field_path, metric in metrics.items():
            try:
                if isinstance(metric, SequentialSpec):
                    for query in metric.test.queries:
                        render_template(query.query, variables)
                else:
                    metric.source.rendered(variables)
                    if metric.min_samples is not None:
                        render_template(metric.min_samples.query, variables)
            except KeyError as missing:
                router = context.spec.traffic_routing.router
                raise SpecError(
                    field_path,
                    f"reads {{{{{missing.args[0]}}}}}, the Service of the version measured (spec.versions[].backend), "
                    f"but version {version} has none: trafficRouting.{router} routes to what it names itself; "
                    "measure it with a preset over the model-metrics convention (error-rate, latency-p99) or "
                    "your own counts",
                ) from None


def _record(
    metric: AnalysisMetric,
    judgement: Judgement,
    baseline: Reading,
    candidate: Reading,
    *,
    at: datetime,
    details: Mapping[str, Any] | None = None,
) -> _Record:
    """The measurement as status keeps it, taken at `at`."""
    return _Record(
        metric=metric.name,
        baseline=baseline,
        candidate=candidate,
        judgement=judgement,
        time=at,
        details=details or {},
    )


@dataclass(frozen=True, kw_only=True)
class _Record:
    metric: str
    baseline: Reading
    candidate: Reading
    judgement: Judgement
    time: datetime
    details: Mapping[str, Any] = field(default_factory=dict)
    """Extra fields of a model-aware check (`drift`, `slices`, `offline`)."""

    def export(self, context: CheckContext) -> None:
        """The measured values on the controller's /metrics."""
        for reading in (self.baseline, self.candidate):
            if reading.value is not None and math.isfinite(reading.value):
                series = (self.metric, reading.version)
                MEASUREMENT_VALUE.set(reading.value, namespace=context.namespace, rollout=context.name, labels=series)

    def to_json(self, *, run: str) -> JSON:
        body: JSON = {
            "run": run,
            "metric": self.metric,
            "baselineVersion": self.baseline.version,
            "baselineValue": _json_number(self.baseline.value),
            "candidateVersion": self.candidate.version,
            "candidateValue": _json_number(self.candidate.value),
            "verdict": self.judgement.result.value,
            "time": format_time(self.time),
            "reason": self.judgement.reason,
        }
        for role, reading in (("baseline", self.baseline), ("candidate", self.candidate)):
            if reading.samples is not None:
                body[f"{role}Samples"] = _json_number(reading.samples)
        body.update(self.details)
        return body


@dataclass(frozen=True, kw_only=True)
class _Stored:
    """status.analysis as the last pass left it, for the candidate in progress."""

    runs: tuple[Run, ...] = ()
    measurements: tuple[JSON, ...] = field(default_factory=tuple)
    evidence: Mapping[str, Evidence] = field(default_factory=dict)

    @staticmethod
    def of(context: CheckContext, raw: Mapping[str, Any]) -> _Stored:
        # Measurements of an earlier candidate say nothing about this one.
        if raw.get("candidateHash") != context.spec.candidate_hash():
            return _Stored()
        runs = (Run.from_json(r) for r in raw.get("runs", []))
        return _Stored(
            runs=tuple(run for run in runs if run is not None),
            measurements=tuple(raw.get("measurements", [])),
            evidence=evidence_by_metric(raw.get("evidence") or []),
        )

    def run(self, name: str) -> Run | None:
        return next((r for r in self.runs if r.name == name), None)


def _analysis_status(context: CheckContext) -> Mapping[str, Any]:
    """status.analysis as the last pass left it."""
    raw = context.status.extra.get(STATUS_FIELD)
    return raw if isinstance(raw, Mapping) else {}


def _looked_at_window_end(plan: _Plan, run: Run) -> bool:
    return plan.window_end is not None and run.last_measured_at is not None and run.last_measured_at >= plan.window_end


def _next_look(run: Run, plan: _Plan, interval: timedelta) -> datetime:
    """One interval after the last look, and at least one interval into the segment: counts over
    a shorter range would hold too few scrapes to say anything (background analysis looks across
    step changes). An analyze step's last look is at its window's end, so that its last interval
    counts too."""
    due = max(run.last_measured_at or run.started_at, plan.segment_start) + interval
    if plan.window_end is not None and not _looked_at_window_end(plan, run):
        due = min(due, plan.window_end)
    return due


def _next_due(run: Run, plan: _Plan, interval: timedelta, grid: int | None) -> datetime:
    """When the next look is due: `_next_look`, on the grid when looks are batched."""
    due = _next_look(run, plan, interval)
    return due if grid is None else tick_at_or_after(due, grid)


def _since(plan: _Plan, previous: Segment | None, grid: int | None) -> datetime | None:
    """Where a batched look's counts begin: the segment's previous look, or for its first look the
    first grid moment at or after the segment began. None without batching."""
    if grid is None:
        return None
    if previous is None:
        return tick_at_or_after(plan.segment_start, grid)
    return previous.started_at + timedelta(seconds=previous.seconds)


def _requeue_after(now: datetime, due: datetime, plan: _Plan, states: list[MetricState]) -> float | None:
    """Seconds until the next measurement is due (`due`, which an analyze step's window end bounds)
    or the step's extension ends, whichever is first."""
    if all(state.complete for state in states):
        return None
    moments = [due]
    if plan.extension_end is not None and plan.extension_end > now:
        moments.append(plan.extension_end)
    return max(0.0, (min(moments) - now).total_seconds())
