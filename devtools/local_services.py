"""The services ``run_local`` starts before the function host: Azurite, the
Graph simulator and the Event Grid sink. Each returns the settings that point
the app at it; the simulator and the sink run as child processes.

Child processes get their own session, so a Ctrl-C in the terminal reaches
only ``run_local`` and the host: the host must stop first (it still polls
Graph and publishes), then the sink and the simulator, in reverse order.
"""

from __future__ import annotations

import logging
import re
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from devtools.azurite import Azurite, AzuriteError
from devtools.demo import PresenceLinePrinter
from simulators.graph import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
# A fixed tenant, so reruns over the same data folder reuse its subscriptions.
DEFAULT_DEMO_TENANT = "dec0de00-0000-4000-8000-000000000001"
# Fast enough that changes show within seconds; a user's POLL_SCHEDULE wins.
DEMO_POLL_SCHEDULE = "*/10 * * * * *"
CHILD_START_TIMEOUT = 30.0
CHILD_STOP_TIMEOUT = 10.0
_GUID = re.compile(r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")


class StartError(RuntimeError):
    """A local service could not start; the message says why."""


Print = Callable[[str], None]


class Console:
    """The terminal, shared by threads: one whole line at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        with self._lock:
            print(text, flush=True)

    def say(self, text: str) -> None:
        """A line of run_local's own."""
        self.line(f"run_local: {text}")


@dataclass(frozen=True)
class LocalConfig:
    blob_port: int
    queue_port: int
    table_port: int
    data_dir: Path
    host_port: int
    log_level: str
    graph_sim_port: int  # 0: any free port
    sink_port: int  # 0: any free port
    demo_agents: int  # users of the demo tenant in the Graph simulator
    register_demo: bool  # register them through the API once it answers
    demo_tenant: str
    change_fraction: float
    tick_seconds: float
    poll_schedule: str

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> LocalConfig:
        def text(name: str, default: str) -> str:
            return environ.get(name, "").strip() or default

        def port(name: str, default: int) -> int:
            value = text(name, str(default))
            if not value.isdigit() or not 0 <= int(value) < 65536:
                raise StartError(f"{name}={value!r} is not a port number")
            if int(value) == 0 and default != 0:
                raise StartError(f"{name}=0: this port must be given")
            return int(value)

        def number(name: str, default: float, low: float, high: float) -> float:
            value = text(name, str(default))
            try:
                parsed = float(value)
            except ValueError:
                parsed = float("nan")
            if not low <= parsed <= high:
                raise StartError(f"{name}={value!r} is not a number in [{low}, {high}]")
            return parsed

        agents = text("DEMO_AGENTS", "300")
        if not agents.isdigit():
            raise StartError(f"DEMO_AGENTS={agents!r} is not a whole number")
        tenant = text("DEMO_TENANT", DEFAULT_DEMO_TENANT)
        if not _GUID.match(tenant):
            raise StartError(f"DEMO_TENANT={tenant!r} is not a GUID")
        data_dir = Path(text("LOCAL_DATA_DIR", ".local"))
        return cls(
            blob_port=port("AZURITE_BLOB_PORT", 10000),
            queue_port=port("AZURITE_QUEUE_PORT", 10001),
            table_port=port("AZURITE_TABLE_PORT", 10002),
            data_dir=data_dir if data_dir.is_absolute() else REPO_ROOT / data_dir,
            host_port=port("HOST_PORT", 7071),
            log_level=text("LOG_LEVEL", "INFO"),
            graph_sim_port=port("GRAPH_SIM_PORT", 0),
            sink_port=port("EVENTGRID_SINK_PORT", 0),
            demo_agents=int(agents),
            register_demo=int(agents) > 0,
            demo_tenant=tenant.lower(),
            change_fraction=number("DEMO_CHANGE_FRACTION", 0.05, 0.0, 1.0),
            tick_seconds=number("DEMO_TICK_SECONDS", 10.0, 0.1, 86400.0),
            poll_schedule=text("POLL_SCHEDULE", DEMO_POLL_SCHEDULE),
        )


class LocalService(Protocol):
    """Something the host needs running locally (storage, simulators...)."""

    name: str

    def ports(self) -> dict[str, int]:
        """Ports it will listen on, by description, checked before start
        (ports left to the OS are not listed)."""
        ...

    def start(self) -> dict[str, str]:
        """Start; return environment variables to give the function host."""
        ...

    def stop(self) -> None: ...


class AzuriteService:
    name = "Azurite"

    def __init__(self, config: LocalConfig, console: Console) -> None:
        self._config = config
        self._console = console
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
        self._console.say(
            f"Azurite on 127.0.0.1 ports {endpoints.blob_port}/"
            f"{endpoints.queue_port}/{endpoints.table_port}, data in {location}"
        )
        return {"AzureWebJobsStorage": endpoints.connection_string}

    def stop(self) -> None:
        if self._azurite is not None:
            self._azurite.stop()


class ChildProcess:
    """``python -m <module>`` whose first matching output line says it is
    ready; every later line goes to ``on_line``."""

    def __init__(
        self, name: str, args: list[str], ready: re.Pattern[str], on_line: Print
    ) -> None:
        self.name = name
        self._args = [sys.executable, "-m", *args]
        self._ready = ready
        self._on_line = on_line
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self, timeout: float = CHILD_START_TIMEOUT) -> re.Match[str]:
        self._process = subprocess.Popen(
            self._args,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,  # see the module docstring
        )
        found: list[re.Match[str]] = []
        early: list[str] = []
        ready = threading.Event()

        def read() -> None:
            assert self._process is not None and self._process.stdout is not None
            for line in self._process.stdout:
                line = line.rstrip("\n")
                if ready.is_set():
                    self._on_line(line)
                    continue
                match = self._ready.search(line)
                if match:
                    found.append(match)
                    ready.set()
                else:
                    early.append(line)
            ready.set()  # ended before it was ready: unblock start()

        self._reader = threading.Thread(
            target=read, name=f"{self.name}-output", daemon=True
        )
        self._reader.start()
        ready.wait(timeout)
        if not found:
            self.stop()
            last = next((line for line in reversed(early) if line.strip()), "")
            raise StartError(
                f"{self.name} did not start"
                + (f": {last.strip()}" if last else f" within {timeout:.0f}s")
            )
        return found[0]

    def stop(self, timeout: float = CHILD_STOP_TIMEOUT) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop in %.0fs: killed", self.name, timeout)
                self._process.kill()
                self._process.wait()
        if self._reader is not None:
            self._reader.join(5)  # let its last lines out
        self._process = None


@dataclass(frozen=True)
class GraphSimulatorUrls:
    base_url: str
    authority_host: str
    control_url: str
    ca_bundle: str


_GRAPH_READY = re.compile(
    r"^GRAPH_SIMULATOR base_url=(?P<base_url>\S+) "
    r"authority_host=(?P<authority_host>\S+) control_url=(?P<control_url>\S+) "
    r"ca_bundle=(?P<ca_bundle>.+)$"
)


class GraphSimulatorService:
    """The Graph simulator with the demo tenant's agents, changing over time."""

    name = "Graph simulator"

    def __init__(self, config: LocalConfig, console: Console) -> None:
        self._config = config
        self._console = console
        self.urls: GraphSimulatorUrls | None = None
        self._child: ChildProcess | None = None

    def ports(self) -> dict[str, int]:
        port = self._config.graph_sim_port
        return {"Graph simulator (GRAPH_SIM_PORT)": port} if port else {}

    def start(self) -> dict[str, str]:
        config = self._config
        ca_dir = config.data_dir / "graph-ca"
        ca_dir.mkdir(parents=True, exist_ok=True)
        args = [
            "simulators.graph",
            "--port", str(config.graph_sim_port),
            "--ca-dir", str(ca_dir),
            "--change-fraction", str(config.change_fraction),
            "--tick-seconds", str(config.tick_seconds),
        ]  # fmt: skip
        # The tenant exists even without the demo: subscriptions a previous
        # run left in the data folder must find it, or every poll fails.
        args += ["--tenant", config.demo_tenant, "--users", str(config.demo_agents)]
        self._child = ChildProcess(self.name, args, _GRAPH_READY, self._show_output)
        match = self._child.start()
        self.urls = GraphSimulatorUrls(**match.groupdict())
        self._console.say(
            f"Graph simulator at {self.urls.base_url} (control {self.urls.control_url})"
        )
        # The secret is the simulator's fixed local one; it is never printed.
        return {
            "GRAPH_BASE_URL": self.urls.base_url,
            "GRAPH_AUTHORITY_HOST": self.urls.authority_host,
            "GRAPH_CLIENT_ID": DEFAULT_CLIENT_ID,
            "GRAPH_CLIENT_SECRET": DEFAULT_CLIENT_SECRET,
            "GRAPH_CA_BUNDLE": self.urls.ca_bundle,
        }

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop()

    def _show_output(self, line: str) -> None:
        self._console.line(f"graph simulator: {line}")


_SINK_READY = re.compile(r"topic endpoint (?P<endpoint>http://\S+)")


class EventGridSinkService:
    """The Event Grid sink; its one line per received event is shown as a
    readable presence line."""

    name = "Event Grid sink"

    def __init__(self, config: LocalConfig, console: Console) -> None:
        self._config = config
        self._console = console
        # Local-only and new every run; printed so the sink can be tried by hand.
        self.key = secrets.token_urlsafe(16)
        self.topic_endpoint: str | None = None
        self._printer = PresenceLinePrinter(console.line)
        self._child: ChildProcess | None = None

    @property
    def base_url(self) -> str | None:
        if self.topic_endpoint is None:
            return None
        return self.topic_endpoint.rsplit("/api/events", 1)[0]

    def ports(self) -> dict[str, int]:
        port = self._config.sink_port
        return {"Event Grid sink (EVENTGRID_SINK_PORT)": port} if port else {}

    def start(self) -> dict[str, str]:
        args = [
            "simulators.eventgrid_sink",
            "--port", str(self._config.sink_port),
            "--key", self.key,
        ]  # fmt: skip
        self._child = ChildProcess(
            self.name, args, _SINK_READY, self._printer.sink_line
        )
        self.topic_endpoint = self._child.start()["endpoint"]
        self._console.say(f"Event Grid sink at {self.topic_endpoint} (key {self.key})")
        return {
            "EVENTGRID_TOPIC_ENDPOINT": self.topic_endpoint,
            "EVENTGRID_TOPIC_KEY": self.key,
        }

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop()
        self._printer.flush()


@dataclass(frozen=True)
class LocalServices:
    """What run_local starts before the host, by role."""

    azurite: AzuriteService
    graph: GraphSimulatorService
    sink: EventGridSinkService

    @property
    def in_order(self) -> list[LocalService]:
        """Start order; they stop in reverse."""
        return [self.azurite, self.graph, self.sink]


def local_services(config: LocalConfig, console: Console) -> LocalServices:
    return LocalServices(
        AzuriteService(config, console),
        GraphSimulatorService(config, console),
        EventGridSinkService(config, console),
    )
