"""Leases on poll shard rows, so that one shard is never polled twice at once.

A lease lives on the shard row itself (in the tenant's subscriptions
partition) and is taken with the row's ETag: of two instances racing for it,
exactly one wins. It expires on its own, so a crashed holder blocks nothing
for longer than the lease. Writes merge only the lease columns, leaving the
membership columns to the apply step.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, TableEntity, UpdateMode

from shared.adapters import table_transactions
from shared.adapters.storage_errors import ConcurrencyConflictError, StorageError
from shared.adapters.subscription_table import (
    SHARD_COUNT,
    SHARD_PREFIX,
    TENANT_ROW,
    shard_key,
)

logger = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LEASE_COLUMNS = ["RowKey", "memberCount", "leaseState", "leaseToken", "leaseUntil"]


class LeaseState(StrEnum):
    IDLE = "idle"
    QUEUED = "queued"  # a poll message is on the queue
    POLLING = "polling"  # a worker is polling


@dataclass(frozen=True)
class ShardLease:
    tenant_id: str
    number: int
    member_count: int
    state: LeaseState
    token: str
    until: datetime
    etag: str
    members: tuple[str, ...] = ()

    def held_at(self, now: datetime) -> bool:
        return self.state is not LeaseState.IDLE and self.until > now


class ShardLeases:
    def __init__(self, client: TableClient) -> None:
        self._client = client

    def shards(self, tenant_id: str) -> Iterator[ShardLease]:
        """The tenant's shards with their lease columns, without members."""
        try:
            entities = self._client.query_entities(
                "PartitionKey eq @pk and RowKey ge @s0 and RowKey lt @s1",
                parameters={
                    "pk": tenant_id,
                    "s0": SHARD_PREFIX,
                    "s1": SHARD_PREFIX[:-1] + "}",
                },
                select=_LEASE_COLUMNS,
            )
            for entity in entities:
                yield _lease_from(tenant_id, entity)
        except AzureError as error:
            raise StorageError(f"shards of {tenant_id} not listed: {error}") from error

    def of_tenant(self, tenant_id: str) -> list[ShardLease]:
        """The tenant's shards, lease columns only, read by key: the tenant
        row gives their count, and a range query would make the service (and
        Azurite, which scans) walk the subscription rows too."""
        return [
            lease
            for number in range(self.shard_count(tenant_id))
            if (lease := self.lease(tenant_id, number)) is not None
        ]

    def shard_count(self, tenant_id: str) -> int:
        """One past the highest shard number the tenant has (a point read of
        the tenant row, which the apply step writes with every new shard)."""
        entity = self._get(tenant_id, TENANT_ROW, [SHARD_COUNT])
        # No row: the tenant has no shard yet (the row comes with the first).
        return int(entity.get(SHARD_COUNT) or 0) if entity is not None else 0

    def lease(self, tenant_id: str, number: int) -> ShardLease | None:
        """One shard's lease columns (a point read; members left out)."""
        entity = self._get(tenant_id, shard_key(number), _LEASE_COLUMNS)
        return None if entity is None else _lease_from(tenant_id, entity)

    def read(self, tenant_id: str, number: int) -> ShardLease | None:
        """One shard with its members."""
        entity = self._get(tenant_id, shard_key(number), None)
        if entity is None:
            return None
        members = entity.get("members") or ""
        lease = _lease_from(tenant_id, entity)
        return ShardLease(
            **{
                **lease.__dict__,
                "members": tuple(members.split(",") if members else ()),
            }
        )

    def _get(
        self, tenant_id: str, row_key: str, columns: list[str] | None
    ) -> TableEntity | None:
        try:
            return self._client.get_entity(tenant_id, row_key, select=columns)
        except ResourceNotFoundError:
            return None
        except AzureError as error:
            raise StorageError(f"{tenant_id}/{row_key} not read: {error}") from error

    def take_all(
        self,
        leases: list[ShardLease],
        state: LeaseState,
        tokens: dict[int, str],
        until: datetime,
    ) -> bool:
        """Sets the leases of one tenant's shards in one transaction (at most
        100), each guarded by the ETag it was read with: all are taken, or,
        if any row changed meanwhile, none (False)."""
        operations: list[Any] = [
            table_transactions.guarded_write(
                {
                    "PartitionKey": lease.tenant_id,
                    "RowKey": shard_key(lease.number),
                    "leaseState": state.value,
                    "leaseToken": tokens[lease.number],
                    "leaseUntil": until,
                },
                lease.etag,
                UpdateMode.MERGE,
            )
            for lease in leases
        ]
        try:
            table_transactions.submit(self._client, operations)
        except (ConcurrencyConflictError, table_transactions.RowNotFoundError):
            return False
        return True

    def take(
        self,
        lease: ShardLease,
        state: LeaseState,
        token: str,
        until: datetime,
        extra: dict[str, Any] | None = None,
    ) -> str | None:
        """Sets the lease if the row is unchanged since ``lease`` was read and
        returns the row's new ETag; None if another writer got there first."""
        entity = {
            "PartitionKey": lease.tenant_id,
            "RowKey": shard_key(lease.number),
            "leaseState": state.value,
            "leaseToken": token,
            "leaseUntil": until,
            **(extra or {}),
        }
        try:
            written = self._client.update_entity(
                entity,
                mode=UpdateMode.MERGE,
                etag=lease.etag,
                # Without the condition the ETag would be ignored.
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            return None
        except AzureError as error:
            raise StorageError(
                f"lease on shard {lease.tenant_id}/{lease.number} not written: {error}"
            ) from error
        return str(written["etag"])


def _lease_from(tenant_id: str, entity: TableEntity) -> ShardLease:
    until = entity.get("leaseUntil")
    return ShardLease(
        tenant_id=tenant_id,
        number=int(entity["RowKey"][len(SHARD_PREFIX) :]),
        member_count=int(entity.get("memberCount") or 0),
        state=LeaseState(entity.get("leaseState") or LeaseState.IDLE.value),
        token=entity.get("leaseToken") or "",
        until=until if isinstance(until, datetime) else _EPOCH,
        etag=str(entity.metadata["etag"]),
    )
