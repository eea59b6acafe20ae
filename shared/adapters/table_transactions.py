"""Table transactions with optimistic concurrency, and the one place their
SDK errors are translated into the project's own."""

from __future__ import annotations

from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import AzureError
from azure.data.tables import TableClient, TableTransactionError, UpdateMode

from shared.adapters.storage_errors import (
    MAX_TRANSACTION_ENTITIES,
    ConcurrencyConflictError,
    StorageError,
)


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
    try:
        client.submit_transaction(operations)
    except TableTransactionError as error:
        failed = operations[min(error.index, len(operations) - 1)][1]
        if error.status_code in (409, 412):
            raise ConcurrencyConflictError(
                client.table_name, failed["PartitionKey"], failed["RowKey"]
            ) from error
        raise StorageError(
            f"transaction on {client.table_name} partition "
            f"{failed['PartitionKey']!r} failed at row {failed['RowKey']!r}: "
            f"{error.status_code} {error.message}"
        ) from error
    except AzureError as error:
        raise StorageError(f"transaction on {client.table_name}: {error}") from error
