"""Table Storage adapter for the presence read model and its outbox.

One partition per poll shard (``<tenantId>|<shard>``) holds the latest
presence of each member and the outbox of changes not yet published:

    p|<userId>            latest presence (read model)
    outbox|<changeId>     a change waiting for Event Grid

A presence row and its outbox row are written in one transaction, so a change
is either recorded and due for publishing, or not recorded at all.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from shared.adapters import table_transactions
from shared.adapters.storage_errors import MAX_TRANSACTION_ENTITIES, StorageError
from shared.domain.presence import Presence, PresenceChange, StoredPresence

logger = logging.getLogger(__name__)

PRESENCE_PREFIX = "p|"
OUTBOX_PREFIX = "outbox|"
# A change writes two entities: its presence row and its outbox row.
CHANGES_PER_TRANSACTION = MAX_TRANSACTION_ENTITIES // 2


def partition_key(tenant_id: str, shard: int) -> str:
    return f"{tenant_id}|{shard:05d}"


@dataclass
class ShardPresence:
    """Everything stored in one shard's partition, with ETags."""

    presence: dict[str, tuple[StoredPresence, str]] = field(default_factory=dict)
    outbox: list[PresenceChange] = field(default_factory=list)
    # Members Graph refused as unknown, and when: left out of polls for a while.
    not_found: dict[str, datetime] = field(default_factory=dict)
    # ETags of rows that exist, presence or not: a write must be guarded by it.
    etags: dict[str, str] = field(default_factory=dict)


class PresenceTable:
    def __init__(self, client: TableClient) -> None:
        self._client = client
        self.table_name = client.table_name

    def read_shard(self, tenant_id: str, shard: int) -> ShardPresence:
        """The whole partition in one query (at most 650 presence rows, plus
        any outbox rows still waiting)."""
        result = ShardPresence()
        try:
            entities = self._client.query_entities(
                "PartitionKey eq @pk",
                parameters={"pk": partition_key(tenant_id, shard)},
                results_per_page=1000,
            )
            for entity in entities:
                row_key: str = entity["RowKey"]
                if row_key.startswith(PRESENCE_PREFIX):
                    user_id = row_key[len(PRESENCE_PREFIX) :]
                    etag = str(entity.metadata["etag"])
                    result.etags[user_id] = etag
                    if entity.get("notFoundAt"):
                        result.not_found[user_id] = entity["notFoundAt"]
                    if entity.get("availability") is not None:
                        result.presence[user_id] = (_stored_from(entity), etag)
                elif row_key.startswith(OUTBOX_PREFIX):
                    result.outbox.append(change_from_json(entity["change"]))
        except AzureError as error:
            raise StorageError(
                f"presence of shard {tenant_id}/{shard} not read: {error}"
            ) from error
        return result

    def get(self, tenant_id: str, shard: int, user_id: str) -> StoredPresence | None:
        try:
            entity = self._client.get_entity(
                partition_key(tenant_id, shard), PRESENCE_PREFIX + user_id
            )
        except ResourceNotFoundError:
            return None
        except AzureError as error:
            raise StorageError(f"presence of {user_id} not read: {error}") from error
        if entity.get("availability") is None:
            return None  # only a not-found mark so far
        return _stored_from(entity)

    def pending_outbox(self, tenant_id: str, shard: int) -> list[PresenceChange]:
        try:
            return [
                change_from_json(entity["change"])
                for entity in self._client.query_entities(
                    "PartitionKey eq @pk and RowKey ge @o0 and RowKey lt @o1",
                    parameters={
                        "pk": partition_key(tenant_id, shard),
                        "o0": OUTBOX_PREFIX,
                        "o1": OUTBOX_PREFIX[:-1] + "}",
                    },
                )
            ]
        except AzureError as error:
            raise StorageError(
                f"outbox of shard {tenant_id}/{shard} not read: {error}"
            ) from error

    def record_changes(
        self, shard: int, changes: list[tuple[PresenceChange, str | None]]
    ) -> int:
        """Writes each change's presence row (guarded by the ETag it was read
        with, or inserted) and its outbox row; returns transactions made.

        Changes are written in transactions of at most 50; a conflict raises
        ConcurrencyConflictError and leaves that transaction unwritten.
        """
        transactions = 0
        for start in range(0, len(changes), CHANGES_PER_TRANSACTION):
            operations: list[Any] = []
            for change, etag in changes[start : start + CHANGES_PER_TRANSACTION]:
                operations.append(
                    table_transactions.guarded_write(
                        _presence_entity(shard, change), etag, UpdateMode.REPLACE
                    )
                )
                operations.append(("upsert", _outbox_entity(shard, change)))
            table_transactions.submit(self._client, operations)
            transactions += 1
        return transactions

    def mark_not_found(
        self, tenant_id: str, shard: int, user_id: str, when: datetime
    ) -> None:
        """Records that Graph refused the user as unknown."""
        try:
            self._client.upsert_entity(
                {
                    "PartitionKey": partition_key(tenant_id, shard),
                    "RowKey": PRESENCE_PREFIX + user_id,
                    "notFoundAt": when,
                },
                mode=UpdateMode.MERGE,
            )
        except AzureError as error:
            raise StorageError(
                f"not-found mark for {user_id} failed: {error}"
            ) from error

    def delete_outbox(self, tenant_id: str, shard: int, change_ids: list[str]) -> None:
        """Marks changes published by removing them from the outbox."""
        pk = partition_key(tenant_id, shard)
        for start in range(0, len(change_ids), MAX_TRANSACTION_ENTITIES):
            keys = change_ids[start : start + MAX_TRANSACTION_ENTITIES]
            operations: list[Any] = [
                ("delete", {"PartitionKey": pk, "RowKey": OUTBOX_PREFIX + key})
                for key in keys
            ]
            try:
                table_transactions.submit(self._client, operations)
            except table_transactions.RowNotFoundError:
                # Another worker or the sweep cleared some of them already.
                self._delete_each(pk, keys)

    def _delete_each(self, pk: str, change_ids: list[str]) -> None:
        for change_id in change_ids:
            try:
                # delete_entity treats a missing row as done.
                self._client.delete_entity(pk, OUTBOX_PREFIX + change_id)
            except AzureError as error:
                raise StorageError(
                    f"outbox row {change_id} not deleted: {error}"
                ) from error


def change_to_json(change: PresenceChange) -> str:
    previous = change.previous
    return json.dumps(
        {
            "tenantId": change.tenant_id,
            "userId": change.user_id,
            "availability": change.current.availability,
            "activity": change.current.activity,
            "sequenceNumber": change.current.sequence_number,
            "previous": None
            if previous is None
            else {
                "availability": previous.availability,
                "activity": previous.activity,
                "sequenceNumber": previous.sequence_number,
            },
            "observedAt": change.observed_at.isoformat(),
        }
    )


def change_from_json(text: str) -> PresenceChange:
    body = json.loads(text)
    previous = body.get("previous")
    return PresenceChange(
        tenant_id=body["tenantId"],
        user_id=body["userId"],
        current=Presence(
            body["availability"], body["activity"], body.get("sequenceNumber")
        ),
        previous=None
        if previous is None
        else Presence(
            previous["availability"],
            previous["activity"],
            previous.get("sequenceNumber"),
        ),
        observed_at=datetime.fromisoformat(body["observedAt"]),
    )


def _presence_entity(shard: int, change: PresenceChange) -> dict[str, Any]:
    entity: dict[str, Any] = {
        "PartitionKey": partition_key(change.tenant_id, shard),
        "RowKey": PRESENCE_PREFIX + change.user_id,
        "availability": change.current.availability,
        "activity": change.current.activity,
        "observedAt": change.observed_at,
    }
    if change.current.sequence_number:
        entity["sequenceNumber"] = change.current.sequence_number
    return entity


def _outbox_entity(shard: int, change: PresenceChange) -> dict[str, Any]:
    return {
        "PartitionKey": partition_key(change.tenant_id, shard),
        "RowKey": OUTBOX_PREFIX + change.change_id,
        "change": change_to_json(change),
    }


def _stored_from(entity: Any) -> StoredPresence:
    return StoredPresence(
        presence=Presence(
            entity["availability"], entity["activity"], entity.get("sequenceNumber")
        ),
        observed_at=entity["observedAt"],
    )
