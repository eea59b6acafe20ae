"""Publish recorded presence changes to Event Grid and clear them from the
outbox. Used right after a poll, and by the timer sweep for whatever a failed
publish or a killed worker left behind."""

from __future__ import annotations

import logging

from shared.adapters.eventgrid_publisher import EventGridPublisher, EventPublishError
from shared.adapters.presence_table import PresenceTable, ShardPresence
from shared.adapters.shard_leases import ShardLeases
from shared.adapters.storage_errors import StorageError
from shared.adapters.tenant_directory import TenantDirectory

logger = logging.getLogger(__name__)

_CLEAR_ATTEMPTS = 5


class OutboxPublisher:
    def __init__(self, presence: PresenceTable, publisher: EventGridPublisher) -> None:
        self._presence = presence
        self._publisher = publisher

    def publish_and_clear(self, stored: ShardPresence) -> int:
        """Publishes the shard's outbox and clears what was delivered; returns
        how many were published.

        On failure the delivered prefix is cleared and the rest stays in the
        outbox for the next poll or the sweep. A change published but not
        cleared (a crash in between) is published again with the same event
        id, which subscribers drop as a duplicate.
        """
        changes = stored.outbox
        if not changes:
            return 0
        try:
            self._publisher.publish(changes)
            delivered = len(changes)
        except EventPublishError as error:
            delivered = error.delivered
            logger.warning(
                "shard %s/%d: %d of %d events left in the outbox for the sweep",
                stored.tenant_id,
                stored.shard,
                len(changes) - delivered,
                len(changes),
            )
        self._clear(stored, {c.change_id for c in changes[:delivered]})
        return delivered

    def _clear(self, stored: ShardPresence, change_ids: set[str]) -> None:
        # The row may change between the read and the clear (the poll worker
        # recording, or the sweep clearing too): read again and clear again.
        for _ in range(_CLEAR_ATTEMPTS):
            if stored.etag is None:
                return  # nothing was ever recorded
            if self._presence.clear_published(stored, change_ids) is not None:
                return
            stored = self._presence.read_shard(stored.tenant_id, stored.shard)
        logger.warning(
            "shard %s/%d: published events not cleared after %d attempts; "
            "they will be published again under the same ids",
            stored.tenant_id,
            stored.shard,
            _CLEAR_ATTEMPTS,
        )

    def sweep(self, tenant_id: str, shard: int) -> int:
        return self.publish_and_clear(self._presence.read_shard(tenant_id, shard))


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
        for tenant in self._tenants.tenants():
            try:
                for lease in self._leases.of_tenant(tenant.tenant_id):
                    published += self._outbox.sweep(tenant.tenant_id, lease.number)
            except StorageError as error:
                logger.error(
                    "outbox sweep skipped tenant %s: %s", tenant.tenant_id, error
                )
                failed.append(tenant.tenant_id)
        logger.info("outbox sweep published %d left-over events", published)
        if failed:
            raise StorageError(f"sweep failed for {len(failed)} tenants: {failed[:5]}")
        return published
