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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.adapters.command_queue import MessageQueue
from shared.adapters.shard_leases import LeaseState, ShardLeases
from shared.adapters.storage_errors import StorageError
from shared.adapters.tenant_directory import TenantDirectory
from shared.domain.polling import PollRequest

logger = logging.getLogger(__name__)

# How long a queued poll message holds its shard. Longer than a normal queue
# wait; if the message is lost (enqueue failed, poisoned) the shard is free
# again after this.
QUEUED_LEASE = timedelta(minutes=2)


@dataclass
class FanOutResult:
    tenants: int = 0
    shards: int = 0
    enqueued: int = 0
    busy: int = 0


class PollFanOut:
    def __init__(
        self,
        tenants: TenantDirectory,
        leases: ShardLeases,
        poll_queue: MessageQueue,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        queued_lease: timedelta = QUEUED_LEASE,
    ) -> None:
        self._tenants = tenants
        self._leases = leases
        self._queue = poll_queue
        self._clock = clock
        self._queued_lease = queued_lease

    def run(self) -> FanOutResult:
        """Streams tenants and shards: memory stays flat however many.

        A storage failure for one tenant is logged and the others still get
        their polls; the run then fails, so the timer's failure is visible.
        """
        result = FanOutResult()
        failed: list[str] = []
        for tenant_id in self._tenants.tenant_ids():
            result.tenants += 1
            try:
                self._fan_out_tenant(tenant_id, result)
            except StorageError as error:
                logger.error("fan-out skipped tenant %s: %s", tenant_id, error)
                failed.append(tenant_id)
        logger.info(
            "fan-out: %d tenants, %d shards, %d poll messages, %d shards busy, "
            "%d tenants failed",
            result.tenants,
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

    def _fan_out_tenant(self, tenant_id: str, result: FanOutResult) -> None:
        for lease in self._leases.shards(tenant_id):
            if lease.member_count == 0:
                continue
            result.shards += 1
            now = self._clock()
            if lease.held_at(now):
                result.busy += 1
                continue
            token = str(uuid.uuid4())
            until = now + self._queued_lease
            if self._leases.take(lease, LeaseState.QUEUED, token, until) is None:
                # The apply step may have changed the members in between:
                # look again once rather than skip the shard this cycle.
                fresh = self._leases.read(tenant_id, lease.number)
                if (
                    fresh is None
                    or fresh.held_at(now)
                    or self._leases.take(fresh, LeaseState.QUEUED, token, until) is None
                ):
                    result.busy += 1
                    continue
            self._queue.send(PollRequest(tenant_id, lease.number, token).to_message())
            result.enqueued += 1
