"""Table Storage adapter for Idempotency-Key records.

A record holds the accepted command and the response given for it, so that a
retry of the same call, on any instance, gets the same answer and re-sends the
same command (which the apply step recognises by its version).

Records are kept for a retention period (24 hours by default), long enough
for any client's retries. After it a record counts as absent: the key may be
used again, and a daily purge deletes expired records so the table does not
grow without end (a batch command's record holds up to 64 KiB).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

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

DEFAULT_RETENTION = timedelta(hours=24)
_CREATED_AT = "createdAt"
_CREATE_ATTEMPTS = 4


@dataclass(frozen=True)
class IdempotencyRecord:
    fingerprint: str
    message: str
    response: str
    enqueued: bool


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _row_key(key: str) -> str:
    # Client keys may hold characters a RowKey forbids (/ \ # ?): hash them.
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class IdempotencyTable:
    def __init__(
        self,
        client: TableClient,
        retention: timedelta = DEFAULT_RETENTION,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._client = client
        self._retention = retention
        self._clock = clock

    def get(self, tenant_id: str, key: str) -> IdempotencyRecord | None:
        """The record of ``key``; None if there is none or it has expired."""
        entity = self._read(tenant_id, key)
        if entity is None or self._expired(entity):
            return None
        return IdempotencyRecord(
            fingerprint=entity["fingerprint"],
            message=_text(entity["message"]),
            response=entity["response"],
            enqueued=bool(entity.get("enqueued")),
        )

    def create(self, tenant_id: str, key: str, record: IdempotencyRecord) -> bool:
        """Stores the record unless a live one exists; False if one did. An
        expired record is replaced, guarded by its ETag, so of two instances
        reusing an expired key at once only one wins, and a purge in between
        makes it try again."""
        entity = {
            "PartitionKey": tenant_id,
            "RowKey": _row_key(key),
            "fingerprint": record.fingerprint,
            # Binary: a string property holds 32K characters, less than a
            # 1,000-id batch command; a binary one holds 64 KiB.
            "message": record.message.encode("utf-8"),
            "response": record.response,
            "enqueued": record.enqueued,
            _CREATED_AT: self._clock(),
        }
        for _ in range(_CREATE_ATTEMPTS):
            try:
                self._client.create_entity(entity)
                return True
            except ResourceExistsError:
                pass
            except AzureError as error:
                raise StorageError(f"idempotency record not stored: {error}") from error
            existing = self._read(tenant_id, key)
            if existing is None:
                continue  # purged since the create failed: create again
            if not self._expired(existing):
                return False
            try:
                self._client.update_entity(
                    entity,
                    mode=UpdateMode.REPLACE,
                    etag=existing.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
                return True
            except (ResourceModifiedError, ResourceNotFoundError):
                # Replaced or purged by someone else since the read: decide
                # again.
                continue
            except AzureError as error:
                raise StorageError(f"idempotency record not stored: {error}") from error
        raise StorageError(
            f"idempotency record of tenant {tenant_id} kept changing under "
            f"{_CREATE_ATTEMPTS} attempts"
        )

    def mark_enqueued(self, tenant_id: str, key: str) -> None:
        entity = {"PartitionKey": tenant_id, "RowKey": _row_key(key), "enqueued": True}
        try:
            self._client.update_entity(entity, mode=UpdateMode.MERGE)
        except AzureError as error:
            # Harmless: a later retry re-sends the same command, which the apply
            # step recognises and skips.
            logger.warning("idempotency record not marked enqueued: %s", error)

    def purge_expired(self) -> int:
        """Deletes the records past retention; returns how many. Each delete
        is guarded by the ETag read, so a key reused meanwhile survives.

        The query filters on a property, so the service reads the whole table:
        acceptable for a daily job, and the table holds one day of keys."""
        cutoff = self._clock() - self._retention
        deleted = 0
        try:
            for entity in self._client.query_entities(
                # "le": expired is created + retention <= now, as in _expired.
                f"{_CREATED_AT} le @cutoff",
                parameters={"cutoff": cutoff},
                select=["PartitionKey", "RowKey"],
            ):
                try:
                    self._client.delete_entity(
                        entity["PartitionKey"],
                        entity["RowKey"],
                        etag=entity.metadata["etag"],
                        match_condition=MatchConditions.IfNotModified,
                    )
                    deleted += 1
                except (ResourceModifiedError, ResourceNotFoundError):
                    continue  # reused or deleted meanwhile: leave it
        except AzureError as error:
            raise StorageError(
                f"idempotency purge stopped after {deleted} records: {error}"
            ) from error
        logger.info("purged %d expired idempotency records", deleted)
        return deleted

    def _read(self, tenant_id: str, key: str) -> Any:
        try:
            return self._client.get_entity(tenant_id, _row_key(key))
        except ResourceNotFoundError:
            return None
        except AzureError as error:
            raise StorageError(f"idempotency lookup failed: {error}") from error

    def _expired(self, entity: Any) -> bool:
        created = entity.get(_CREATED_AT)
        # A record without a time stamp cannot be aged: keep it.
        return isinstance(created, datetime) and (
            created + self._retention <= self._clock()
        )
