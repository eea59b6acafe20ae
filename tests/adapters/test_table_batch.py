"""The hand-built ``$batch`` envelope against Azurite: every operation kind
stores what the SDK's own ``submit_transaction`` stores, refusals name the
operation, and a refused transaction writes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.core import MatchConditions
from azure.data.tables import (
    EdmType,
    EntityProperty,
    TableClient,
    TableServiceClient,
    UpdateMode,
)

from shared.adapters import table_batch
from shared.adapters.storage_errors import ConcurrencyConflictError
from shared.adapters.table_transactions import RowNotFoundError, submit

# Every property type the project stores, and the awkward key characters.
_PROPERTIES: dict[str, Any] = {
    "text": "naïve 'quoted' \"text\" & <more>",
    "count": 7,
    "big": EntityProperty(2**40, EdmType.INT64),
    "ratio": 0.25,
    "flag": True,
    "blob": b"\x00\x01binary",
    "when": datetime(2026, 12, 3, 15, 51, 48, 123456, tzinfo=UTC),
    "absent": None,
}
# Keys may not hold /, a backslash, # or ? (the service refuses them); the rest must
# survive the URL quoting.
_AWKWARD_KEY = "it's a key with %odd&chars+=|é"


@pytest.fixture
def table(storage_connection: str) -> Iterator[TableClient]:
    service = TableServiceClient.from_connection_string(storage_connection)
    client = service.create_table(f"batch{uuid.uuid4().hex[:12]}")
    yield client
    service.delete_table(client.table_name)


def _stored(table: TableClient, partition: str) -> dict[str, dict[str, Any]]:
    rows = table.query_entities("PartitionKey eq @p", parameters={"p": partition})
    return {row["RowKey"]: dict(row) for row in rows}


def _without_partition(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        key: {name: value for name, value in row.items() if name != "PartitionKey"}
        for key, row in rows.items()
    }


def _operations(partition: str, etags: dict[str, str]) -> list[Any]:
    """One of each kind, on rows seeded by ``_seed``."""
    guarded = {"match_condition": MatchConditions.IfNotModified}
    return [
        ("create", {"PartitionKey": partition, "RowKey": "new", **_PROPERTIES}),
        (
            "upsert",
            {"PartitionKey": partition, "RowKey": "merged", "extra": 1},
            {"mode": UpdateMode.MERGE},
        ),
        (
            "upsert",
            {"PartitionKey": partition, "RowKey": "replaced", "only": "this"},
            {"mode": UpdateMode.REPLACE},
        ),
        (
            "update",
            {"PartitionKey": partition, "RowKey": _AWKWARD_KEY, "text": "updated"},
            {"mode": UpdateMode.MERGE, "etag": etags[_AWKWARD_KEY], **guarded},
        ),
        (
            "update",
            {"PartitionKey": partition, "RowKey": "swapped", "count": 9},
            {"mode": UpdateMode.REPLACE, "etag": etags["swapped"], **guarded},
        ),
        (
            "delete",
            {"PartitionKey": partition, "RowKey": "gone"},
            {"etag": etags["gone"], **guarded},
        ),
    ]


def _seed(table: TableClient, partition: str) -> dict[str, str]:
    etags = {}
    for key in ("merged", "replaced", _AWKWARD_KEY, "swapped", "gone"):
        written = table.create_entity(
            {"PartitionKey": partition, "RowKey": key, **_PROPERTIES}
        )
        etags[key] = written["etag"]
    return etags


def test_every_operation_kind_stores_what_the_sdk_stores(table: TableClient) -> None:
    table.submit_transaction(_operations("sdk", _seed(table, "sdk")))

    table_batch.submit(table, _operations("lean", _seed(table, "lean")))

    assert _without_partition(_stored(table, "lean")) == _without_partition(
        _stored(table, "sdk")
    )
    assert "gone" not in _stored(table, "lean")
    assert _stored(table, "lean")["replaced"].keys() == {
        "PartitionKey",
        "RowKey",
        "only",
    }


def test_the_returned_etags_are_those_the_rows_now_have(table: TableClient) -> None:
    operations = _operations("p", _seed(table, "p"))

    etags = table_batch.submit(table, operations)

    keys = [operation[1]["RowKey"] for operation in operations]
    expected = [
        None if key == "gone" else table.get_entity("p", key).metadata["etag"]
        for key in keys
    ]
    assert etags == expected


def test_a_stale_etag_is_refused_by_index_and_nothing_is_written(
    table: TableClient,
) -> None:
    etags = _seed(table, "p")
    table.update_entity({"PartitionKey": "p", "RowKey": "swapped", "count": 1})
    before = _stored(table, "p")

    with pytest.raises(table_batch.TransactionRejectedError) as refused:
        table_batch.submit(table, _operations("p", etags))

    assert (refused.value.status, refused.value.index) == (412, 4)
    assert _stored(table, "p") == before


def test_a_duplicate_create_is_refused_by_index(table: TableClient) -> None:
    table.create_entity({"PartitionKey": "p", "RowKey": "b"})
    operations = [
        ("create", {"PartitionKey": "p", "RowKey": "a"}),
        ("create", {"PartitionKey": "p", "RowKey": "b"}),
    ]

    with pytest.raises(table_batch.TransactionRejectedError) as refused:
        table_batch.submit(table, operations)

    assert (refused.value.status, refused.value.index) == (409, 1)
    assert set(_stored(table, "p")) == {"b"}


def test_conflicts_and_missing_rows_become_the_projects_errors(
    table: TableClient,
) -> None:
    table.create_entity({"PartitionKey": "p", "RowKey": "taken"})

    with pytest.raises(ConcurrencyConflictError, match="taken"):
        submit(table, [("create", {"PartitionKey": "p", "RowKey": "taken"})])
    with pytest.raises(RowNotFoundError, match="missing"):
        submit(
            table,
            [
                (
                    "delete",
                    {"PartitionKey": "p", "RowKey": "missing"},
                    {"etag": 'W/"x"', "match_condition": MatchConditions.IfNotModified},
                )
            ],
        )


@pytest.mark.parametrize(
    ("operations", "problem"),
    [
        (
            [
                ("create", {"PartitionKey": "a", "RowKey": "1"}),
                ("create", {"PartitionKey": "b", "RowKey": "1"}),
            ],
            "one PartitionKey",
        ),
        (
            [("update", {"PartitionKey": "a", "RowKey": "1"}, {"etag": 'W/"x"'})],
            "IfNotModified",
        ),
        ([("insert", {"PartitionKey": "a", "RowKey": "1"})], "unsupported"),
        ([("create", {"RowKey": "1"})], "PartitionKey"),
    ],
)
def test_an_operation_it_cannot_build_is_refused_before_sending(
    table: TableClient, operations: list[Any], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        table_batch.submit(table, operations)

    assert list(table.list_entities()) == []


def test_the_refused_operation_is_read_from_the_services_message_prefix() -> None:
    # Azure Storage names the refused operation as "<index>:" in the message.
    answer = (
        b"--batchresponse_1\r\n"
        b"Content-Type: multipart/mixed; boundary=changesetresponse_2\r\n\r\n"
        b"--changesetresponse_2\r\n"
        b"Content-Type: application/http\r\n"
        b"Content-Transfer-Encoding: binary\r\n\r\n"
        b"HTTP/1.1 412 Precondition Failed\r\n"
        b"Content-Type: application/json;odata=minimalmetadata;charset=utf-8\r\n"
        b"\r\n"
        b'{"odata.error":{"code":"UpdateConditionNotSatisfied","message":'
        b'{"lang":"en-US","value":"2:The update condition specified in the '
        b'request was not satisfied."}}}\r\n'
        b"--changesetresponse_2--\r\n"
        b"--batchresponse_1--\r\n"
    )

    with pytest.raises(table_batch.TransactionRejectedError) as refused:
        table_batch.parse_response(
            "multipart/mixed; boundary=batchresponse_1", answer, 3
        )

    assert (refused.value.status, refused.value.index) == (412, 2)
    assert refused.value.code == "UpdateConditionNotSatisfied"
