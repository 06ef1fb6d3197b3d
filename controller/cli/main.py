"""Command line of `kubectl-modelrollout` (run as `kubectl modelrollout ...`)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TextIO

from kubernetes import client
from kubernetes.config import ConfigException

from controller.api import GROUP, Action, SpecError, parse_duration
from controller.cli import render
from controller.cli.kube import JSON, RolloutAPI, Target
from controller.cli.render import ExitCode, Style

EXIT_CODES_HELP = "exit codes: " + ", ".join(
    f"{code.value} {'promoted' if code is ExitCode.OK else code.name.lower().replace('_', ' ')}" for code in ExitCode
)

ACTIONS = {
    "abort": (Action.ABORT, "return all traffic to the stable version now (phase Aborted)"),
    "retry": (Action.RETRY, "start an aborted, rolled-back or failed rollout again from the first step"),
    "pause": (Action.PAUSE, "hold at the current weight until resumed"),
    "resume": (Action.RESUME, "lift a manual pause or an indefinite pause step"),
}


def build_parser() -> argparse.ArgumentParser:
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
    connection.add_argument("--context", help="kubeconfig context to use (default: the current context)")
    connection.add_argument("-n", "--namespace", help="namespace (default: the context's, else 'default')")
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("-o", "--output", choices=["json", "yaml"], help="print the stored object instead")
    named = argparse.ArgumentParser(add_help=False)
    named.add_argument("name", help="ModelRollout name")

    parser = argparse.ArgumentParser(
        prog="kubectl modelrollout",
        description="See and steer ModelRollouts (rollouts.mlops.dev).",
        epilog=f"status {EXIT_CODES_HELP}",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    listing = commands.add_parser("list", parents=[connection, output], help="list rollouts")
    listing.add_argument("-A", "--all-namespaces", action="store_true", help="list rollouts in every namespace")
    commands.add_parser(
        "get", parents=[connection, output, named], help="phase, steps, weights, analysis, conditions, Events"
    )
    status = commands.add_parser(
        "status",
        parents=[connection, output, named],
        help="print the phase; exit code tells the outcome",
        epilog=EXIT_CODES_HELP,
    )
    status.add_argument("-w", "--watch", action="store_true", help="wait until the rollout finishes")
    status.add_argument("--timeout", default="0s", help="give up waiting after this long, e.g. 10m (0: never)")
    commands.add_parser("history", parents=[connection, output, named], help="the decisions the controller made")
    promote = commands.add_parser(
        "promote", parents=[connection, named], help="finish the current step now (skip a pause)"
    )
    promote.add_argument("--full", action="store_true", help="skip all remaining steps and promote the candidate")
    for command, (_, summary) in ACTIONS.items():
        commands.add_parser(command, parents=[connection, named], help=summary)
    undo = commands.add_parser(
        "undo",
        parents=[connection, named],
        help="undo the last promotion: all traffic back to the version it replaced (scaled up first if needed)",
    )
    undo.add_argument(
        "--to-version", help="the version to send all traffic to (default: the one the promotion replaced)"
    )
    undo.add_argument("--token", help="the undo annotation's value (default: a new one); the same token acts once")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    style = Style(color=sys.stdout.isatty() and "NO_COLOR" not in os.environ)
    try:
        api = RolloutAPI(target=Target(kubeconfig=args.kubeconfig, context=args.context, namespace=args.namespace))
        return COMMANDS[args.command](api, args, style, sys.stdout)
    except client.ApiException as error:
        print(f"error: {_api_error_text(error, args)}", file=sys.stderr)
    except (ConfigException, SpecError, LookupError) as error:
        print(f"error: {error}", file=sys.stderr)
    return ExitCode.ERROR


def _api_error_text(error: client.ApiException, args: argparse.Namespace) -> str:
    if error.status == 404 and getattr(args, "name", None):
        return f'modelrollouts.{GROUP} "{args.name}" not found'
    return f"{error.status} {error.reason}: {error.body or ''}".strip()


def _now() -> datetime:
    return datetime.now(UTC)


def run_list(api: RolloutAPI, args: argparse.Namespace, style: Style, out: TextIO) -> int:
    rollouts = api.list_rollouts(all_namespaces=args.all_namespaces)
    if args.output:
        print(
            render.serialize({"apiVersion": "v1", "kind": "List", "items": rollouts}, output=args.output),
            file=out,
        )
    else:
        print(
            render.render_list(rollouts, all_namespaces=args.all_namespaces, now=_now(), style=style),
            file=out,
        )
    return ExitCode.OK


def run_get(api: RolloutAPI, args: argparse.Namespace, style: Style, out: TextIO) -> int:
    rollout = api.get(args.name)
    if args.output:
        print(render.serialize(rollout, output=args.output), file=out)
    else:
        print(render.render_get(rollout, events=api.events(rollout), now=_now(), style=style), file=out)
    return ExitCode.OK


def run_history(api: RolloutAPI, args: argparse.Namespace, style: Style, out: TextIO) -> int:
    rollout = api.get(args.name)
    if args.output:
        print(render.serialize((rollout.get("status") or {}).get("history", []), output=args.output), file=out)
    else:
        print(render.render_history(rollout, now=_now(), style=style), file=out)
    return ExitCode.OK


def run_status(api: RolloutAPI, args: argparse.Namespace, style: Style, out: TextIO) -> int:
    timeout = parse_duration(args.timeout, field_path="--timeout")
    if not args.watch:
        rollout = api.get(args.name)
        _print_status(rollout, args=args, style=style, out=out)
        return render.status_exit_code(rollout)
    deadline = time.monotonic() + timeout if timeout > 0 else None
    last_line = None
    for rollout in api.changes(args.name, deadline=deadline):
        line = render.status_line(rollout, style=style)
        if line != last_line and not args.output:
            print(line, file=out, flush=True)
            last_line = line
        if render.settled_phase(rollout) is not None:
            if args.output:
                _print_status(rollout, args=args, style=style, out=out)
            return render.status_exit_code(rollout)
    print(f"error: timed out after {args.timeout} waiting for {args.name} to finish", file=sys.stderr)
    return ExitCode.TIMED_OUT


def _print_status(rollout: JSON, *, args: argparse.Namespace, style: Style, out: TextIO) -> None:
    if args.output:
        print(render.serialize(rollout.get("status") or {}, output=args.output), file=out)
    else:
        print(render.status_line(rollout, style=style), file=out)


def run_action(api: RolloutAPI, args: argparse.Namespace, style: Style, out: TextIO) -> int:
    if args.command == "promote":
        action = Action.PROMOTE_FULL if args.full else Action.PROMOTE
    else:
        action = ACTIONS[args.command][0]
    api.request(args.name, action)
    print(f"modelrollout {args.name}: {action.value} requested", file=out)
    return ExitCode.OK


def run_undo(api: RolloutAPI, args: argparse.Namespace, style: Style, out: TextIO) -> int:
    # A new token per call: each `undo` asks once, and the controller records the token it handled.
    token = args.token or f"undo-{_now().strftime('%Y%m%dT%H%M%S.%fZ')}"
    api.undo(args.name, token=token, to_version=args.to_version)
    target = f" to {args.to_version}" if args.to_version else ""
    print(f"modelrollout {args.name}: undo{target} requested (token {token})", file=out)
    return ExitCode.OK


COMMANDS: dict[str, Callable[[RolloutAPI, argparse.Namespace, Style, TextIO], int]] = {
    "list": run_list,
    "get": run_get,
    "history": run_history,
    "status": run_status,
    "promote": run_action,
    **dict.fromkeys(ACTIONS, run_action),
    "undo": run_undo,
}
