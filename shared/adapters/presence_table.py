"""Table Storage adapter for the presence read model and its outbox.

One row per poll shard (partition ``<tenantId>|<shard>``, row ``snapshot``)
holds the shard's whole state: the latest presence of each member, the
outbox of changes not yet published, and the members set aside because Graph
did not know them (the document format is in ``presence_snapshot``).

Why one row rather than a row per member: a poll then costs one point read
and, only when something changed, one write, whatever the shard's size; and
a change and its outbox entry are in the same row, so they are recorded
together or not at all. Every write is guarded by the ETag the row was read
with (or is an insert when there was none), so of two writers one wins and
the other reads again.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, UpdateMode

from shared.adapters import presence_snapshot
from shared.adapters.presence_snapshot import Snapshot
from shared.adapters.storage_errors import ConcurrencyConflictError, StorageError
from shared.domain.presence import PresenceChange, StoredPresence

logger = logging.getLogger(__name__)

SNAPSHOT_ROW = "snapshot"
# Changes a shard's outbox holds at most. Beyond it a poll leaves further
# changes unrecorded (the next poll sees them again), which keeps the row far
# under the 1 MiB entity cap even while Event Grid is down for long.
OUTBOX_CAPACITY = 1000
# Well under the 1 MiB entity cap (strings count two bytes a character).
_MAX_SNAPSHOT_CHARS = 400_000


def partition_key(tenant_id: str, shard: int) -> str:
    return f"{tenant_id}|{shard:05d}"


@dataclass(frozen=True)
class ShardPresence:
    """A shard's snapshot as read, with the ETag that guards writing it back
    (None: the row does not exist yet)."""

    tenant_id: str
    shard: int
    snapshot: Snapshot = field(default_factory=Snapshot)
    etag: str | None = None

    @property
    def presence(self) -> Mapping[str, StoredPresence]:
        return self.snapshot.presence

    @property
    def outbox(self) -> list[PresenceChange]:
        return self.snapshot.outbox

    @property
    def not_found(self) -> Mapping[str, datetime]:
        return self.snapshot.not_found

    @property
    def outbox_room(self) -> int:
        return max(OUTBOX_CAPACITY - len(self.snapshot.outbox), 0)


class PresenceTable:
    def __init__(self, client: TableClient) -> None:
        self._client = client
        self.table_name = client.table_name

    def read_shard(self, tenant_id: str, shard: int) -> ShardPresence:
        """One point read; an empty snapshot if the shard was never polled."""
        try:
            entity = self._client.get_entity(
                partition_key(tenant_id, shard), SNAPSHOT_ROW
            )
        except ResourceNotFoundError:
            return ShardPresence(tenant_id, shard)
        except AzureError as error:
            raise StorageError(
                f"presence of shard {tenant_id}/{shard} not read: {error}"
            ) from error
        text = presence_snapshot.from_parts(entity)
        return ShardPresence(
            tenant_id,
            shard,
            presence_snapshot.decode(tenant_id, text),
            str(entity.metadata["etag"]),
        )

    def get(self, tenant_id: str, shard: int, user_id: str) -> StoredPresence | None:
        return self.read_shard(tenant_id, shard).presence.get(user_id)

    def record(
        self,
        stored: ShardPresence,
        changes: Iterable[PresenceChange],
        members: Collection[str],
        not_found: Mapping[str, datetime] | None = None,
        recovered: Collection[str] = (),
    ) -> ShardPresence:
        """Writes the changes into the read model and the outbox, marks
        ``not_found`` members and forgets that ``recovered`` ones were, in
        one write guarded by ``stored``'s ETag.

        Presence of users no longer in ``members`` is dropped on the way (a
        deregistered agent's presence leaves with it). The caller keeps the
        changes within ``stored.outbox_room``. Raises ConcurrencyConflictError
        if the row changed since it was read; nothing is written then.
        """
        snapshot = Snapshot(
            presence={
                user: presence
                for user, presence in stored.presence.items()
                if user in members
            },
            outbox=list(stored.outbox),
            not_found={
                user: when
                for user, when in stored.not_found.items()
                if user in members and user not in recovered
            },
        )
        for change in changes:
            snapshot.presence[change.user_id] = StoredPresence(
                change.current, change.observed_at
            )
            snapshot.outbox.append(change)
        snapshot.not_found.update(not_found or {})
        if len(snapshot.outbox) > OUTBOX_CAPACITY:
            raise ValueError(
                f"outbox of shard {stored.tenant_id}/{stored.shard} would hold "
                f"{len(snapshot.outbox)} changes, over {OUTBOX_CAPACITY}"
            )
        return self._write(stored, snapshot)

    def clear_published(
        self, stored: ShardPresence, change_ids: Collection[str]
    ) -> ShardPresence | None:
        """Removes published changes from the outbox; returns the shard as
        written, or None if the row changed meanwhile (re-read, then call
        again: change ids are stable, so clearing is idempotent)."""
        if not change_ids:
            return stored
        snapshot = Snapshot(
            presence=dict(stored.presence),
            outbox=[c for c in stored.outbox if c.change_id not in change_ids],
            not_found=dict(stored.not_found),
        )
        if len(snapshot.outbox) == len(stored.outbox):
            return stored  # someone else cleared them already
        try:
            return self._write(stored, snapshot)
        except ConcurrencyConflictError:
            return None

    def _write(self, stored: ShardPresence, snapshot: Snapshot) -> ShardPresence:
        text = presence_snapshot.encode(snapshot)
        if len(text) > _MAX_SNAPSHOT_CHARS:
            raise StorageError(
                f"presence snapshot of shard {stored.tenant_id}/{stored.shard} "
                f"is {len(text)} characters, over {_MAX_SNAPSHOT_CHARS}"
            )
        entity: dict[str, Any] = {
            "PartitionKey": partition_key(stored.tenant_id, stored.shard),
            "RowKey": SNAPSHOT_ROW,
            **presence_snapshot.to_parts(text),
        }
        try:
            if stored.etag is None:
                written = self._client.create_entity(entity)
            else:
                # REPLACE drops parts a shorter document no longer needs.
                # Without match_condition the SDK would ignore the ETag.
                written = self._client.update_entity(
                    entity,
                    mode=UpdateMode.REPLACE,
                    etag=stored.etag,
                    match_condition=MatchConditions.IfNotModified,
                )
        except (
            ResourceExistsError,
            ResourceModifiedError,
            ResourceNotFoundError,  # a guarded update of a row gone meanwhile
        ) as error:
            raise ConcurrencyConflictError(
                self.table_name, entity["PartitionKey"], SNAPSHOT_ROW
            ) from error
        except AzureError as error:
            raise StorageError(
                f"presence of shard {stored.tenant_id}/{stored.shard} not "
                f"written: {error}"
            ) from error
        return ShardPresence(
            stored.tenant_id, stored.shard, snapshot, str(written["etag"])
        )
