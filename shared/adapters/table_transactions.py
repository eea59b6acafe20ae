"""Table transactions with optimistic concurrency, and the one place their
errors are translated into the project's own.

The envelope is built by ``table_batch`` rather than
``TableClient.submit_transaction``: the SDK's multipart handling costs ten
times the CPU (measured in ``docs/benchmarks.md``) and the command path and
the poll cycle are CPU-bound on it."""

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
from azure.data.tables import TableClient, UpdateMode

from shared.adapters import table_batch
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


def submit(client: TableClient, operations: list[Any]) -> list[str | None]:
    """Runs the operations atomically (one partition, at most 100) and returns
    the new ETag of each written row, in order (None for a delete).

    Raises ConcurrencyConflictError, naming the row, when a guarded row changed
    or an inserted one appeared (412/409); nothing is written then.
    """
    if len(operations) > MAX_TRANSACTION_ENTITIES:
        # Azurite answers garbage past 100 rather than a clean error.
        raise ValueError(
            f"transaction of {len(operations)} entities exceeds "
            f"{MAX_TRANSACTION_ENTITIES}"
        )
    attempt = 0
    while True:
        try:
            return _submit_once(client, operations)
        except (ServiceRequestError, ServiceResponseError) as error:
            # Safe to send again: every operation here is a create or an
            # ETag-guarded write, so a replay of a transaction that did commit
            # fails as a conflict (or, for deletes, a missing row), and the
            # callers re-read.
            if attempt >= _CONNECTION_RETRIES:
                raise StorageError(
                    f"transaction on {client.table_name}: {error}"
                ) from error
            logger.warning(
                "transaction on %s lost its connection (%s); sending again",
                client.table_name,
                error,
            )
            attempt += 1
            time.sleep(_CONNECTION_RETRY_PAUSE * attempt)


def _submit_once(client: TableClient, operations: list[Any]) -> list[str | None]:
    try:
        return table_batch.submit(client, operations)
    except table_batch.TransactionRejectedError as error:
        failed = operations[min(error.index, len(operations) - 1)][1]
        if error.status in (409, 412):
            raise ConcurrencyConflictError(
                client.table_name, failed["PartitionKey"], failed["RowKey"]
            ) from error
        if error.status == 404:
            raise RowNotFoundError(
                f"transaction on {client.table_name}: row "
                f"{failed['RowKey']!r} does not exist"
            ) from error
        raise StorageError(
            f"transaction on {client.table_name} partition "
            f"{failed['PartitionKey']!r} failed at row {failed['RowKey']!r}: "
            f"{error.status} {error.code} {error.message}"
        ) from error
    except (ServiceRequestError, ServiceResponseError):
        raise
    except AzureError as error:
        raise StorageError(f"transaction on {client.table_name}: {error}") from error
