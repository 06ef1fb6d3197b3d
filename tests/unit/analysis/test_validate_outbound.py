"""`AnalysisChecker.validate` applies the outbound fence's host-level rules (the allow list and
literal addresses; no DNS) to every URL a planned metric would call, so a refused URL is a spec
mistake found while Pending, before any traffic moves, not an error at the first measurement."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pytest

from controller.analysis.checker import AnalysisChecker
from controller.api import SpecError
from controller.outbound import DEFAULT_POLICY, OutboundPolicy
from tests.unit.analysis.test_validate import ERRORS, NeverAsked, pending

WEB = {"name": "drift", "provider": {"web": {"url": "http://drift.ml.svc/score", "jsonPath": "$.v"}}}
ALLOW_LIST = OutboundPolicy(allowed_hosts=("*.ml.svc", "prometheus.monitoring.svc"))


def validator(
    templates: Mapping[str, Any] | None = None, *, outbound: OutboundPolicy = DEFAULT_POLICY
) -> AnalysisChecker:
    """A checker that fails the test if validation measures anything (no server is called)."""

    def lookup(*, namespace: str, name: str) -> Mapping[str, Any] | None:
        return (templates or {}).get(name)

    return AnalysisChecker(
        providers={"prometheus": NeverAsked(), "web": NeverAsked()}, template_lookup=lookup, outbound=outbound
    )


def web_metric(url: str) -> dict[str, Any]:
    return {**WEB, "provider": {"web": {"url": url, "jsonPath": "$.v"}}, "comparison": {"max": 1}}


def with_address(address: str) -> dict[str, Any]:
    return {**ERRORS, "provider": {"prometheus": {"query": "err{{version}}", "address": address}}}


REFUSED = {
    "a web url at the metadata address": (
        DEFAULT_POLICY,
        {"metrics": [web_metric("http://169.254.169.254/latest/meta-data/iam")]},
        "spec.analysis.metrics[0].provider.web.url",
        "requests to 169.254.169.254 are refused: it is a cloud metadata address",
    ),
    "a prometheus address at AWS's IPv6 metadata address": (
        DEFAULT_POLICY,
        {"metrics": [with_address("http://[fd00:ec2::254]:9090")]},
        "spec.analysis.metrics[0].provider.prometheus.address",
        "requests to fd00:ec2::254 are refused: it is a cloud metadata address",
    ),
    "a link-local address of a preset's counts": (
        DEFAULT_POLICY,
        {
            "metrics": [
                ERRORS,
                {"name": "e", "preset": "error-rate", "provider": {"prometheus": {"address": "http://169.254.1.1"}}},
            ]
        },
        "spec.analysis.metrics[1].provider.prometheus.address",
        "it is a link-local address",
    ),
    "a model-aware check's address": (
        DEFAULT_POLICY,
        {"metrics": [{"name": "drift", "predictionDrift": {"address": "http://[::ffff:169.254.169.254]:9090"}}]},
        "spec.analysis.metrics[0].predictionDrift.address",
        "a cloud metadata address",
    ),
    "a web url outside --allowed-hosts": (
        ALLOW_LIST,
        {"metrics": [web_metric("https://example.com/score")]},
        "spec.analysis.metrics[0].provider.web.url",
        "requests to example.com are refused: it is not among the controller's allowed hosts",
    ),
    "a prometheus address outside --allowed-hosts": (
        ALLOW_LIST,
        {"metrics": [with_address("http://prometheus.other.svc:9090")]},
        "spec.analysis.metrics[0].provider.prometheus.address",
        "not among the controller's allowed hosts",
    ),
    "a refused url in a template": (
        DEFAULT_POLICY,
        {"templates": [{"name": "scores"}]},
        "AnalysisTemplate scores: spec.metrics[1].provider.web.url",
        "a cloud metadata address",
    ),
}


@pytest.mark.parametrize(("outbound", "analysis", "field", "why"), REFUSED.values(), ids=REFUSED.keys())
def test_a_url_the_fence_refuses_is_a_spec_mistake_found_before_any_traffic(
    outbound: OutboundPolicy, analysis: dict[str, Any], field: str, why: str
) -> None:
    # given a Pending rollout whose analyze step would call a URL the fence refuses
    context = pending(analysis)
    templates = {"scores": {"metrics": [ERRORS, web_metric("http://169.254.169.254/{{model}}")]}}

    # when it is validated
    with pytest.raises(SpecError) as raised:
        validator(templates, outbound=outbound).validate(context=context)

    # then the error names the field, why, and the fix, without asking any server
    assert raised.value.field_path == field
    assert why in str(raised.value)
    assert "use an address the controller may call" in str(raised.value)


def test_the_fix_lists_the_allowed_hosts() -> None:
    # given an operator allow list and a web metric calling a host outside it
    context = pending({"metrics": [web_metric("http://metrics.example.com/v")]})

    # when it is validated, then the message says which hosts the controller may call
    with pytest.raises(SpecError, match=r"--allowed-hosts lists \*\.ml\.svc, prometheus\.monitoring\.svc"):
        validator(outbound=ALLOW_LIST).validate(context=context)


def test_a_refused_url_in_background_analysis_is_found_before_any_traffic() -> None:
    # given background analysis from step 0 (no analyze step) with a metric at the metadata address
    steps = [{"setWeight": 20}, {"pause": {"duration": "1m"}}]
    context = pending({"metrics": [with_address("http://169.254.169.254")], "startingStep": 0}, steps=steps)

    # when it is validated, then the address is named
    with pytest.raises(SpecError) as raised:
        validator().validate(context=context)
    assert raised.value.field_path == "spec.analysis.metrics[0].provider.prometheus.address"


@pytest.mark.parametrize(
    ("outbound", "url", "address"),
    [
        (DEFAULT_POLICY, "http://127.0.0.1:8080/score", "http://[::1]:9090"),
        (DEFAULT_POLICY, "http://drift.ml.svc/score?v={{version}}", "http://10.0.0.5:9090"),
        (ALLOW_LIST, "https://drift.ml.svc/{{model}}/{{version}}", "http://prometheus.monitoring.svc:9090"),
        (ALLOW_LIST, "http://iris-{{version}}.ml.svc/score", "http://Prometheus.Monitoring.svc.:9090"),
    ],
    ids=["loopback", "a service name and a private address", "allowed hosts", "allowed after rendering"],
)
def test_urls_the_fence_lets_through_pass(outbound: OutboundPolicy, url: str, address: str) -> None:
    # given web and Prometheus metrics at hosts the fence allows
    context = pending({"metrics": [web_metric(url), with_address(address)]})

    # when it is validated, then nothing is raised and nothing measured (NeverAsked would fail)
    validator(outbound=outbound).validate(context=context)


def test_the_controllers_own_prometheus_is_not_fenced() -> None:
    # given an allow list without the controller's Prometheus, and a metric naming no address
    context = pending({"metrics": [ERRORS]})

    # when it is validated, then it passes: the operator's --prometheus-address is not checked
    validator(outbound=OutboundPolicy(allowed_hosts=("drift.ml.svc",))).validate(context=context)


def test_a_url_with_variables_in_its_host_is_checked_as_rendered_for_each_version() -> None:
    # given an allow list naming the baseline's host only, and a URL whose host is per version
    outbound = OutboundPolicy(allowed_hosts=("v1.ml.svc",))
    context = pending({"metrics": [web_metric("http://{{version}}.ml.svc/score")]})

    # when it is validated
    with pytest.raises(SpecError) as raised:
        validator(outbound=outbound).validate(context=context)

    # then the host as rendered for the candidate is refused, and the message says it was rendered
    assert raised.value.field_path == "spec.analysis.metrics[0].provider.web.url"
    assert "as rendered for version v2, requests to v2.ml.svc are refused" in str(raised.value)


def test_a_host_allowed_once_rendered_passes() -> None:
    # given an allow list naming the rendered host, not the template ("metrics.{{namespace}}.svc")
    outbound = OutboundPolicy(allowed_hosts=("metrics.ml.svc",))
    context = pending({"metrics": [web_metric("http://metrics.{{namespace}}.svc/{{model}}/{{version}}")]})

    # when it is validated, then nothing is raised
    validator(outbound=outbound).validate(context=context)


def test_a_variable_rendering_into_the_metadata_address_is_refused() -> None:
    # given a model named like an address, and a URL whose host is {{model}}
    context = pending({"metrics": [web_metric("http://{{model}}/score")]}, model="169.254.169.254")

    # when it is validated, then the rendered host is what the fence judges
    with pytest.raises(SpecError, match=re.escape("requests to 169.254.169.254 are refused")) as raised:
        validator().validate(context=context)
    assert raised.value.field_path == "spec.analysis.metrics[0].provider.web.url"


def test_names_are_not_resolved_while_pending() -> None:
    # given a name that could resolve anywhere (resolution is checked at request time, pinned)
    context = pending({"metrics": [web_metric("http://metadata.google.internal/computeMetadata/v1")]})

    # when it is validated, then the host-level rules let it through: no DNS lookup is made here
    validator().validate(context=context)


def test_an_address_no_http_library_can_parse_is_named() -> None:
    # given a Prometheus address whose IPv6 host lacks its closing bracket
    context = pending({"metrics": [with_address("http://[fd00:ec2::254:9090")]})

    # when it is validated, then the field is named rather than failing at the first measurement
    with pytest.raises(SpecError, match="the URL cannot be parsed") as raised:
        validator().validate(context=context)
    assert raised.value.field_path == "spec.analysis.metrics[0].provider.prometheus.address"
