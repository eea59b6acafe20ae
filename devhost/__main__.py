"""Command line: ``python -m devhost --port 7071 --app function_app:app``."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from devhost.functions import AppLoadError
from devhost.host import Host, HostOptions
from devhost.host_config import HostConfigError
from devhost.routing import RouteTemplateError
from devhost.settings import SettingsError
from devhost.timers import ScheduleError

logger = logging.getLogger("devhost")

EXIT_USAGE = 2
EXIT_CUT_OFF = 1
# Beyond --shutdown-timeout, time allowed to release cut-off messages.
STOP_GRACE = 5.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devhost",
        description="Run the Azure Functions app locally (development only).",
    )
    parser.add_argument("--app", default="function_app:app", help="module:attribute")
    parser.add_argument(
        "--script-root",
        type=Path,
        default=Path("."),
        help="folder with host.json, local.settings.json and the app module",
    )
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument(
        "--message-lease",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="invisibility of a queue message while processed (not renewed)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long a stop waits for queue messages in flight",
    )
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # The storage SDK logs every request at INFO; keep the host readable.
    logging.getLogger("azure").setLevel(logging.WARNING)
    host = Host(
        HostOptions(
            script_root=args.script_root,
            app=args.app,
            bind=args.bind,
            port=args.port,
            message_lease_seconds=args.message_lease,
            shutdown_timeout=args.shutdown_timeout,
        )
    )
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        host.start()
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            print(
                f"devhost: port {args.port} on {args.bind} is already in use",
                file=sys.stderr,
            )
            return EXIT_USAGE
        raise
    except (
        AppLoadError,
        HostConfigError,
        RouteTemplateError,
        ScheduleError,
        SettingsError,
    ) as error:
        print(f"devhost: {error}", file=sys.stderr)
        return EXIT_USAGE
    # One write, newline included: a log line from another thread cannot land
    # between the address and its line end, where a reader would miss it.
    sys.stdout.write(f"devhost: HTTP functions listening on {host.base_url}\n")
    sys.stdout.flush()
    stop_requested.wait()
    logger.info("Stopping: finishing work in flight (up to %ss)", args.shutdown_timeout)
    # Storage calls retry for minutes when storage is gone; the bound holds
    # anyway. Unfinished messages reappear when their lease ends.
    watchdog = threading.Timer(
        args.shutdown_timeout + STOP_GRACE,
        _exit_now,
        args=("the stop did not finish in time",),
    )
    watchdog.daemon = True
    watchdog.start()
    if not host.stop():
        # Handler threads still running would keep the interpreter alive;
        # their messages were already made visible again.
        _exit_now("work in flight was cut off and handed back to its queue")
    logging.shutdown()
    return 0


def _exit_now(reason: str) -> None:
    logger.warning("Exiting: %s", reason)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_CUT_OFF)


if __name__ == "__main__":
    sys.exit(main())
