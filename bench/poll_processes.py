"""Poll workers in several processes, as the Functions host runs them with
``FUNCTIONS_WORKER_PROCESS_COUNT`` > 1: one Python process holds one GIL, so
on 2 cores a single process cannot use the second core for the CPU work of
the SDKs, TLS and JSON.

Each worker process builds its own services from the same settings (one
"instance" each), drains the poll queue with its own threads, and reports
every poll result to the benchmark process, which decides when the cycle is
done. Storage requests and CPU time are counted in each process and reported
at the end of every cycle.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue as queue_module
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.context import SpawnProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

from bench.poll_drain import drain
from devtools.azurite import AzuriteEndpoints
from shared import settings as settings_module
from shared.adapters import storage_clients
from shared.application.poll_shard import PollResult
from shared.services import Services
from shared.settings import Settings

logger = logging.getLogger(__name__)

# Seconds to wait for a worker process to start or report.
_REPORT_TIMEOUT_S = 600


@dataclass
class DrainOutcome:
    results: list[PollResult] = field(default_factory=list)
    failures: int = 0
    # Counted in the worker processes, to add to the benchmark's own.
    storage: Counter[str] = field(default_factory=Counter)
    cpu_s: float = 0.0


def _worker_main(
    env: dict[str, str],
    endpoints: AzuriteEndpoints,
    threads: int,
    commands: Queue[str | None],
    reports: Queue[tuple[str, Any]],
    stop: Event,
) -> None:
    """One worker process: waits for a cycle, drains until told to stop,
    reports its counts; again, until told to exit (None)."""
    # Imported here: bench.common imports the simulators, which a worker
    # process does not need before it runs.
    from bench.common import RequestCounter

    logging.basicConfig(level=logging.WARNING)
    counter = RequestCounter(endpoints)
    counter.install()
    services = Services(Settings.from_environ(env))
    poll_queue = storage_clients.queue_client(
        services.settings.storage, settings_module.POLL_QUEUE
    )
    reports.put(("ready", None))
    while commands.get() is not None:
        counts_before, cpu_before = counter.snapshot(), time.process_time()
        _, failures = drain(
            services,
            poll_queue,
            lambda: 0 if stop.is_set() else None,
            threads,
            on_result=lambda result: reports.put(("result", result)),
        )
        reports.put(
            (
                "done",
                (
                    failures,
                    counter.since(counts_before),
                    time.process_time() - cpu_before,
                ),
            )
        )


class WorkerProcesses:
    """A fixed set of worker processes, reused across cycles."""

    def __init__(
        self, env: dict[str, str], endpoints: AzuriteEndpoints, count: int, threads: int
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self._commands: list[Queue[str | None]] = [
            context.Queue() for _ in range(count)
        ]
        self._reports: Queue[tuple[str, Any]] = context.Queue()
        self._stop = context.Event()
        self._processes: list[SpawnProcess] = [
            context.Process(
                target=_worker_main,
                args=(env, endpoints, threads, commands, self._reports, self._stop),
                name=f"poll-worker-process-{number}",
                daemon=True,
            )
            for number, commands in enumerate(self._commands)
        ]
        for process in self._processes:
            process.start()
        for _ in self._processes:
            kind, _ = self._next_report()
            assert kind == "ready", kind

    def drain(self, expected: Any) -> DrainOutcome:
        """Runs one cycle's drain in every process; ``expected()`` is the
        number of polls to wait for once known (None before)."""
        self._stop.clear()
        for commands in self._commands:
            commands.put("drain")
        outcome = DrainOutcome()
        while True:
            target = expected()
            if target is not None and len(outcome.results) >= target:
                break
            try:
                kind, payload = self._reports.get(timeout=0.05)
            except queue_module.Empty:
                continue
            assert kind == "result", kind
            outcome.results.append(payload)
        self._stop.set()
        finished = 0
        while finished < len(self._processes):
            kind, payload = self._next_report()
            if kind == "result":  # a poll that finished as the cycle ended
                outcome.results.append(payload)
                continue
            failures, storage, cpu_s = payload
            outcome.failures += failures
            outcome.storage += storage
            outcome.cpu_s += cpu_s
            finished += 1
        return outcome

    def close(self) -> None:
        for commands in self._commands:
            commands.put(None)
        for process in self._processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()

    def _next_report(self) -> tuple[str, Any]:
        return self._reports.get(timeout=_REPORT_TIMEOUT_S)
