"""`python -m localenv.modelserver --variant good --version v1 --port 0`: serve one model version.

Trains the variant, opens the socket, writes `--ready-file` (JSON {"port", "pid"}) if asked, then
serves until SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
from pathlib import Path

import uvicorn
from prometheus_client import disable_created_metrics

from localenv.modelserver.app import build_app
from localenv.modelserver.variants import DEFAULT_MODEL_NAME, Variant, train


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m localenv.modelserver", description=__doc__)
    parser.add_argument("--variant", type=Variant, choices=list(Variant), required=True)
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    parser.add_argument("--version", default="v1", help="the value of the metrics' 'version' label")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    parser.add_argument("--ready-file", type=Path, help='written once listening: {"port": N, "pid": N}')
    args = parser.parse_args(argv)
    disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series: noise to Prometheus 2

    app = build_app(model=train(args.variant), model_name=args.model_name, version=args.version)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Inherited by accepted connections. Without it uvicorn's header and body writes meet the
    # client's delayed ACK: 40 ms per answer on loopback instead of 1 ms.
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.bind((args.host, args.port))
    listener.listen(128)
    port = listener.getsockname()[1]
    # Connections made from here on wait in the backlog until uvicorn's loop accepts them.
    print(f"serving {args.model_name} {args.version} ({args.variant}) on http://{args.host}:{port}", flush=True)
    if args.ready_file is not None:
        partial = args.ready_file.with_suffix(".partial")
        partial.write_text(json.dumps({"port": port, "pid": os.getpid()}))
        partial.rename(args.ready_file)  # atomic: a reader never sees half a file
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2)
    uvicorn.Server(config).run(sockets=[listener])


if __name__ == "__main__":
    main()
