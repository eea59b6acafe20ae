"""Table transactions with optimistic concurrency, and the one place their
SDK errors are translated into the project's own."""

from __future__ import annotations

import logging
import time
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.data.tables import TableClient, TableTransactionError, UpdateMode

from shared.adapters.storage_errors import (
    MAX_TRANSACTION_ENTITIES,
    ConcurrencyConflictError,
    StorageError,
)

logger = logging.getLogger(__name__)

# azure-core retries a POST ($batch) on no connection error, so a transaction
# sent on a pooled connection the server had just closed would fail at once.
_CONNECTION_RETRIES = 2
_CONNECTION_RETRY_PAUSE = 0.2


class RowNotFoundError(StorageError):
    """An operation of the transaction named a row that does not exist."""


def guarded_write(
    entity: dict[str, Any], etag: str | None, mode: UpdateMode
) -> tuple[Any, ...]:
    """Insert when the row was absent, else update only if it is unchanged
    since it was read with ``etag``."""
    if etag is None:
        return ("create", entity)
    # Without match_condition the SDK ignores the ETag and writes
    # unconditionally: the condition is what makes this optimistic.
    return (
        "update",
        entity,
        {"mode": mode, "etag": etag, "match_condition": MatchConditions.IfNotModified},
    )


def submit(client: TableClient, operations: list[Any]) -> None:
    """Runs the operations atomically (one partition, at most 100).

    Raises ConcurrencyConflictError, naming the row, when a guarded row changed
    or an inserted one appeared (412/409); nothing is written then.
    """
    if len(operations) > MAX_TRANSACTION_ENTITIES:
        # Azurite answers garbage past 100 rather than a clean error.
        raise ValueError(
            f"transaction of {len(operations)} entities exceeds "
            f"{MAX_TRANSACTION_ENTITIES}"
        )
    for attempt in range(_CONNECTION_RETRIES + 1):
        try:
            _submit_once(client, operations)
            return
        except (ServiceRequestError, ServiceResponseError) as error:
            # Safe to send again: every operation here is a create or an
            # ETag-guarded write, so a replay of a transaction that did commit
            # fails as a conflict (or, for deletes, a missing row), and the
            # callers re-read.
            if attempt == _CONNECTION_RETRIES:
                raise StorageError(
                    f"transaction on {client.table_name}: {error}"
                ) from error
            logger.warning(
                "transaction on %s lost its connection (%s); sending again",
                client.table_name,
                error,
            )
            time.sleep(_CONNECTION_RETRY_PAUSE * (attempt + 1))


def _submit_once(client: TableClient, operations: list[Any]) -> None:
    try:
        client.submit_transaction(operations)
    except TableTransactionError as error:
        failed = operations[min(error.index, len(operations) - 1)][1]
        if error.status_code in (409, 412):
            raise ConcurrencyConflictError(
                client.table_name, failed["PartitionKey"], failed["RowKey"]
            ) from error
        if error.status_code == 404:
            raise RowNotFoundError(
                f"transaction on {client.table_name}: row "
                f"{failed['RowKey']!r} does not exist"
            ) from error
        raise StorageError(
            f"transaction on {client.table_name} partition "
            f"{failed['PartitionKey']!r} failed at row {failed['RowKey']!r}: "
            f"{error.status_code} {error.message}"
        ) from error
    except (ServiceRequestError, ServiceResponseError):
        raise
    except AzureError as error:
        raise StorageError(f"transaction on {client.table_name}: {error}") from error
