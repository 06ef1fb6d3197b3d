"""The outbound fence: the pure policy, the httpx transports (over httpx.MockTransport, and once over
a real loopback socket) and the requests session Prometheus queries use.

Nothing here connects anywhere but 127.0.0.1: refused addresses are refused before any connection,
and names are resolved by stand-in resolvers.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import requests

from controller.analysis.providers import InvalidQuery
from controller.analysis.providers.prometheus import PrometheusProvider
from controller.analysis.spec import PrometheusSource
from controller.outbound import (
    DEFAULT_POLICY,
    OutboundPolicy,
    OutboundRefused,
    PinnedTransport,
    Resolver,
    checked_address,
    fenced_session,
    fenced_transport,
    parse_allowed_hosts,
)


def resolver(table: dict[str, Sequence[str]], asked: list[str] | None = None) -> Resolver:
    def resolve(host: str, port: int) -> Sequence[str]:
        if asked is not None:
            asked.append(host)
        if host not in table:
            raise OSError(f"[Errno -2] Name or service not known: {host}")
        return table[host]

    return resolve


def no_dns(host: str, port: int) -> Sequence[str]:
    raise AssertionError(f"resolved {host}, which the policy should have settled without DNS")


# ---------------------------------------------------------------------------------------------
# The policy (pure)


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("169.254.169.254", "it is a cloud metadata address (169.254.169.254/32)"),
        ("fd00:ec2::254", "it is a cloud metadata address (fd00:ec2::254/128)"),
        ("[fd00:ec2::254]", "it is a cloud metadata address (fd00:ec2::254/128)"),
        ("100.100.100.200", "it is a cloud metadata address (100.100.100.200/32)"),
        ("169.254.10.1", "it is a link-local address (169.254.0.0/16)"),
        ("fe80::1", "it is a link-local address (fe80::/10)"),
        ("::ffff:169.254.169.254", "it is a cloud metadata address (169.254.169.254/32)"),
        ("64:ff9b::a9fe:a9fe", "it is a cloud metadata address (169.254.169.254/32)"),
    ],
)
def test_link_local_and_metadata_addresses_are_refused_by_default(host: str, why: str) -> None:
    assert DEFAULT_POLICY.refusal_for_host(host) == why


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.8.9.10", "::1", "localhost", "10.0.0.5", "iris-v2.models.svc", "example.com"]
)
def test_loopback_private_addresses_and_names_pass_by_default(host: str) -> None:
    assert DEFAULT_POLICY.refusal_for_host(host) is None


def test_an_allow_list_admits_exact_names_suffixes_and_addresses_only() -> None:
    policy = OutboundPolicy(allowed_hosts=("prometheus.monitoring.svc", "*.models.svc", "127.0.0.1", "[::1]"))
    for host in ("prometheus.monitoring.svc", "PROMETHEUS.monitoring.svc.", "iris-v2.models.svc", "a.b.models.svc"):
        assert policy.refusal_for_host(host) is None, host
    assert policy.refusal_for_host("127.0.0.1") is None
    assert policy.refusal_for_host("::1") is None
    for host in ("models.svc", "evil-models.svc", "prometheus.monitoring", "127.0.0.2", "example.com"):
        assert policy.refusal_for_host(host) == "it is not among the controller's allowed hosts (--allowed-hosts)"


def test_an_allowed_host_is_still_refused_in_a_refused_network() -> None:
    policy = OutboundPolicy(allowed_hosts=("169.254.169.254", "metadata.internal"))
    assert "cloud metadata address" in (policy.refusal_for_host("169.254.169.254") or "")
    with pytest.raises(OutboundRefused, match=r"resolves to 169\.254\.169\.254, a cloud metadata address"):
        checked_address(policy, "metadata.internal", 80, resolver({"metadata.internal": ["169.254.169.254"]}))


@pytest.mark.parametrize("entry", ["http://a.svc", "a.svc:8080", "a.svc/path", "*", "*.", "a..svc", "user@a.svc"])
def test_an_allowed_host_must_be_a_host_only(entry: str) -> None:
    with pytest.raises(ValueError, match="not a host name"):
        OutboundPolicy(allowed_hosts=(entry,))


def test_the_flag_is_comma_separated_and_may_be_empty() -> None:
    assert parse_allowed_hosts(" a.svc, *.models.svc ,,10.0.0.1 ") == ("a.svc", "*.models.svc", "10.0.0.1")
    assert parse_allowed_hosts("") == ()


def test_a_name_is_refused_when_any_address_it_resolves_to_is_refused() -> None:
    resolve = resolver({"mixed.test": ["127.0.0.1", "169.254.169.254"], "good.test": ["127.0.0.1", "::1"]})
    with pytest.raises(OutboundRefused) as refused:
        checked_address(DEFAULT_POLICY, "mixed.test", 80, resolve)
    assert str(refused.value) == (
        "requests to mixed.test are refused: it resolves to 169.254.169.254, "
        "a cloud metadata address (169.254.169.254/32)"
    )
    assert checked_address(DEFAULT_POLICY, "good.test", 80, resolve) == "127.0.0.1"


def test_names_the_allow_list_refuses_and_addresses_are_never_resolved() -> None:
    policy = OutboundPolicy(allowed_hosts=("a.svc",))
    with pytest.raises(OutboundRefused, match="allowed hosts"):
        checked_address(policy, "b.svc", 80, no_dns)
    with pytest.raises(OutboundRefused, match="cloud metadata"):
        checked_address(DEFAULT_POLICY, "169.254.169.254", 80, no_dns)
    assert checked_address(DEFAULT_POLICY, "127.0.0.1", 80, no_dns) == "127.0.0.1"


def test_numeric_spellings_of_the_metadata_address_are_caught_by_resolving_them() -> None:
    # 2852039166 and 0xa9fea9fe are names to a URL parser but 169.254.169.254 to the C resolver
    resolve = resolver({"2852039166": ["169.254.169.254"], "169.254.169.254.": ["169.254.169.254"]})
    for host in ("2852039166", "169.254.169.254."):
        with pytest.raises(OutboundRefused, match="cloud metadata"):
            checked_address(DEFAULT_POLICY, host, 80, resolve)


# ---------------------------------------------------------------------------------------------
# httpx: FencedTransport (by name) over PinnedTransport (resolved, pinned), with MockTransport


class Recorder:
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(200, json={"ok": True})


def test_the_fenced_transport_refuses_before_the_inner_transport_sees_anything() -> None:
    seen = Recorder()
    policy = OutboundPolicy(allowed_hosts=("allowed.test", "169.254.169.254"))
    with httpx.Client(transport=fenced_transport(policy, transport=httpx.MockTransport(seen))) as client:
        assert client.get("http://allowed.test/x").status_code == 200
        with pytest.raises(OutboundRefused, match=r"other\.test are refused: it is not among"):
            client.get("http://other.test/x")
        with pytest.raises(OutboundRefused, match="cloud metadata"):
            client.get("http://169.254.169.254/latest/meta-data/")
        with pytest.raises(OutboundRefused, match="fe80::1 are refused"):
            client.get("http://[fe80::1]:8080/")
    assert [str(r.url) for r in seen.requests] == ["http://allowed.test/x"]


def test_a_refusal_is_no_network_error_so_nobody_retries_it() -> None:
    assert not issubclass(OutboundRefused, httpx.HTTPError | requests.RequestException)


def test_the_pinned_transport_sends_to_the_checked_address_keeping_the_name() -> None:
    seen = Recorder()
    pinned = PinnedTransport(
        policy=DEFAULT_POLICY, resolve=resolver({"model.test": ["127.0.0.7"]}), inner=httpx.MockTransport(seen)
    )
    with httpx.Client(transport=pinned) as client:
        client.post("https://model.test:8443/v2/models/iris/infer?x=1", json={"inputs": []})
    (request,) = seen.requests
    assert str(request.url) == "https://127.0.0.7:8443/v2/models/iris/infer?x=1"
    assert request.headers["host"] == "model.test:8443"
    assert request.extensions["sni_hostname"] == "model.test"
    assert request.read() == b'{"inputs":[]}'


def test_the_pinned_transport_refuses_a_name_resolving_to_metadata_without_a_request() -> None:
    seen, asked = Recorder(), list[str]()
    pinned = PinnedTransport(
        policy=DEFAULT_POLICY,
        resolve=resolver({"rebound.test": ["169.254.169.254"]}, asked),
        inner=httpx.MockTransport(seen),
    )
    with (
        httpx.Client(transport=pinned) as client,
        pytest.raises(OutboundRefused, match=r"resolves to 169\.254\.169\.254"),
    ):
        client.get("http://rebound.test/latest/meta-data/iam/")
    assert asked == ["rebound.test"] and seen.requests == []


def test_each_request_is_resolved_once_and_sent_where_that_resolution_was_checked() -> None:
    # given a name that answers a harmless address, then the metadata address (DNS rebinding)
    answers = iter([["127.0.0.1"], ["169.254.169.254"]])
    asked: list[str] = []

    def rebinding(host: str, port: int) -> Sequence[str]:
        asked.append(host)
        return next(answers)

    seen = Recorder()
    pinned = PinnedTransport(policy=DEFAULT_POLICY, resolve=rebinding, inner=httpx.MockTransport(seen))
    with httpx.Client(transport=pinned) as client:
        client.get("http://rebinding.test/")
        with pytest.raises(OutboundRefused, match="cloud metadata"):
            client.get("http://rebinding.test/")
    assert asked == ["rebinding.test", "rebinding.test"]
    assert [r.url.host for r in seen.requests] == ["127.0.0.1"]


def test_a_name_that_does_not_resolve_is_a_connect_error_like_any_other() -> None:
    pinned = PinnedTransport(policy=DEFAULT_POLICY, resolve=resolver({}), inner=httpx.MockTransport(Recorder()))
    with httpx.Client(transport=pinned) as client, pytest.raises(httpx.ConnectError, match="cannot resolve nowhere"):
        client.get("http://nowhere.test/")


def test_an_address_in_the_url_is_sent_as_is() -> None:
    seen = Recorder()
    pinned = PinnedTransport(policy=DEFAULT_POLICY, resolve=no_dns, inner=httpx.MockTransport(seen))
    with httpx.Client(transport=pinned) as client:
        client.get("http://[::1]:9/x")
    assert str(seen.requests[0].url) == "http://[::1]:9/x"


# ---------------------------------------------------------------------------------------------
# Real sockets, loopback only


PROMETHEUS_ERROR = '{"status": "error", "errorType": "bad_data", "error": "1:5: parse error: unexpected <EOF>"}'


class Loopback(BaseHTTPRequestHandler):
    """Answers /redirect with a redirect to the metadata service, anything else with its Host header."""

    def do_GET(self) -> None:
        if self.path.startswith(("/leak/", "/prometheus-error/")):
            leak = self.path.startswith("/leak/")
            body = '{"secret": "AKIAIOSFODNN7EXAMPLE"}' if leak else PROMETHEUS_ERROR
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())
            return
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = f'{{"status": "success", "data": {{"resultType": "scalar", "result": [1, "{self.headers["Host"]}"]}}}}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def loopback() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Loopback)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_pinned_name_reaches_the_real_server_at_the_checked_address(loopback: int) -> None:
    pinned = PinnedTransport(policy=DEFAULT_POLICY, resolve=resolver({"model.test": ["127.0.0.1"]}))
    with httpx.Client(transport=fenced_transport(DEFAULT_POLICY, transport=pinned)) as client:
        answer = client.get(f"http://model.test:{loopback}/x")
    assert answer.json()["data"]["result"][1] == f"model.test:{loopback}"


def test_the_session_pins_a_name_and_sends_its_host_header(loopback: int) -> None:
    with fenced_session(DEFAULT_POLICY, resolve=resolver({"prometheus.test": ["127.0.0.1"]})) as session:
        answer = session.get(f"http://prometheus.test:{loopback}/api/v1/query", timeout=5)
    assert answer.json()["data"]["result"][1] == f"prometheus.test:{loopback}"


def test_the_session_refuses_a_redirect_to_the_metadata_service(loopback: int) -> None:
    with (
        fenced_session(DEFAULT_POLICY, resolve=no_dns) as session,
        pytest.raises(OutboundRefused, match=r"169\.254\.169\.254 are refused: it is a cloud metadata"),
    ):
        session.get(f"http://127.0.0.1:{loopback}/redirect", timeout=5)


def test_the_session_ignores_adapters_a_library_mounts_and_proxy_variables() -> None:
    policy = OutboundPolicy(allowed_hosts=("prometheus.test",))
    with fenced_session(policy, resolve=no_dns) as session:
        session.mount("http://127.0.0.1:1", requests.adapters.HTTPAdapter())  # as prometheus-api-client does
        assert not session.trust_env
        with pytest.raises(OutboundRefused, match="allowed hosts"):
            session.get("http://127.0.0.1:1/api/v1/query", timeout=5)


# ---------------------------------------------------------------------------------------------
# The Prometheus provider: a metric's own address is fenced, the operator's default is not


def test_a_metric_s_own_prometheus_address_is_fenced() -> None:
    provider = PrometheusProvider(
        default_address="http://127.0.0.1:1",
        timeout_seconds=1,
        outbound=OutboundPolicy(allowed_hosts=("prometheus.monitoring.svc",)),
    )
    for address, why in (
        ("http://169.254.169.254:9090", "it is not among"),  # the allow list speaks first
        ("http://127.0.0.1:1", "it is not among the controller's allowed hosts"),
    ):
        with pytest.raises(InvalidQuery, match=f"Prometheus at {re.escape(address)}: requests to .* refused: {why}"):
            provider.measure(source=PrometheusSource(query="up", address=address), namespace="ml")
    with pytest.raises(InvalidQuery, match="cloud metadata"):
        PrometheusProvider(default_address="http://127.0.0.1:1", timeout_seconds=1).measure(
            source=PrometheusSource(query="up", address="http://[::ffff:169.254.169.254]:9090"), namespace="ml"
        )


def test_the_operator_s_default_prometheus_is_not_fenced(loopback: int) -> None:
    provider = PrometheusProvider(
        default_address=f"http://127.0.0.1:{loopback}/prometheus-error",
        timeout_seconds=5,
        outbound=OutboundPolicy(allowed_hosts=("prometheus.monitoring.svc",)),
    )
    with pytest.raises(InvalidQuery, match="rejected the query"):
        provider.measure(source=PrometheusSource(query="up"), namespace="ml")


def test_prometheus_errors_quote_prometheus_own_error_but_never_another_body(loopback: int) -> None:
    provider = PrometheusProvider(default_address="http://127.0.0.1:1", timeout_seconds=5)
    with pytest.raises(InvalidQuery) as rejected:
        provider.measure(
            source=PrometheusSource(query="sum(", address=f"http://127.0.0.1:{loopback}/prometheus-error"),
            namespace="ml",
        )
    assert "(bad_data: 1:5: parse error: unexpected <EOF>): sum(" in str(rejected.value)
    with pytest.raises(InvalidQuery) as leaked:
        provider.measure(
            source=PrometheusSource(query="up", address=f"http://127.0.0.1:{loopback}/leak"), namespace="ml"
        )
    assert "AKIA" not in str(leaked.value) and "secret" not in str(leaked.value)
    assert "rejected the query (no Prometheus error)" in str(leaked.value)
