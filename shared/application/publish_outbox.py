"""Publish recorded presence changes to Event Grid and clear them from the
outbox. Used right after a poll, and by the timer sweep for whatever a failed
publish or a killed worker left behind."""

from __future__ import annotations

import logging

from shared.adapters.eventgrid_publisher import EventGridPublisher, EventPublishError
from shared.adapters.presence_table import PresenceTable
from shared.adapters.shard_leases import ShardLeases
from shared.adapters.storage_errors import StorageError
from shared.adapters.tenant_directory import TenantDirectory
from shared.domain.presence import PresenceChange

logger = logging.getLogger(__name__)


class OutboxPublisher:
    def __init__(self, presence: PresenceTable, publisher: EventGridPublisher) -> None:
        self._presence = presence
        self._publisher = publisher

    def publish(self, tenant_id: str, shard: int, changes: list[PresenceChange]) -> int:
        """Publishes and clears ``changes``; returns how many were published.

        On failure the delivered prefix is cleared and the rest stays in the
        outbox for the sweep. A change published but not cleared (a crash in
        between) is published again with the same event id, which subscribers
        drop as a duplicate.
        """
        if not changes:
            return 0
        try:
            self._publisher.publish(changes)
            delivered = len(changes)
        except EventPublishError as error:
            delivered = error.delivered
            logger.warning(
                "shard %s/%d: %d of %d events left in the outbox for the sweep",
                tenant_id,
                shard,
                len(changes) - delivered,
                len(changes),
            )
        self._presence.delete_outbox(
            tenant_id, shard, [c.change_id for c in changes[:delivered]]
        )
        return delivered

    def sweep(self, tenant_id: str, shard: int) -> int:
        return self.publish(
            tenant_id, shard, self._presence.pending_outbox(tenant_id, shard)
        )


class OutboxSweep:
    """Timer sweep: republishes whatever any shard's outbox still holds."""

    def __init__(
        self, tenants: TenantDirectory, leases: ShardLeases, outbox: OutboxPublisher
    ) -> None:
        self._tenants = tenants
        self._leases = leases
        self._outbox = outbox

    def run(self) -> int:
        """A failing tenant is logged and the sweep goes on with the others;
        the run then fails, so the timer's failure is visible."""
        published = 0
        failed: list[str] = []
        for tenant_id in self._tenants.tenant_ids():
            try:
                for lease in self._leases.shards(tenant_id):
                    published += self._outbox.sweep(tenant_id, lease.number)
            except StorageError as error:
                logger.error("outbox sweep skipped tenant %s: %s", tenant_id, error)
                failed.append(tenant_id)
        logger.info("outbox sweep published %d left-over events", published)
        if failed:
            raise StorageError(f"sweep failed for {len(failed)} tenants: {failed[:5]}")
        return published
