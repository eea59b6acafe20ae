"""Shared benchmark helpers: start Azurite and the simulators, count the HTTP
requests the Azure SDKs really send, measure peak memory, bound run time.

Counting happens at the azure-core transport (``RequestsTransport.send``), the
last step before the wire, so every round trip is seen once, retries included,
whichever client (tables, queues, Event Grid) sent it. The product builds its
own SDK clients with no hook for extra policies, which is why the transport
is wrapped rather than a policy added.
"""

from __future__ import annotations

import _thread
import logging
import os
import re
import secrets
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from azure.core.pipeline.transport import RequestsTransport

from devtools.azurite import Azurite, AzuriteEndpoints
from shared import services as services_module
from shared.services import Services
from shared.settings import Settings
from simulators.eventgrid_sink import EventGridSink
from simulators.graph import GraphSimulator

logger = logging.getLogger(__name__)

T = TypeVar("T")

# The table a $batch's first sub-request names: "PATCH http://host/account/
# presence(PartitionKey=...)" or "POST http://host/account/presence HTTP/1.1".
_BATCH_TABLE = re.compile(
    rb"(?:GET|PUT|PATCH|MERGE|POST|DELETE) https?://[^/\s]+/[^/\s]+/(\w+)"
)


# ---- request counting ---------------------------------------------------


class RequestCounter:
    """Counts requests by kind, e.g. ``queue.send``, ``table.read``,
    ``table.transaction.subscriptions``. Thread-safe; install once."""

    def __init__(self, endpoints: AzuriteEndpoints) -> None:
        self._table_port = endpoints.table_port
        self._queue_port = endpoints.queue_port
        self._counts: Counter[str] = Counter()
        # Seconds spent waiting for the answers, by kind.
        self._seconds: dict[str, float] = {}
        self._lock = threading.Lock()
        self._original: Any = None

    def install(self) -> None:
        original = RequestsTransport.send
        counter = self

        def send(transport: Any, request: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(transport, request, **kwargs)
            finally:
                counter._record(request, time.perf_counter() - start)

        self._original = original
        RequestsTransport.send = send

    def uninstall(self) -> None:
        if self._original is not None:
            RequestsTransport.send = self._original
            self._original = None

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self._counts)

    def since(self, before: Counter[str]) -> Counter[str]:
        after = self.snapshot()
        after.subtract(before)
        return Counter({k: v for k, v in after.items() if v})

    def seconds(self) -> dict[str, float]:
        with self._lock:
            return dict(self._seconds)

    def seconds_since(self, before: dict[str, float]) -> dict[str, float]:
        return {k: v - before.get(k, 0.0) for k, v in self.seconds().items()}

    def _record(self, request: Any, seconds: float) -> None:
        kind = self._classify(request)
        with self._lock:
            self._counts[kind] += 1
            self._seconds[kind] = self._seconds.get(kind, 0.0) + seconds

    def _classify(self, request: Any) -> str:
        url = urlsplit(request.url)
        method = request.method.upper()
        path = url.path
        if url.port == self._table_port:
            if path.endswith("/$batch"):
                body = (
                    getattr(request, "data", None)
                    or getattr(request, "content", None)
                    or b""
                )
                match = _BATCH_TABLE.search(body if isinstance(body, bytes) else b"")
                table = match.group(1).decode() if match else "unknown"
                return f"table.transaction.{table}"
            if path.endswith("/Tables") or "/Tables(" in path:
                return "table.admin"
            table = path.rstrip("/").rsplit("/", 1)[-1].split("(", 1)[0]
            kind = "table.read" if method == "GET" else "table.write"
            return f"{kind}.{table}"
        if url.port == self._queue_port:
            if path.endswith("/messages"):
                return {"POST": "queue.send", "GET": "queue.receive"}.get(
                    method, "queue.other"
                )
            if "/messages/" in path and method == "DELETE":
                return "queue.delete"
            return "queue.other"
        return "other"


def total(counts: Counter[str], prefix: str) -> int:
    return sum(v for k, v in counts.items() if k.startswith(prefix))


# ---- environment --------------------------------------------------------


@dataclass
class Stack:
    endpoints: AzuriteEndpoints
    settings: Settings
    counter: RequestCounter
    graph: GraphSimulator | None
    sink: EventGridSink | None
    azurite_pid: int | None = None
    # The app settings as environment variables, for worker processes.
    env: dict[str, str] = field(default_factory=dict)

    def cpu(self) -> tuple[float, float]:
        """CPU seconds used so far by this process (all threads, simulators
        included) and by Azurite: on 2 cores their sum against the wall time
        shows whether a phase is CPU-bound."""
        return time.process_time(), process_cpu_seconds(self.azurite_pid)

    def services(self) -> Services:
        """A fresh composition root (one "instance") on this stack."""
        return Services(self.settings)


@contextmanager
def bench_stack(with_graph: bool, with_sink: bool, seed: int = 7) -> Iterator[Stack]:
    """Azurite (in memory, free ports) and, if asked, the Graph simulator and
    the Event Grid sink, all on loopback; everything stopped on exit."""
    with ExitStack() as stack:
        logger.info("starting Azurite")
        azurite = Azurite()
        endpoints = stack.enter_context(azurite)
        # The Node process itself (the .bin script execs node): read only to
        # report its CPU time.
        process = azurite._process
        azurite_pid = process.pid if process is not None else None
        env = {"AzureWebJobsStorage": endpoints.connection_string}
        graph = None
        if with_graph:
            ca_dir = stack.enter_context(tempfile.TemporaryDirectory())
            graph = stack.enter_context(GraphSimulator(ca_dir, seed=seed))
            env |= {
                "GRAPH_BASE_URL": graph.urls.base_url,
                "GRAPH_AUTHORITY_HOST": graph.urls.authority_host,
                "GRAPH_CLIENT_ID": graph.client_id,
                "GRAPH_CLIENT_SECRET": graph.client_secret,
                "GRAPH_CA_BUNDLE": graph.urls.ca_bundle,
            }
        sink = None
        if with_sink:
            # A throwaway key, never printed.
            sink = stack.enter_context(EventGridSink(secrets.token_urlsafe(24)))
            env |= {
                "EVENTGRID_TOPIC_ENDPOINT": sink.topic_endpoint,
                "EVENTGRID_TOPIC_KEY": sink.key,
            }
        counter = RequestCounter(endpoints)
        counter.install()
        stack.callback(counter.uninstall)
        yield Stack(
            endpoints,
            Settings.from_environ(env),
            counter,
            graph,
            sink,
            azurite_pid,
            env,
        )


def process_cpu_seconds(pid: int | None) -> float:
    """User plus system CPU seconds of another process (Linux /proc)."""
    if pid is None:
        return float("nan")
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    ticks = os.sysconf("SC_CLK_TCK")
    # utime and stime are fields 14 and 15 of stat; 12 and 13 after the ")".
    return (int(fields[11]) + int(fields[12])) / ticks


def use_for_handlers(services: Services | None) -> None:
    """The indexed handlers call ``get_services()``: hand them these services
    instead of letting them read settings from ``os.environ``."""
    services_module._services = services


# ---- the Functions host's side ----------------------------------------------
# devtools.indexed_functions calls the indexed functions as the host does.


# ---- measuring ------------------------------------------------------------


def timed(action: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    value = action()
    return value, time.perf_counter() - start


def peak_memory(action: Callable[[], T]) -> tuple[T, int]:
    """Result of ``action`` and the peak of Python allocations (bytes) made
    while it ran, above what was allocated before."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        baseline = tracemalloc.get_traced_memory()[0]
        value = action()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return value, peak - baseline


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Interrupts the main thread (KeyboardInterrupt) after ``seconds``, so a
    hung run still unwinds its context managers and stops Azurite."""

    def expire() -> None:
        logger.error("time limit of %.0f s reached; stopping", seconds)
        _thread.interrupt_main()

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def configure_logging(verbose: bool) -> None:
    # Progress from the benchmark; the product and SDKs only when they warn,
    # as their per-request INFO lines would cost more than some requests.
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s %(message)s"
    )
    # Run with -m, a benchmark's own logger is "__main__".
    for name in ("bench", "__main__"):
        logging.getLogger(name).setLevel(logging.INFO)
    if verbose:
        logging.getLogger("shared").setLevel(logging.INFO)


def load_average() -> str:
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "unknown"


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"
