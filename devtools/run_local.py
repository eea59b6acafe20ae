"""Run the whole service locally: Azurite, the Graph simulator and the Event
Grid sink, then the function app in devhost pointed at them; then register a
demo tenant through the API and show its presence events as they flow.

Usage: ``./scripts/run.sh`` (or ``python -m devtools.run_local``);
``--no-demo`` skips the demo tenant; other arguments go to ``python -m
devhost``. Settings, from the environment:

    AZURITE_BLOB_PORT / AZURITE_QUEUE_PORT / AZURITE_TABLE_PORT
                         Azurite ports (10000 / 10001 / 10002)
    LOCAL_DATA_DIR       where local services keep data (.local)
    HOST_PORT            the function host's HTTP port (7071)
    LOG_LEVEL            the function host's log level (INFO)
    GRAPH_SIM_PORT       the Graph simulator's https port (0: any free one)
    EVENTGRID_SINK_PORT  the Event Grid sink's port (0: any free one)
    DEMO_AGENTS          agents in the demo tenant (300; 0: no demo)
    DEMO_TENANT          the demo tenant id (a fixed GUID)
    DEMO_CHANGE_FRACTION share of agents changing presence per tick (0.05)
    DEMO_TICK_SECONDS    seconds between simulator ticks (10)
    POLL_SCHEDULE        the app's poll schedule (*/10 * * * * * here)

Local services start in order before the host and stop in reverse order
after it; each contributes environment variables to the host (see
``devtools.local_services``).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import FrameType

from devhost.host_config import load_host_config
from devhost.settings import effective_settings, read_settings_file
from devtools.demo import DemoError, DemoStopped, DemoTarget, run_demo
from devtools.local_services import (
    Console,
    LocalConfig,
    LocalService,
    LocalServices,
    StartError,
    local_services,
)

__all__ = ["LocalConfig", "LocalService", "StartError", "main", "run"]

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
EXIT_USAGE = 2
# How long the host gets to finish in-flight work after Ctrl-C before it is
# killed (devhost's own --shutdown-timeout is 10 s).
HOST_STOP_TIMEOUT = 20.0
# The demo's longest single wait is one HTTP request.
DEMO_STOP_TIMEOUT = 15.0
NO_DEMO = "--no-demo"
FUNCTION_KEY_SETTING = "DEVHOST_FUNCTION_KEY"


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Like the servers themselves: a port whose old connections linger in
        # TIME_WAIT is free; one with a listener is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def check_ports(ports: Mapping[str, int]) -> None:
    seen: dict[int, str] = {}
    for description, port in ports.items():
        if port in seen:
            raise StartError(f"{description} and {seen[port]} both use port {port}")
        seen[port] = description
        if port_in_use(port):
            raise StartError(f"port {port} for {description} is already in use")


def host_command(config: LocalConfig, host_args: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "devhost",
        "--script-root",
        str(REPO_ROOT),
        "--port",
        str(config.host_port),
        "--log-level",
        config.log_level,
        *host_args,
    ]


def function_key(environ: Mapping[str, str]) -> str:
    """The key devhost will require: the environment's, else the settings
    file's (the same precedence devhost applies)."""
    settings = effective_settings(read_settings_file(REPO_ROOT), environ)
    return settings.get(FUNCTION_KEY_SETTING, "").strip()


def start_demo(
    config: LocalConfig,
    services: LocalServices,
    api: str,
    key: str,
    console: Console,
    stop: threading.Event,
) -> threading.Thread:
    """Registers the demo tenant in the background while the host starts."""
    urls = services.graph.urls
    assert urls is not None and services.sink.base_url is not None
    target = DemoTarget(
        api_url=api,
        function_key=key,
        tenant_id=config.demo_tenant,
        control_url=urls.control_url,
        ca_bundle=urls.ca_bundle,
        sink_url=services.sink.base_url,
        poll_schedule=config.poll_schedule,
    )

    def demo() -> None:
        try:
            run_demo(target, stop, console.line)
        except DemoStopped:
            pass
        except DemoError as error:
            console.say(f"demo: {error}")
        except Exception:
            # The service keeps running without the demo; say why it failed.
            logger.exception("the demo step failed")

    thread = threading.Thread(target=demo, name="demo", daemon=True)
    thread.start()
    return thread


def run(config: LocalConfig, host_args: list[str]) -> int:
    console = Console()
    services = local_services(config, console)
    ports = {"function host (HOST_PORT)": config.host_port}
    for service in services.in_order:
        ports.update(service.ports())
    check_ports(ports)
    key = function_key(os.environ)
    if config.register_demo and not key:
        raise StartError(
            f"{FUNCTION_KEY_SETTING} is empty: the demo cannot call the API "
            f"(set it, or run with {NO_DEMO})"
        )

    started: list[LocalService] = []
    host: subprocess.Popen[bytes] | None = None
    stop_demo = threading.Event()
    demo: threading.Thread | None = None

    def forward_stop(signum: int, frame: FrameType | None) -> None:
        stop_demo.set()
        if host is None:
            raise KeyboardInterrupt  # still starting services: just unwind
        # Ctrl-C reaches the host too (same process group); SIGTERM may not.
        if host.poll() is None:
            host.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, forward_stop)
    signal.signal(signal.SIGTERM, forward_stop)
    try:
        environ = dict(os.environ)
        for service in services.in_order:
            # Listed first: an interrupted start must still stop what it began.
            started.append(service)
            environ.update(service.start())
        environ["POLL_SCHEDULE"] = config.poll_schedule
        prefix = load_host_config(REPO_ROOT).route_prefix
        api = f"http://127.0.0.1:{config.host_port}/{prefix}".rstrip("/")
        console.say(f"starting the function host; API at {api}")
        console.say(f"function key (header x-functions-key): {key or '(none)'}")
        if config.register_demo:
            console.say(
                f"demo tenant {config.demo_tenant} with {config.demo_agents} "
                "agents: registering them once the API answers"
            )
        console.say("press Ctrl-C to stop everything")
        host = subprocess.Popen(
            host_command(config, host_args), cwd=REPO_ROOT, env=environ
        )
        if config.register_demo:
            demo = start_demo(config, services, api, key, console, stop_demo)
        code = host.wait()
        if code not in (0, -signal.SIGINT, -signal.SIGTERM):
            console.say(f"the function host exited with {code}")
        return code
    finally:
        stop_demo.set()
        if host is not None and host.poll() is None:
            host.send_signal(signal.SIGTERM)
            try:
                host.wait(HOST_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                host.kill()
                host.wait()
        if demo is not None:
            demo.join(DEMO_STOP_TIMEOUT)
        for service in reversed(started):
            service.stop()
        console.say("stopped")


def main(argv: list[str] | None = None) -> int:
    # run_local speaks through its console lines; its modules' logs only
    # matter when something goes wrong.
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        config = LocalConfig.from_environ(os.environ)
        if NO_DEMO in args:
            config = replace(config, register_demo=False)
        return run(config, [arg for arg in args if arg != NO_DEMO])
    except StartError as error:
        print(f"run_local: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
