"""The project's own storage errors; Azure SDK errors are translated to these
at the adapter boundary so the application never sees an SDK type."""

from __future__ import annotations


class StorageError(RuntimeError):
    """Storage did not do what was asked (unreachable, or refused)."""


class ConcurrencyConflictError(StorageError):
    """A write lost an optimistic-concurrency race: the row changed (412) or
    appeared (409) since it was read. Nothing of the write was stored."""

    def __init__(self, table: str, partition_key: str, row_key: str) -> None:
        super().__init__(
            f"concurrent change to {table} row ({partition_key!r}, {row_key!r})"
        )
        self.table = table
        self.partition_key = partition_key
        self.row_key = row_key


MAX_TRANSACTION_ENTITIES = 100
