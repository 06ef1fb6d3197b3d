"""The OIP edge: readiness with retries, refusals vs unavailability, metadata errors, the outbound fence."""

from __future__ import annotations

import httpx
import pytest

from controller.errors import PermanentError, TemporaryError
from controller.gates.errors import EndpointRefused, GateInputError
from controller.gates.oip import OipClient, OipUnavailable, wait_until_ready
from controller.outbound import OutboundPolicy


def client(handler: httpx.MockTransport) -> OipClient:
    return OipClient(base_url="http://model.test:8080/", timeout_seconds=1.0, transport=handler)


def test_readiness_is_retried_until_the_model_is_ready() -> None:
    # given a server whose model becomes ready on the third probe
    probes: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        probes.append(request.url.path)
        model_probes = probes.count("/v2/models/iris/ready")
        if request.url.path == "/v2/models/iris/ready":
            return httpx.Response(200, json={"ready": model_probes >= 3})
        return httpx.Response(200, json={"ready": True})

    pauses: list[float] = []
    with client(httpx.MockTransport(handle)) as oip:
        assert wait_until_ready(oip, model="iris", attempts=5, interval_seconds=0.5, sleep=pauses.append)
    assert pauses == [0.5, 0.5]


def test_readiness_gives_up_after_the_attempts_when_unreachable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    pauses: list[float] = []
    with client(httpx.MockTransport(refuse)) as oip:
        assert not wait_until_ready(oip, model="iris", attempts=3, interval_seconds=1.0, sleep=pauses.append)
    assert pauses == [1.0, 1.0]


def test_a_ready_server_without_the_model_is_not_ready() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404 if "models" in request.url.path else 200)

    with client(httpx.MockTransport(handle)) as oip:
        assert not oip.is_ready(model="iris")


def test_an_infer_refusal_is_an_answer_but_a_503_is_unavailability() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/models/busy/infer":
            return httpx.Response(503)
        return httpx.Response(400, text="input features: expected 4 values")

    with client(httpx.MockTransport(handle)) as oip:
        refused = oip.infer(model="iris", body={"inputs": []})
        assert refused.outputs is None
        assert refused.error == "HTTP 400 Bad Request"  # the status, never the body
        with pytest.raises(OipUnavailable, match="HTTP 503"):
            oip.infer(model="busy", body={"inputs": []})


def test_an_unreadable_infer_answer_is_reported_as_such() -> None:
    with client(httpx.MockTransport(lambda request: httpx.Response(200, text="<html>"))) as oip:
        answer = oip.infer(model="iris", body={"inputs": []})
    assert answer.outputs is None
    assert answer.error is not None and answer.error.startswith("unreadable answer")


def test_a_missing_model_names_the_metadata_url() -> None:
    missing = httpx.MockTransport(lambda request: httpx.Response(404, text="no such model"))
    with client(missing) as oip, pytest.raises(GateInputError) as raised:
        oip.metadata(model="iris")
    assert raised.value.where == "metadata at http://model.test:8080/v2/models/iris"
    assert raised.value.problem == "HTTP 404 Not Found"


def test_an_answer_s_body_is_never_quoted() -> None:
    secret = '{"AccessKeyId": "AKIAIOSFODNN7EXAMPLE"}'
    leaking = httpx.MockTransport(lambda request: httpx.Response(403, text=secret))
    with client(leaking) as oip, pytest.raises(GateInputError) as raised:
        oip.metadata(model="iris")
    assert "AKIA" not in str(raised.value)
    with client(leaking) as oip:
        assert "AKIA" not in str(oip.infer(model="iris", body={"inputs": []}).error)


def test_a_refused_endpoint_is_refused_at_once_not_waited_for() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ready": True})

    pauses: list[float] = []
    for base_url, policy in (
        ("http://169.254.169.254/", OutboundPolicy()),
        ("http://model.test:8080", OutboundPolicy(allowed_hosts=("*.models.svc",))),
    ):
        oip = OipClient(base_url=base_url, timeout_seconds=1.0, outbound=policy, transport=httpx.MockTransport(handle))
        with oip, pytest.raises(EndpointRefused, match="are refused"):
            wait_until_ready(oip, model="iris", attempts=3, interval_seconds=1.0, sleep=pauses.append)
    assert seen == [] and pauses == []


def test_a_malformed_answer_is_quoted_only_briefly() -> None:
    document = {"outputs": [{"name": "label", "shape": "s3cr3t" * 100}]}
    with client(httpx.MockTransport(lambda request: httpx.Response(200, json=document))) as oip:
        answer = oip.infer(model="iris", body={"inputs": []})
    assert answer.error is not None and "is not a list of sizes" in answer.error
    assert answer.error.count("s3cr3t") <= 6 and len(answer.error) < 150


def test_what_the_gates_raise_carries_its_retry_meaning() -> None:
    # given the errors of the gates, then each is in the tree of controller.errors
    assert issubclass(OipUnavailable, TemporaryError), "a server that did not answer now: wait"
    assert issubclass(GateInputError, PermanentError), "an input that cannot be used: fail"
    assert issubclass(EndpointRefused, PermanentError), "a refused endpoint: fail"
    # and a spec parser's backstop may still raise GateInputError as the ValueError it expects
    assert issubclass(GateInputError, ValueError)
