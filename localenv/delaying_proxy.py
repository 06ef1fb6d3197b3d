"""A slow upstream on 127.0.0.1: an HTTP proxy that answers every request `delay_seconds` late.

Put it in front of a real server (say `LocalPrometheus`) to play a Prometheus that is overloaded
but still answers: each request waits `delay_seconds`, then is forwarded as it came and the
upstream's answer returned unchanged. Requests are served each on its own thread, so delays
overlap (ten requests at once all answer after about one delay), as they would from a slow
server. `delay_seconds` may be changed while it runs; `requests` counts what was forwarded, by
path.

    with DelayingProxy(upstream=prometheus.url, delay_seconds=4.0) as slow:
        ... --prometheus-address slow.url ...
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlsplit

import httpx

UPSTREAM_TIMEOUT_SECONDS = 60.0
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "content-length"}
)


class DelayingProxy:
    """Forwards every request to `upstream` after `delay_seconds`; use as a context manager."""

    def __init__(self, *, upstream: str, delay_seconds: float = 0.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.delay_seconds = delay_seconds
        """Read at each request: a change applies to requests arriving from then on."""
        self.requests: Counter[str] = Counter()
        """Requests forwarded (or being delayed), by path without the query string."""
        self._lock = threading.Lock()
        self._client = httpx.Client(
            timeout=UPSTREAM_TIMEOUT_SECONDS, limits=httpx.Limits(max_connections=256, max_keepalive_connections=64)
        )
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="delaying-proxy", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        if not self._thread.is_alive():
            self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()

    def __enter__(self) -> DelayingProxy:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _forward(self, handler: BaseHTTPRequestHandler) -> None:
        path = urlsplit(handler.path).path
        with self._lock:
            self.requests[path] += 1
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        time.sleep(max(self.delay_seconds, 0.0))
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_BY_HOP and k.lower() != "host"}
        try:
            answer = self._client.request(handler.command, self.upstream + handler.path, headers=headers, content=body)
        except (httpx.HTTPError, RuntimeError) as error:
            # RuntimeError: closed while this request waited out its delay.
            with contextlib.suppress(OSError):
                handler.send_error(502, f"upstream: {type(error).__name__}")
            return
        with contextlib.suppress(OSError):  # the client gave up (its own timeout) while we waited
            handler.send_response(answer.status_code)
            for name, value in answer.headers.items():
                if name.lower() not in _HOP_BY_HOP and name.lower() != "content-encoding":
                    handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(answer.content)))
            handler.end_headers()
            handler.wfile.write(answer.content)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                proxy._forward(self)

            def do_POST(self) -> None:
                proxy._forward(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler
