"""The outbound fence: where the controller may send the HTTP requests a rollout asks for.

A rollout's spec names URLs the controller then calls from inside the cluster: web metrics
(`provider.web.url`), a metric's own Prometheus (`provider.prometheus.address` and the
model-aware checks' `address`) and the gates' model servers (`spec.versions[].endpoint`). Whoever
may write a ModelRollout could otherwise make the controller fetch the cloud metadata service
(credentials of the node) and read the answer back from status. The fence refuses, by default,
link-local addresses (169.254.0.0/16, fe80::/10) and the cloud metadata addresses; with
`allowed_hosts` an operator restricts requests to named hosts. Loopback stays allowed.

`OutboundPolicy` is the pure rule. It is applied in one place per HTTP library:

* httpx (web metrics, gates), through `fenced_transport`: `FencedTransport` checks the URL's host
  by name before anything else happens; `PinnedTransport`, the network under it, resolves the
  name, checks every address it resolves to, and connects to one of exactly those addresses (the
  URL's host moves to the Host header and to TLS SNI and certificate verification). Resolving once
  and connecting to what was checked leaves no window for DNS rebinding (a name that answers a
  harmless address for the check and 169.254.169.254 for the connection).
* requests (prometheus-api-client, for a metric's own Prometheus address), through
  `fenced_session`: every request, and every redirect hop, is checked and pinned the same way
  before it is sent.

Fenced requests connect directly: HTTP(S)_PROXY variables are not used, since the fence would
then check the proxy rather than the destination. The controller's own `--prometheus-address` is
set by the operator and is not fenced.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import requests
from requests.adapters import HTTPAdapter

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA = "a cloud metadata address"
LINK_LOCAL = "a link-local address"

DEFAULT_REFUSED_NETWORKS: tuple[tuple[str, str], ...] = (
    ("169.254.169.254/32", METADATA),  # AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean
    ("fd00:ec2::254/128", METADATA),  # AWS over IPv6
    ("100.100.100.200/32", METADATA),  # Alibaba Cloud
    ("169.254.0.0/16", LINK_LOCAL),
    ("fe80::/10", LINK_LOCAL),
)
"""(network, what it is): the first network holding an address names it in the refusal."""

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_DEFAULT_PORTS = {"http": 80, "https": 443}

Resolver = Callable[[str, int], Sequence[str]]
"""(host name, port) -> the addresses it resolves to; raises OSError when it cannot."""


def resolve_host(host: str, port: int) -> list[str]:
    """The system resolver (what a plain connection would use), addresses in its order, once each."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(sockaddr[0]) for *_, sockaddr in found))


def _ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


def _embedded_ipv4(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one stands for (`::ffff:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def _normal_host(host: str) -> str:
    """Lower case, no trailing dot, IPv6 without brackets and compressed."""
    address = _ip(host)
    return address.compressed if address is not None else host.lower().rstrip(".")


def parse_allowed_hosts(text: str) -> tuple[str, ...]:
    """`--allowed-hosts`: comma-separated entries; empty means no allow list."""
    return tuple(entry.strip() for entry in text.split(",") if entry.strip())


class OutboundRefused(Exception):
    """The fence refused a request before it was sent; changing the URL (or the allow list) fixes it.

    Deliberately not an httpx or requests error: code that treats network errors as "try again
    later" must not retry a refusal."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"requests to {host} are refused: {reason}")
        self.host = host
        """The URL's host, as written."""
        self.reason = reason
        """Why, e.g. `it resolves to 169.254.169.254, a cloud metadata address (169.254.169.254/32)`."""


@dataclass(frozen=True, kw_only=True)
class OutboundPolicy:
    """Which hosts the requests a rollout asks for may go to. Pure: resolving names is the caller's."""

    allowed_hosts: tuple[str, ...] = ()
    """Empty: any host the refused networks do not hold. Otherwise only these, matched against the
    URL's host as written: an exact name (`prometheus.monitoring.svc`), `*.suffix` for any name
    ending in `.suffix` (`*.models.svc.cluster.local`; not `models.svc.cluster.local` itself), or
    an IP address. An allowed host is still refused when it resolves into a refused network."""
    refused_networks: tuple[tuple[str, str], ...] = DEFAULT_REFUSED_NETWORKS
    """(CIDR, what it is) pairs refused whatever the allow list says, checked against the URL's host
    when it is an address and against every address a name resolves to."""

    def __post_init__(self) -> None:
        for entry in self.allowed_hosts:
            if _ip(entry) is not None:
                continue
            name = entry.removeprefix("*.").rstrip(".")
            if not name or "*" in name or any(char in name for char in ":/@?# ") or not all(name.split(".")):
                raise ValueError(
                    f"allowed host {entry!r} is not a host name, *.suffix or IP address "
                    "(write the host only: no scheme, port or path)"
                )
        for network, _ in self.refused_networks:
            ipaddress.ip_network(network)  # ValueError when it is not a network

    def refusal_for_host(self, host: str) -> str | None:
        """Why a URL's host (a name or an address, as written) is refused; None when it is not."""
        normal = _normal_host(host)
        if self.allowed_hosts and not any(_matches(normal, entry) for entry in self.allowed_hosts):
            return "it is not among the controller's allowed hosts (--allowed-hosts)"
        address = _ip(normal)
        refused = None if address is None else self.refused_network(address)
        return None if refused is None else f"it is {refused[1]} ({refused[2]})"

    def refusal_for_address(self, address: str) -> str | None:
        """Why connecting to an address a name resolved to is refused; None when it is not."""
        ip = _ip(address)
        if ip is None:
            return f"it resolves to {address}, which is not an IP address"
        refused = self.refused_network(ip)
        return None if refused is None else f"it resolves to {refused[0]}, {refused[1]} ({refused[2]})"

    def refused_network(self, address: IPAddress) -> tuple[str, str, str] | None:
        """(the address, what its network is, the network) for a refused address; None otherwise.
        An IPv6 address standing for an IPv4 one (`::ffff:169.254.169.254`) counts as both."""
        for candidate in dict.fromkeys((address, _embedded_ipv4(address))):
            for network, what in self.refused_networks:
                if candidate in ipaddress.ip_network(network):
                    return address.compressed, what, network
        return None


DEFAULT_POLICY = OutboundPolicy()
"""No allow list; link-local and metadata addresses refused."""


def _matches(host: str, entry: str) -> bool:
    entry = _normal_host(entry)
    if entry.startswith("*."):
        return host.endswith(entry[1:])
    return host == entry


def checked_address(policy: OutboundPolicy, host: str, port: int, resolve: Resolver) -> str:
    """The address to connect to for `host`: the host itself when it is an address, else the first
    address it resolves to, once every one of them has passed the policy. Raises OutboundRefused,
    or OSError when the name does not resolve."""
    refusal = policy.refusal_for_host(host)
    if refusal is not None:
        raise OutboundRefused(host, refusal)
    address = _ip(host)
    if address is not None:
        return address.compressed
    addresses = list(resolve(host, port))
    if not addresses:
        raise OSError(f"{host} resolves to no address")
    for resolved in addresses:
        refusal = policy.refusal_for_address(resolved)
        if refusal is not None:
            raise OutboundRefused(host, refusal)
    return addresses[0]


# ---------------------------------------------------------------------------------------------
# httpx


class FencedTransport(httpx.BaseTransport):
    """Refuses a request whose host the policy refuses by name, before `inner` sees it."""

    def __init__(self, *, policy: OutboundPolicy, inner: httpx.BaseTransport) -> None:
        self._policy = policy
        self._inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.raw_host.decode("ascii")
        refusal = self._policy.refusal_for_host(host)
        if refusal is not None:
            raise OutboundRefused(host, refusal)
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


class PinnedTransport(httpx.BaseTransport):
    """Resolves the host, checks every address, and sends the request to the first one.

    The request `inner` gets has the address as the URL's host; the name stays in the Host header
    and in the `sni_hostname` extension, so TLS still verifies the certificate for the name."""

    def __init__(
        self,
        *,
        policy: OutboundPolicy,
        resolve: Resolver = resolve_host,
        inner: httpx.BaseTransport | None = None,
    ) -> None:
        self._policy = policy
        self._resolve = resolve
        self._inner = inner or httpx.HTTPTransport()
        """The real network by default; tests pass an httpx.MockTransport."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        host = url.raw_host.decode("ascii")
        port = url.port or _DEFAULT_PORTS.get(url.scheme, 80)
        try:
            address = checked_address(self._policy, host, port, self._resolve)
        except OSError as error:
            raise httpx.ConnectError(f"cannot resolve {host}: {error}", request=request) from error
        if _ip(host) is not None:
            return self._inner.handle_request(request)
        pinned = httpx.Request(
            request.method,
            url.copy_with(host=address),
            headers=request.headers,  # carries Host: the name
            stream=request.stream,
            extensions={**request.extensions, "sni_hostname": host},
        )
        return self._inner.handle_request(pinned)

    def close(self) -> None:
        self._inner.close()


def fenced_transport(policy: OutboundPolicy, *, transport: httpx.BaseTransport | None = None) -> httpx.BaseTransport:
    """The transport of every httpx client that sends a request a rollout asks for.

    `transport` None: the real network, names resolved and pinned (`PinnedTransport`). Tests pass
    an in-memory httpx.MockTransport, which the by-name checks still guard."""
    return FencedTransport(policy=policy, inner=transport or PinnedTransport(policy=policy))


# ---------------------------------------------------------------------------------------------
# requests


class _FencedAdapter(HTTPAdapter):
    """Checks and pins each request (so each redirect hop) it sends; never retries."""

    def __init__(self, *, policy: OutboundPolicy, resolve: Resolver) -> None:
        super().__init__(max_retries=0)
        self._policy = policy
        self._resolve = resolve
        self._pins: dict[str, str] = {}
        """Host name -> the checked address its connections go to."""

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        url = urlsplit(request.url or "")
        host = url.hostname or ""
        port = url.port or _DEFAULT_PORTS.get(url.scheme, 80)
        try:
            address = checked_address(self._policy, host, port, self._resolve)
        except OSError as error:
            raise requests.ConnectionError(f"cannot resolve {host}: {error}", request=request) from error
        if _ip(host) is None:
            self._pins[host] = address
        # Set on every hop: a redirect copies the previous hop's headers.
        request.headers["Host"] = url.netloc.rpartition("@")[2]
        return super().send(request, *args, **kwargs)

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: bool | str, cert: str | tuple[str, str] | None = None
    ) -> Any:  # (host params, pool kwargs); the stubs' TypedDicts lack urllib3's server_hostname
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        params: dict[str, Any] = dict(host_params)
        kwargs: dict[str, Any] = dict(pool_kwargs)
        name = params.get("host")
        if isinstance(name, str) and name in self._pins:
            params["host"] = self._pins[name]
            if params.get("scheme") == "https":
                kwargs.update(server_hostname=name, assert_hostname=name)
        return params, kwargs


class _FencedSession(requests.Session):
    """Every URL goes through the fenced adapter, whatever a library mounts on the session."""

    def __init__(self, *, policy: OutboundPolicy, resolve: Resolver) -> None:
        super().__init__()
        self.trust_env = False  # direct connections only: no proxy variables, no .netrc
        self._fenced = _FencedAdapter(policy=policy, resolve=resolve)
        self.mount("http://", self._fenced)
        self.mount("https://", self._fenced)

    def get_adapter(self, url: str) -> HTTPAdapter:
        return self._fenced


def fenced_session(policy: OutboundPolicy, *, resolve: Resolver = resolve_host) -> requests.Session:
    """A requests Session whose every request, redirects included, passes the fence."""
    return _FencedSession(policy=policy, resolve=resolve)
