"""Timer fan-out: one poll message per shard that is not already being polled.

Dividing the work over however many instances run needs no assignment: the
fan-out (run by one instance at a time, the timer's storage lock) puts one
message per shard on a queue, and whichever instances are alive take them.
A shard whose lease is held (its previous message still queued, or a worker
still polling) is skipped, so a slow cycle or a second timer firing never
doubles the work; a lease left by a crashed worker expires on its own.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.adapters.command_queue import MessageQueue
from shared.adapters.shard_leases import LeaseState, ShardLease, ShardLeases
from shared.adapters.storage_errors import MAX_TRANSACTION_ENTITIES, StorageError
from shared.adapters.tenant_directory import TenantDirectory, TenantEntry
from shared.domain.polling import PollRequest

logger = logging.getLogger(__name__)

# How long a queued poll message holds its shard. Longer than a normal queue
# wait; if the message is lost (enqueue failed, poisoned) the shard is free
# again after this.
QUEUED_LEASE = timedelta(minutes=2)
# Tenants fanned out at once. Each tenant's work is a chain of round trips
# (read its shards, take their leases, enqueue), so a few in parallel keep
# storage busy instead of waiting on one tenant at a time.
PARALLEL_TENANTS = 8


@dataclass
class FanOutResult:
    tenants: int = 0
    shards: int = 0
    enqueued: int = 0
    busy: int = 0
    cooling: int = 0  # tenants skipped because Graph asked them to wait

    def add(self, other: FanOutResult) -> None:
        self.tenants += other.tenants
        self.shards += other.shards
        self.enqueued += other.enqueued
        self.busy += other.busy
        self.cooling += other.cooling


class PollFanOut:
    def __init__(
        self,
        tenants: TenantDirectory,
        leases: ShardLeases,
        poll_queue: MessageQueue,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        queued_lease: timedelta = QUEUED_LEASE,
        parallel_tenants: int = PARALLEL_TENANTS,
    ) -> None:
        self._tenants = tenants
        self._leases = leases
        self._queue = poll_queue
        self._clock = clock
        self._queued_lease = queued_lease
        self._parallel_tenants = parallel_tenants

    def run(self) -> FanOutResult:
        """Streams tenants, a few at a time: memory stays flat however many.

        A storage failure for one tenant is logged and the others still get
        their polls; the run then fails, so the timer's failure is visible.
        """
        result = FanOutResult()
        failed: list[str] = []

        def collect(
            done: set[Future[FanOutResult]], tenant_of: dict[Future[FanOutResult], str]
        ) -> None:
            for future in done:
                tenant_id = tenant_of.pop(future)
                try:
                    result.add(future.result())
                except StorageError as error:
                    logger.error("fan-out skipped tenant %s: %s", tenant_id, error)
                    failed.append(tenant_id)

        with ThreadPoolExecutor(
            self._parallel_tenants, thread_name_prefix="fan-out"
        ) as pool:
            # Tenants are read as they are needed: at most twice the pool's
            # width waits in memory, however many tenants there are.
            tenant_of: dict[Future[FanOutResult], str] = {}
            for entry in self._tenants.tenants():
                if len(tenant_of) >= 2 * self._parallel_tenants:
                    done, _ = wait(tenant_of, return_when=FIRST_COMPLETED)
                    collect(done, tenant_of)
                tenant_of[pool.submit(self._fan_out_tenant, entry)] = entry.tenant_id
            collect(wait(tenant_of).done, tenant_of)
        logger.info(
            "fan-out: %d tenants (%d cooling down), %d shards, %d poll messages, "
            "%d shards busy, %d tenants failed",
            result.tenants,
            result.cooling,
            result.shards,
            result.enqueued,
            result.busy,
            len(failed),
        )
        if failed:
            raise StorageError(
                f"fan-out failed for {len(failed)} tenants: {failed[:5]}"
            )
        return result

    def _fan_out_tenant(self, tenant: TenantEntry) -> FanOutResult:
        result = FanOutResult(tenants=1)
        now = self._clock()
        if tenant.cool_down_until is not None and tenant.cool_down_until > now:
            # The poll would only find the tenant cooling down: skip the work.
            result.cooling = 1
            return result
        free: list[ShardLease] = []
        for lease in self._leases.of_tenant(tenant.tenant_id):
            if lease.member_count == 0:
                continue
            result.shards += 1
            if lease.held_at(now):
                result.busy += 1
            else:
                free.append(lease)
        tokens = {lease.number: str(uuid.uuid4()) for lease in free}
        until = now + self._queued_lease
        for start in range(0, len(free), MAX_TRANSACTION_ENTITIES):
            chunk = free[start : start + MAX_TRANSACTION_ENTITIES]
            # One transaction takes every free lease of the chunk; if any row
            # changed since it was read (the apply step moved members), take
            # them one by one instead.
            if self._leases.take_all(chunk, LeaseState.QUEUED, tokens, until):
                taken = chunk
            else:
                taken = [
                    lease
                    for lease in chunk
                    if self._take_one(lease, tokens[lease.number], until, now)
                ]
            result.busy += len(chunk) - len(taken)
            for lease in taken:
                request = PollRequest(
                    tenant.tenant_id, lease.number, tokens[lease.number]
                )
                self._queue.send(request.to_message())
                result.enqueued += 1
        return result

    def _take_one(
        self, lease: ShardLease, token: str, until: datetime, now: datetime
    ) -> bool:
        if self._leases.take(lease, LeaseState.QUEUED, token, until) is not None:
            return True
        # The apply step may have changed the members in between: look again
        # once rather than skip the shard this cycle.
        fresh = self._leases.lease(lease.tenant_id, lease.number)
        return (
            fresh is not None
            and fresh.member_count > 0
            and not fresh.held_at(now)
            and self._leases.take(fresh, LeaseState.QUEUED, token, until) is not None
        )
