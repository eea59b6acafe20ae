"""Run the whole service locally: Azurite, then the function app in devhost.

Usage: ``./scripts/run.sh`` (or ``python -m devtools.run_local``); extra
arguments go to ``python -m devhost``. Settings, from the environment:

    AZURITE_BLOB_PORT / AZURITE_QUEUE_PORT / AZURITE_TABLE_PORT
                         Azurite ports (10000 / 10001 / 10002)
    LOCAL_DATA_DIR       where local services keep data (.local)
    HOST_PORT            the function host's HTTP port (7071)
    LOG_LEVEL            the function host's log level (INFO)

Local services start in list order before the host and stop in reverse
order after it; each contributes environment variables to the host (see
``local_services``).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Protocol

from devhost.host_config import load_host_config
from devtools.azurite import Azurite, AzuriteError

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
EXIT_USAGE = 2
# How long the host gets to finish in-flight work after Ctrl-C before it is
# killed (devhost's own --shutdown-timeout is 10 s).
HOST_STOP_TIMEOUT = 20.0


class StartError(RuntimeError):
    """A local service could not start; the message says why."""


@dataclass(frozen=True)
class LocalConfig:
    blob_port: int
    queue_port: int
    table_port: int
    data_dir: Path
    host_port: int
    log_level: str

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> LocalConfig:
        def port(name: str, default: int) -> int:
            text = environ.get(name, "").strip() or str(default)
            if not text.isdigit() or not 0 < int(text) < 65536:
                raise StartError(f"{name}={text!r} is not a port number")
            return int(text)

        data_dir = Path(environ.get("LOCAL_DATA_DIR", "").strip() or ".local")
        return cls(
            blob_port=port("AZURITE_BLOB_PORT", 10000),
            queue_port=port("AZURITE_QUEUE_PORT", 10001),
            table_port=port("AZURITE_TABLE_PORT", 10002),
            data_dir=data_dir if data_dir.is_absolute() else REPO_ROOT / data_dir,
            host_port=port("HOST_PORT", 7071),
            log_level=environ.get("LOG_LEVEL", "").strip() or "INFO",
        )


class LocalService(Protocol):
    """Something the host needs running locally (storage, simulators...)."""

    name: str

    def ports(self) -> dict[str, int]:
        """Ports it will listen on, by description, checked before start."""
        ...

    def start(self) -> dict[str, str]:
        """Start; return environment variables to give the function host."""
        ...

    def stop(self) -> None: ...


class AzuriteService:
    name = "Azurite"

    def __init__(self, config: LocalConfig) -> None:
        self._config = config
        self._azurite: Azurite | None = None

    def ports(self) -> dict[str, int]:
        return {
            "Azurite blob (AZURITE_BLOB_PORT)": self._config.blob_port,
            "Azurite queue (AZURITE_QUEUE_PORT)": self._config.queue_port,
            "Azurite table (AZURITE_TABLE_PORT)": self._config.table_port,
        }

    def start(self) -> dict[str, str]:
        location = self._config.data_dir / "azurite"
        location.mkdir(parents=True, exist_ok=True)
        self._azurite = Azurite(
            blob_port=self._config.blob_port,
            queue_port=self._config.queue_port,
            table_port=self._config.table_port,
            location=location,
        )
        try:
            endpoints = self._azurite.start()
        except AzuriteError as error:
            raise StartError(str(error)) from error
        print(
            f"run_local: Azurite on 127.0.0.1 ports {endpoints.blob_port}/"
            f"{endpoints.queue_port}/{endpoints.table_port}, data in {location}",
            flush=True,
        )
        return {"AzureWebJobsStorage": endpoints.connection_string}

    def stop(self) -> None:
        if self._azurite is not None:
            self._azurite.stop()


def local_services(config: LocalConfig) -> list[LocalService]:
    """Services started before the host, in this order. A Graph simulator or
    an Event Grid sink joins as another entry whose start() returns the
    settings (GRAPH_BASE_URL, EVENTGRID_TOPIC_ENDPOINT...) that point the
    app at it."""
    return [AzuriteService(config)]


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


def run(config: LocalConfig, host_args: list[str]) -> int:
    services = local_services(config)
    ports = {"function host (HOST_PORT)": config.host_port}
    for service in services:
        ports.update(service.ports())
    check_ports(ports)

    started: list[LocalService] = []
    host: subprocess.Popen[bytes] | None = None

    def forward_stop(signum: int, frame: FrameType | None) -> None:
        if host is None:
            raise KeyboardInterrupt  # still starting services: just unwind
        # Ctrl-C reaches the host too (same process group); SIGTERM may not.
        if host.poll() is None:
            host.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, forward_stop)
    signal.signal(signal.SIGTERM, forward_stop)
    try:
        environ = dict(os.environ)
        for service in services:
            environ.update(service.start())
            started.append(service)
        prefix = load_host_config(REPO_ROOT).route_prefix
        api = f"http://127.0.0.1:{config.host_port}/{prefix}".rstrip("/")
        print(f"run_local: starting the function host; API at {api}", flush=True)
        print("run_local: press Ctrl-C to stop everything", flush=True)
        host = subprocess.Popen(
            host_command(config, host_args), cwd=REPO_ROOT, env=environ
        )
        code = host.wait()
        if code not in (0, -signal.SIGINT, -signal.SIGTERM):
            print(f"run_local: the function host exited with {code}", flush=True)
        return code
    finally:
        if host is not None and host.poll() is None:
            host.send_signal(signal.SIGTERM)
            try:
                host.wait(HOST_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                host.kill()
                host.wait()
        for service in reversed(started):
            service.stop()
        print("run_local: stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        config = LocalConfig.from_environ(os.environ)
        return run(config, list(sys.argv[1:] if argv is None else argv))
    except StartError as error:
        print(f"run_local: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
