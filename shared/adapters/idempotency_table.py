"""Table Storage adapter for Idempotency-Key records.

A record holds the accepted command and the response given for it, so that a
retry of the same call, on any instance, gets the same answer and re-sends the
same command (which the apply step recognises by its version).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableClient, UpdateMode

from shared.adapters.storage_errors import StorageError

logger = logging.getLogger(__name__)


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
    def __init__(self, client: TableClient) -> None:
        self._client = client

    def get(self, tenant_id: str, key: str) -> IdempotencyRecord | None:
        try:
            entity = self._client.get_entity(tenant_id, _row_key(key))
        except ResourceNotFoundError:
            return None
        except AzureError as error:
            raise StorageError(f"idempotency lookup failed: {error}") from error
        return IdempotencyRecord(
            fingerprint=entity["fingerprint"],
            message=_text(entity["message"]),
            response=entity["response"],
            enqueued=bool(entity.get("enqueued")),
        )

    def create(self, tenant_id: str, key: str, record: IdempotencyRecord) -> bool:
        """Stores the record unless one exists; False if one already did."""
        entity = {
            "PartitionKey": tenant_id,
            "RowKey": _row_key(key),
            "fingerprint": record.fingerprint,
            # Binary: a string property holds 32K characters, less than a
            # 1,000-id batch command; a binary one holds 64 KiB.
            "message": record.message.encode("utf-8"),
            "response": record.response,
            "enqueued": record.enqueued,
            "createdAt": datetime.now(UTC),
        }
        try:
            self._client.create_entity(entity)
        except ResourceExistsError:
            return False
        except AzureError as error:
            raise StorageError(f"idempotency record not stored: {error}") from error
        return True

    def mark_enqueued(self, tenant_id: str, key: str) -> None:
        entity = {"PartitionKey": tenant_id, "RowKey": _row_key(key), "enqueued": True}
        try:
            self._client.update_entity(entity, mode=UpdateMode.MERGE)
        except AzureError as error:
            # Harmless: a later retry re-sends the same command, which the apply
            # step recognises and skips.
            logger.warning("idempotency record not marked enqueued: %s", error)
