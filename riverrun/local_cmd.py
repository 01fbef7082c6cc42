"""``riverrun local up|down``: a broker and Redis for this machine, in the foreground."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from typing import Any

from riverrun.local import LauncherError, local_stack
from riverrun.local_marker import holding_marker, stop_running

STOP_TIMEOUT = 20.0


def up(args: argparse.Namespace, _settings: Any) -> int:
    """Start both servers, print the settings to export, and wait for Ctrl-C or ``down``;
    a work folder made here goes on a clean stop (its state refers to topics gone with it)."""
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    workdir = Path(args.workdir) if args.workdir else None
    started = False
    with holding_marker():
        try:
            with local_stack(workdir) as stack:
                started = True
                if stopping.is_set():  # Ctrl-C while they started: no settings to export
                    return 0
                print("# local Kafka broker (Tansu) and Redis are up; to use them:")
                for name, value in stack.env().items():
                    print(f"export {name}={value}")
                note = "" if workdir else "; removed when the stack stops cleanly"
                print(
                    f"# logs in {stack.workdir}{note}; stop with Ctrl-C or: riverrun local down",
                    flush=True,
                )
                while not stopping.wait(0.5):
                    for server in (stack.broker, stack.redis):
                        if not server.alive():
                            raise LauncherError(f"{server.name} exited; see {server.log}")
        finally:
            if started:
                print("# local stack stopped", flush=True)
    return 0


def down(_args: argparse.Namespace, _settings: Any) -> int:
    """Ask the running ``riverrun local up`` to stop, and wait until it has."""
    stop_running(STOP_TIMEOUT)
    print("local stack stopped")
    return 0


def add_parser(sub: Any) -> None:
    """Register ``riverrun local up|down``."""
    p = sub.add_parser("local", help="start or stop a local Kafka broker and Redis")
    local_sub = p.add_subparsers(dest="local_command", required=True, metavar="ACTION")
    p_up = local_sub.add_parser("up", help="start them and wait (Ctrl-C stops them)")
    p_up.add_argument(
        "--workdir",
        default=None,
        help="folder kept for the servers' logs and the recovery state (default: a temporary "
        "one, removed on a clean stop)",
    )
    p_up.set_defaults(handler=up)
    p_down = local_sub.add_parser("down", help="stop the stack that `local up` started")
    p_down.set_defaults(handler=down)
