"""The list of tenants with poll shards, and each tenant's Graph cool-down.

The fan-out walks this small table instead of scanning subscriptions, so its
cost grows with tenants and shards, never with agents. The cool-down is shared
by every instance: a 429 seen by one stops all of them calling that tenant.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, UpdateMode

from shared.adapters.storage_errors import StorageError

logger = logging.getLogger(__name__)

_PARTITION = "tenants"
_COOL_DOWN = "coolDownUntil"
_ATTEMPTS = 5


@dataclass(frozen=True)
class TenantEntry:
    tenant_id: str
    cool_down_until: datetime | None


class TenantDirectory:
    def __init__(self, client: TableClient) -> None:
        self._client = client

    def ensure(self, tenant_id: str) -> None:
        """Lists the tenant (one write; nothing changes if it is listed)."""
        try:
            self._client.create_entity(
                {"PartitionKey": _PARTITION, "RowKey": tenant_id}
            )
        except ResourceExistsError:
            return
        except AzureError as error:
            raise StorageError(f"tenant {tenant_id} not listed: {error}") from error
        logger.info("tenant %s listed for polling", tenant_id)

    def tenant_ids(self) -> Iterator[str]:
        return (entry.tenant_id for entry in self.tenants())

    def tenants(self) -> Iterator[TenantEntry]:
        """Streams the tenants page by page: memory stays flat however many."""
        try:
            for entity in self._client.query_entities(
                "PartitionKey eq @pk",
                parameters={"pk": _PARTITION},
                select=["RowKey", _COOL_DOWN],
                results_per_page=1000,
            ):
                cool_down = entity.get(_COOL_DOWN)
                yield TenantEntry(
                    entity["RowKey"],
                    cool_down if isinstance(cool_down, datetime) else None,
                )
        except AzureError as error:
            raise StorageError(f"tenants could not be listed: {error}") from error

    def cool_down(self, tenant_id: str, until: datetime) -> None:
        """Extends the tenant's cool-down to ``until``; never shortens it, so a
        short Retry-After seen by one instance cannot cut a long one short."""
        entity = {
            "PartitionKey": _PARTITION,
            "RowKey": tenant_id,
            _COOL_DOWN: until,
        }
        for _ in range(_ATTEMPTS):
            try:
                current = self._client.get_entity(_PARTITION, tenant_id)
            except ResourceNotFoundError:
                current = None
            except AzureError as error:
                raise StorageError(f"tenant {tenant_id} not read: {error}") from error
            if current is not None:
                stored = current.get(_COOL_DOWN)
                if isinstance(stored, datetime) and stored >= until:
                    return
            try:
                if current is None:
                    self._client.create_entity(entity)
                else:
                    self._client.update_entity(
                        entity,
                        mode=UpdateMode.MERGE,
                        etag=current.metadata["etag"],
                        match_condition=MatchConditions.IfNotModified,
                    )
            except (ResourceExistsError, ResourceModifiedError):
                continue  # another instance wrote first: compare again
            except AzureError as error:
                raise StorageError(
                    f"cool-down for {tenant_id} not stored: {error}"
                ) from error
            logger.info("tenant %s cooling down until %s", tenant_id, until.isoformat())
            return
        logger.warning("cool-down of tenant %s kept changing; left as is", tenant_id)

    def cool_down_until(self, tenant_id: str) -> datetime | None:
        try:
            entity = self._client.get_entity(_PARTITION, tenant_id)
        except ResourceNotFoundError:
            return None
        except AzureError as error:
            raise StorageError(f"tenant {tenant_id} not read: {error}") from error
        value = entity.get(_COOL_DOWN)
        return value if isinstance(value, datetime) else None
