"""Benchmark 2: one poll cycle at scale, and a naive poller for comparison.

    python -m bench.poll_cycle --subscriptions 100000 --tenants 50 \\
        --change 0.05 --latency-ms 100

A cycle is ``fan_out.run()`` with the poll queue drained by a pool of workers
alongside it, as the host's workers take messages as soon as they are
enqueued (the host runs many in parallel: batchSize 16 per instance). The
warm-up cycle runs the two one after the other, so that the fan-out's
memory peak is its own. The main
thread receives messages in pages of 32 and hands each to the pool, which
polls the shard and deletes the message once the poll returned, as the host
does. Graph calls are counted by the simulator, storage requests at the
transport, Event Grid requests by the sink.

The fan-out's memory is compared at ``--small`` subscriptions and at the full
count in the same run and process: the first ``--small`` registrations are
made, the fan-out measured (after an unmeasured run, so one-time allocations
are excluded), the leases handed back, then the rest registered.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient

from bench.common import (
    Stack,
    bench_stack,
    configure_logging,
    load_average,
    peak_memory,
    time_limit,
    timed,
    total,
    verdict,
)
from bench.poll_drain import drain
from bench.poll_processes import DrainOutcome, WorkerProcesses
from shared import settings as settings_module
from shared.adapters import storage_clients
from shared.adapters.eventgrid_publisher import EventGridPublisher
from shared.adapters.graph_presence import GraphPresenceClient
from shared.adapters.shard_leases import LeaseState
from shared.application.poll_shard import PollResult
from shared.domain.commands import Action, Change, SubscriptionCommand
from shared.domain.presence import Presence, StoredPresence, detect_change
from shared.domain.shards import SHARD_CAPACITY
from shared.domain.versions import VersionClock
from shared.services import Services

logger = logging.getLogger(__name__)

COMMAND_SIZE = 1000  # ids per batch command, the API's maximum
# Targets from the brief, on a 2-core machine.
MAX_CYCLE_S = 10.0
MAX_FAN_OUT_GROWTH_BYTES = 20 * 1024 * 1024
# host.json visibilityTimeout: how soon a failed message is seen again.
RETRY_S = 10
# How long a received message stays invisible (the host's default: 10 min).
VISIBILITY_S = 600
# Empty receives (0.2 s apart) before the drain gives up waiting.
MAX_IDLE_RECEIVES = 300


@dataclass
class Cycle:
    name: str
    fan_out_s: float = 0.0
    drain_s: float = 0.0
    enqueued: int = 0
    graph_calls: int = 0
    storage: Counter[str] = field(default_factory=Counter)
    eventgrid_requests: int = 0
    events: int = 0
    results: list[PollResult] = field(default_factory=list)
    cpu: tuple[float, float] = (0.0, 0.0)
    fan_out_peak_bytes: int | None = None
    failures: int = 0
    # Set when the drain ran alongside the fan-out: the whole cycle's time.
    overlapped_s: float | None = None

    @property
    def wall_s(self) -> float:
        if self.overlapped_s is not None:
            return self.overlapped_s
        return self.fan_out_s + self.drain_s


# ---- setup ------------------------------------------------------------------


def register(
    services: Services, assignments: list[tuple[str, list[str]]], threads: int
) -> None:
    """Batch commands of 1,000, as the API would enqueue them. Tenants go in
    parallel, each tenant's commands in turn: two batches for one tenant at
    once fight over its open shard row (see docs/benchmarks.md)."""
    clock = VersionClock()
    done = 0
    lock = threading.Lock()
    agents = sum(len(users) for _, users in assignments)

    def register_tenant(tenant: str, users: list[str]) -> None:
        nonlocal done
        for i in range(0, len(users), COMMAND_SIZE):
            command = SubscriptionCommand(
                command_id=str(uuid.uuid4()),
                tenant_id=tenant,
                version=clock.mint()[0],
                changes=tuple(
                    Change(u, Action.REGISTER) for u in users[i : i + COMMAND_SIZE]
                ),
            )
            services.applier.apply(command)
            with lock:
                before, done = done, done + len(command.changes)
                if done // 10_000 != before // 10_000 or done == agents:
                    logger.info("registered %d of %d", done, agents)

    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(register_tenant, t, u) for t, u in assignments]:
            future.result()


def release_all(services: Services, poll_queue: QueueClient) -> None:
    """Undo a fan-out: drop its messages and free its leases."""
    poll_queue.clear_messages()
    now = datetime.now(UTC)
    for tenant in services.tenants.tenant_ids():
        for lease in services.shard_leases.shards(tenant):
            services.shard_leases.take(lease, LeaseState.IDLE, "", now)


# ---- one cycle ---------------------------------------------------------------


Drainer = Callable[[Callable[[], int | None]], DrainOutcome]


def in_process_drainer(services: Services, queue: QueueClient, workers: int) -> Drainer:
    def run(expected: Callable[[], int | None]) -> DrainOutcome:
        results, failures = drain(services, queue, expected, workers)
        return DrainOutcome(results, failures)

    return run


def run_cycle(
    name: str,
    stack: Stack,
    services: Services,
    drainer: Drainer,
    measure_memory: bool = False,
) -> Cycle:
    assert stack.graph is not None and stack.sink is not None
    cycle = Cycle(name)
    stack.graph.reset_counters()
    requests_before = len(stack.sink.requests)
    events_before = len(stack.sink.events)
    storage_before = stack.counter.snapshot()
    cpu_before = stack.cpu()
    if measure_memory:
        # Alone, so that the peak is the fan-out's and nothing else's.
        (fan_out, cycle.fan_out_peak_bytes), cycle.fan_out_s = timed(
            lambda: peak_memory(services.fan_out.run)
        )
        cycle.enqueued = fan_out.enqueued
        drained, cycle.drain_s = timed(lambda: drainer(lambda: fan_out.enqueued))
    else:
        with ThreadPoolExecutor(1, thread_name_prefix="fan-out-timer") as timer:
            started = time.perf_counter()
            running = timer.submit(timed, services.fan_out.run)

            def enqueued() -> int | None:
                return running.result()[0].enqueued if running.done() else None

            drained, cycle.drain_s = timed(lambda: drainer(enqueued))
            result, cycle.fan_out_s = running.result()
            cycle.enqueued = result.enqueued
            # From the tick until the last poll is done.
            cycle.overlapped_s = time.perf_counter() - started
    cycle.results, cycle.failures = drained.results, drained.failures
    cpu_after = stack.cpu()
    cycle.cpu = (
        cpu_after[0] - cpu_before[0] + drained.cpu_s,
        cpu_after[1] - cpu_before[1],
    )
    cycle.storage = stack.counter.since(storage_before) + drained.storage
    cycle.graph_calls = stack.graph.count("presence")
    cycle.eventgrid_requests = len(stack.sink.requests) - requests_before
    cycle.events = len(stack.sink.events) - events_before
    logger.info("cycle %s: %.1f s", name, cycle.wall_s)
    return cycle


# ---- the naive poller, for comparison ----------------------------------------


@dataclass
class NaiveCycle:
    name: str
    wall_s: float
    graph_calls: int
    storage: Counter[str]
    eventgrid_requests: int


class NaivePoller:
    """What polling looks like without shards: per agent, one Graph call,
    one read of its stored presence, and on a change one write and one
    publish. Its own table, Graph client (own in-process budget) and
    publisher, so it shares nothing with the service's pipeline."""

    TABLE = "benchnaivepresence"

    def __init__(self, stack: Stack, workers: int) -> None:
        self._stack = stack
        self._workers = workers
        tables = storage_clients.table_service(stack.settings.storage)
        self._table = tables.create_table_if_not_exists(self.TABLE)
        self._graph = GraphPresenceClient(stack.settings.graph)
        self._publisher = EventGridPublisher(stack.settings.event_grid)

    def run(self, name: str, agents: list[tuple[str, str]]) -> NaiveCycle:
        stack = self._stack
        assert stack.graph is not None and stack.sink is not None
        requests_before = len(stack.sink.requests)
        storage_before = stack.counter.snapshot()
        with ThreadPoolExecutor(self._workers) as pool:
            _, wall = timed(lambda: list(pool.map(self._poll_one, agents)))
        return NaiveCycle(
            name,
            wall,
            stack.graph.count("presence"),
            stack.counter.since(storage_before),
            len(stack.sink.requests) - requests_before,
        )

    def _poll_one(self, agent: tuple[str, str]) -> None:
        tenant, user = agent
        observed = self._graph.get_presences(tenant, [user])
        now = datetime.now(UTC)
        try:
            entity = self._table.get_entity(tenant, user)
            stored: StoredPresence | None = StoredPresence(
                Presence(entity["availability"], entity["activity"]),
                entity["observedAt"],
            )
        except ResourceNotFoundError:
            stored = None
        for item in observed:
            change = detect_change(tenant, user, item.presence, now, stored)
            if change is None:
                continue
            self._table.upsert_entity(
                {
                    "PartitionKey": tenant,
                    "RowKey": user,
                    "availability": item.presence.availability,
                    "activity": item.presence.activity,
                    "observedAt": now,
                }
            )
            self._publisher.publish([change])


# ---- report -----------------------------------------------------------------


def describe(cycle: Cycle, minimum_calls: int) -> list[str]:
    storage = cycle.storage
    outcomes = Counter(r.outcome.name for r in cycle.results)
    python_cpu, azurite_cpu = cycle.cpu
    presence_tx = total(storage, "table.transaction.presence")
    return [
        f"## {cycle.name}",
        f"  wall {cycle.wall_s:.2f} s (fan-out {cycle.fan_out_s:.2f} s, "
        f"{cycle.enqueued} poll messages; drain {cycle.drain_s:.2f} s"
        f"{', alongside the fan-out' if cycle.overlapped_s is not None else ''}"
        "); CPU: "
        f"benchmark process (workers, SDKs, in-process Graph simulator and sink) "
        f"{python_cpu:.1f} s, Azurite {azurite_cpu:.1f} s",
        f"  poll outcomes {dict(outcomes)}; failed polls redelivered "
        f"{cycle.failures}; changes "
        f"{sum(r.changes for r in cycle.results)}, published "
        f"{sum(r.published for r in cycle.results)}",
        f"  Graph presence calls {cycle.graph_calls} (minimum {minimum_calls})",
        f"  table transactions: presence {presence_tx}, other "
        f"{total(storage, 'table.transaction') - presence_tx}",
        f"  single-row writes: {per_table(storage, 'table.write')}",
        f"  point reads and queries: {per_table(storage, 'table.read')}",
        f"  queue: sends {storage['queue.send']}, receives "
        f"{storage['queue.receive']}, deletes {storage['queue.delete']}",
        f"  Event Grid: {cycle.eventgrid_requests} requests, {cycle.events} events",
    ]


def per_table(storage: Counter[str], prefix: str) -> str:
    """E.g. ``presence 200, subscriptions 400`` for ``table.write``."""
    counts = {
        kind.removeprefix(prefix + "."): count
        for kind, count in sorted(storage.items())
        if kind.startswith(prefix + ".")
    }
    return ", ".join(f"{table} {count}" for table, count in counts.items()) or "none"


def describe_naive(
    cycles: list[NaiveCycle], sample: int, agents: int, tenants: int
) -> list[str]:
    scale = agents / sample
    lines = [
        f"## Naive poller (one Graph call per agent), measured on {sample} agents "
        f"({sample // tenants} per tenant), extrapolated x{scale:g} to {agents}",
    ]
    for cycle in cycles:
        lines.append(
            f"  {cycle.name}: measured {cycle.wall_s:.2f} s, Graph calls "
            f"{cycle.graph_calls}, table reads {total(cycle.storage, 'table.read')}, "
            f"table writes {total(cycle.storage, 'table.write')}, Event Grid "
            f"requests {cycle.eventgrid_requests} | EXTRAPOLATED: "
            f"{cycle.wall_s * scale:.0f} s, Graph calls "
            f"{cycle.graph_calls * scale:.0f}, table writes "
            f"{total(cycle.storage, 'table.write') * scale:.0f}, Event Grid requests "
            f"{cycle.eventgrid_requests * scale:.0f}"
        )
    per_tenant = agents // tenants
    lines.append(
        f"  quota: {per_tenant} calls per tenant per cycle against Graph's 1,500 "
        f"per 30 s: at least {per_tenant / 1500 * 30:.0f} s per cycle even with "
        "unbounded parallelism; past 1,500 in a window the simulator (like Graph) "
        "answers 429"
    )
    return lines


# ---- main -------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.poll_cycle")
    parser.add_argument("--subscriptions", type=int, default=100_000)
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--change", type=float, default=0.05)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument(
        "--workers", type=int, default=16, help="concurrent polls in all"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="worker processes sharing --workers (FUNCTIONS_WORKER_PROCESS_COUNT)",
    )
    parser.add_argument(
        "--small", type=int, default=10_000, help="fan-out memory comparison point"
    )
    parser.add_argument("--naive-sample", type=int, default=1000)
    parser.add_argument("--register-threads", type=int, default=2)
    parser.add_argument("--time-limit", type=float, default=2400.0)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    with time_limit(args.time_limit), bench_stack(True, True) as stack:
        report = measure(stack, args)
    print("\n".join(report))
    return 0


def measure(stack: Stack, args: argparse.Namespace) -> list[str]:
    assert stack.graph is not None and stack.sink is not None
    graph = stack.graph
    load_before = load_average()
    services = stack.services()
    queue = storage_clients.queue_client(
        stack.settings.storage, settings_module.POLL_QUEUE
    )
    per_tenant = [
        args.subscriptions // args.tenants
        + (1 if i < args.subscriptions % args.tenants else 0)
        for i in range(args.tenants)
    ]
    tenants = [graph.add_tenant(user_count=n) for n in per_tenant]
    users = {t: graph.user_ids(t) for t in tenants}
    minimum_calls = sum(math.ceil(n / SHARD_CAPACITY) for n in per_tenant)
    small_share = args.small / args.subscriptions

    logger.info(
        "registering %d subscriptions (first %d)", args.subscriptions, args.small
    )
    first = [(t, users[t][: round(len(users[t]) * small_share)]) for t in tenants]
    _, register_small_s = timed(
        lambda: register(services, first, args.register_threads)
    )
    small_count = sum(len(u) for _, u in first)
    services.fan_out.run()  # unmeasured: one-time allocations happen here
    release_all(services, queue)
    _, small_peak = peak_memory(services.fan_out.run)
    release_all(services, queue)
    rest = [(t, users[t][len(done) :]) for t, done in first]
    _, register_rest_s = timed(lambda: register(services, rest, args.register_threads))

    graph.set_latency_ms(args.latency_ms)
    with ExitStack() as cleanup:
        if args.processes > 1:
            # The same total concurrency, spread over the processes.
            pool = WorkerProcesses(
                stack.env,
                stack.endpoints,
                args.processes,
                math.ceil(args.workers / args.processes),
            )
            cleanup.callback(pool.close)
            drainer: Drainer = pool.drain
        else:
            drainer = in_process_drainer(services, queue, args.workers)
        warm = run_cycle(
            "Warm-up cycle (first observation: everyone is a change)",
            stack,
            services,
            drainer,
            measure_memory=True,
        )
        graph.set_change_rate(args.change)
        changed_users = graph.advance()
        changed = run_cycle(
            f"Measured cycle with changes ({changed_users} users changed)",
            stack,
            services,
            drainer,
        )
        graph.set_change_rate(0.0)
        quiet = run_cycle("Measured cycle without changes", stack, services, drainer)

    logger.info("naive poller on %d agents", args.naive_sample)
    naive = run_naive(stack, tenants, users, args)

    big_peak = warm.fan_out_peak_bytes or 0
    growth = big_peak - small_peak
    lines = [
        "# Poll cycle benchmark",
        f"date {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; python "
        f"{sys.version.split()[0]}; load average before {load_before}, after "
        f"{load_average()}",
        f"{args.subscriptions} subscriptions over {args.tenants} tenants; change "
        f"rate {args.change}; Graph latency {args.latency_ms:g} ms; "
        f"{args.workers} poll workers in {args.processes} process(es)",
        f"registration: {small_count} in {register_small_s:.0f} s, the other "
        f"{args.subscriptions - small_count} in {register_rest_s:.0f} s "
        f"({args.subscriptions / (register_small_s + register_rest_s):.0f} "
        "agents/s, batch commands applied directly)",
        "",
        *describe(warm, minimum_calls),
        "",
        *describe(changed, minimum_calls),
        "",
        *describe(quiet, minimum_calls),
        "",
        "## Fan-out memory (tracemalloc peak during fan_out.run())",
        f"  {small_count} subscriptions: {small_peak / 1024:.0f} KiB; "
        f"{args.subscriptions}: {big_peak / 1024:.0f} KiB; growth "
        f"{growth / 1024:.0f} KiB",
        "",
        *describe_naive(naive, args.naive_sample, args.subscriptions, args.tenants),
        "",
        "## Targets",
    ]
    for cycle in (changed, quiet):
        lines.append(
            f"  {cycle.name}: Graph calls = minimum ({cycle.graph_calls} vs "
            f"{minimum_calls}): {verdict(cycle.graph_calls == minimum_calls)}; "
            f"within {MAX_CYCLE_S:g} s ({cycle.wall_s:.2f} s): "
            f"{verdict(cycle.wall_s <= MAX_CYCLE_S)}"
        )
    quiet_writes = total(quiet.storage, "table.transaction.presence") + total(
        quiet.storage, "table.write.presence"
    )
    lines += [
        f"  no changes: presence writes {quiet_writes}, publishes "
        f"{quiet.eventgrid_requests}: "
        f"{verdict(quiet_writes == 0 and quiet.eventgrid_requests == 0)} "
        f"(lease writes are not presence writes: "
        f"{total(quiet.storage, 'table.write.subscriptions')})",
        f"  fan-out memory growth {small_count} -> {args.subscriptions} "
        f"<= 20 MiB ({growth / 1024 / 1024:.2f} MiB): "
        f"{verdict(growth <= MAX_FAN_OUT_GROWTH_BYTES)}",
    ]
    return lines


def run_naive(
    stack: Stack,
    tenants: list[str],
    users: dict[str, list[str]],
    args: argparse.Namespace,
) -> list[NaiveCycle]:
    """Three naive cycles (first sight, with changes, without) on a sample
    spread evenly over the tenants, so no tenant nears its quota."""
    assert stack.graph is not None
    graph = stack.graph
    per_tenant = max(1, args.naive_sample // len(tenants))
    sample = [(t, u) for t in tenants for u in users[t][:per_tenant]]
    poller = NaivePoller(stack, args.workers)

    def changing() -> None:
        graph.set_change_rate(args.change)
        graph.advance()

    def cycle(name: str, before: Callable[[], object]) -> NaiveCycle:
        before()
        graph.reset_counters()
        return poller.run(name, sample)

    return [
        cycle("first sight", lambda: None),
        cycle("with changes", changing),
        cycle("without changes", lambda: graph.set_change_rate(0.0)),
    ]


if __name__ == "__main__":
    sys.exit(main())
