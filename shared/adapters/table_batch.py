"""The OData ``$batch`` wire format of one table transaction, built and parsed
by hand.

``TableClient.submit_transaction`` builds and parses the multipart envelope
with azure-core's ``email``-based machinery, which costs about 0.2 s of CPU
per 90-entity transaction. Here the envelope is plain string joining and the
answer a few byte splits; the request still goes through the SDK's own
pipeline, so its authentication (shared key or token), retry policy and pooled
transport all apply.

What goes on the wire mirrors the SDK (azure-data-tables 12.7.0, pinned in
requirements.txt): the same URLs with the same key quoting, the same entity
JSON from the SDK's own serializer, the same verbs (a merge is ``PATCH``, as
the SDK sends it) and ``If-Match`` rules.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from azure.core import MatchConditions
from azure.core.rest import HttpRequest
from azure.data.tables import TableClient, UpdateMode

# Private, but it is exactly how the SDK types entity properties (Edm.Int64,
# Edm.DateTime, Edm.Binary, Edm.Guid, None skipped). azure-data-tables is
# pinned in requirements.txt; re-check this import when the pin moves.
from azure.data.tables._serialize import _add_entity_properties

from shared.adapters.storage_errors import StorageError

logger = logging.getLogger(__name__)

_CRLF = "\r\n"
_OPTIONS = {
    "create": frozenset(),
    "upsert": frozenset({"mode"}),
    "update": frozenset({"mode", "etag", "match_condition"}),
    "delete": frozenset({"etag", "match_condition"}),
}
_BOUNDARY = re.compile(rb'boundary="?([^";\s]+)"?', re.IGNORECASE)
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})")
_INDEX_PREFIX = re.compile(r"^(\d+):")


class TransactionRejectedError(StorageError):
    """The service refused one operation of the transaction; nothing of the
    transaction was written."""

    def __init__(self, status: int, index: int, code: str, message: str) -> None:
        super().__init__(f"operation {index} refused: {status} {code} {message}")
        self.status = status
        self.index = index
        self.code = code
        self.message = message


@dataclass(frozen=True)
class _InnerResponse:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes


def submit(
    client: TableClient, operations: Sequence[Sequence[Any]]
) -> list[str | None]:
    """Runs the operations as one transaction and returns, per operation, the
    ETag of its row after the write (None for a delete).

    Raises TransactionRejectedError when an operation was refused, StorageError
    when the whole request was, ValueError for an operation it cannot build.
    Connection errors (ServiceRequestError, ServiceResponseError) pass through.
    """
    account_url = f"{client.scheme}://{client._primary_hostname}"  # as the SDK
    batch_boundary = f"batch_{uuid.uuid4()}"
    body = build_body(account_url, client.table_name, operations, batch_boundary)
    request = HttpRequest(
        "POST",
        f"{account_url}/$batch",
        headers={
            "x-ms-version": client.api_version,
            "DataServiceVersion": "3.0",
            "MaxDataServiceVersion": "3.0;NetFx",
            "Content-Type": f"multipart/mixed; boundary={batch_boundary}",
            "Accept": "application/json",
        },
        content=body,
    )
    # stream=True: otherwise the pipeline's ContentDecodePolicy tries to decode
    # the multipart answer itself and fails on its content type.
    response = client._client.send_request(request, stream=True)
    try:
        content = response.read()
    finally:
        response.close()
    if response.status_code != 202:
        code, message = _error_of(content)
        raise StorageError(
            f"transaction on {client.table_name} refused as a whole: "
            f"{response.status_code} {code} {message}".rstrip()
        )
    return parse_response(
        response.headers.get("Content-Type", ""), content, len(operations)
    )


# ---- request ------------------------------------------------------------


def build_body(
    account_url: str,
    table: str,
    operations: Sequence[Sequence[Any]],
    batch_boundary: str,
) -> bytes:
    """The multipart body: one changeset with one HTTP request per operation."""
    table_url = f"{account_url}/{quote(table, safe='')}"
    changeset = f"changeset_{uuid.uuid4()}"
    partition: str | None = None
    lines = [
        f"--{batch_boundary}",
        f"Content-Type: multipart/mixed; boundary={changeset}",
        "",
    ]
    for index, operation in enumerate(operations):
        kind, entity, options = _unpack(operation)
        if "PartitionKey" not in entity or "RowKey" not in entity:
            raise ValueError(f"operation {index}: entity has no PartitionKey/RowKey")
        if partition is None:
            partition = entity["PartitionKey"]
        elif entity["PartitionKey"] != partition:
            raise ValueError("all operations of a transaction need one PartitionKey")
        lines += [
            f"--{changeset}",
            "Content-Type: application/http",
            "Content-Transfer-Encoding: binary",
            # 1-based: Azurite numbers the failing part this way whatever was
            # sent, and the service echoes what was sent.
            f"Content-ID: {index + 1}",
            "",
            *_request_lines(table_url, kind, entity, options),
        ]
    lines += [f"--{changeset}--", "", f"--{batch_boundary}--", ""]
    # Everything is ASCII: URLs are percent-encoded and json.dumps escapes.
    return _CRLF.join(lines).encode("ascii")


def _unpack(operation: Sequence[Any]) -> tuple[str, Mapping[str, Any], dict[str, Any]]:
    if len(operation) not in (2, 3) or not isinstance(operation[0], str):
        raise ValueError(f"unsupported transaction operation: {operation!r}")
    kind = operation[0].lower()  # also takes TransactionOperation members
    if kind not in _OPTIONS:
        raise ValueError(f"unsupported transaction operation: {operation[0]!r}")
    options = dict(operation[2]) if len(operation) == 3 else {}
    unknown = set(options) - _OPTIONS[kind]
    if unknown:
        raise ValueError(f"unsupported options for {kind}: {sorted(unknown)}")
    return kind, operation[1], options


def _request_lines(
    table_url: str, kind: str, entity: Mapping[str, Any], options: dict[str, Any]
) -> list[str]:
    """The request line, headers, blank line and body of one operation."""
    if kind == "create":
        return _with_body(f"POST {table_url} HTTP/1.1", entity, if_match=None)
    row_url = _row_url(table_url, entity)
    if kind == "delete":
        return [
            f"DELETE {row_url} HTTP/1.1",
            "Accept: application/json;odata=minimalmetadata",
            "DataServiceVersion: 3.0",
            f"If-Match: {_if_match(entity, options)}",
            "",
            "",
        ]
    # Like the SDK, an upsert without a mode merges, and so does an update.
    mode = options.get("mode", UpdateMode.MERGE)
    if mode == UpdateMode.MERGE:
        verb = "PATCH"  # what the SDK sends for a merge; the service takes it
    elif mode == UpdateMode.REPLACE:
        verb = "PUT"
    else:
        raise ValueError(f"unsupported update mode: {mode!r}")
    # An upsert has no If-Match: that is what makes it insert a missing row.
    if_match = _if_match(entity, options) if kind == "update" else None
    return _with_body(f"{verb} {row_url} HTTP/1.1", entity, if_match)


def _with_body(
    request_line: str, entity: Mapping[str, Any], if_match: str | None
) -> list[str]:
    body = json.dumps(_add_entity_properties(entity))
    lines = [
        request_line,
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Accept: application/json;odata=minimalmetadata",
        # The new ETag comes in a header; the entity echoed back is not needed.
        "Prefer: return-no-content",
        "DataServiceVersion: 3.0",
    ]
    if if_match is not None:
        lines.append(f"If-Match: {if_match}")
    return [*lines, "", body]


def _row_url(table_url: str, entity: Mapping[str, Any]) -> str:
    # OData quoting (a quote doubled), then every reserved byte percent-encoded,
    # exactly as the SDK's generated request builders do.
    keys = [_odata_key(entity["PartitionKey"]), _odata_key(entity["RowKey"])]
    return f"{table_url}(PartitionKey='{keys[0]}',RowKey='{keys[1]}')"


def _odata_key(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError("PartitionKey and RowKey must be strings")
    return quote(key.replace("'", "''"), safe="")


def _if_match(entity: Mapping[str, Any], options: dict[str, Any]) -> str:
    """``*`` for an unconditional write, else the ETag the row must still have
    (the SDK's rules: an ETag only counts with IfNotModified)."""
    condition = options.get("match_condition") or MatchConditions.Unconditionally
    etag = options.get("etag")
    if condition == MatchConditions.IfNotModified:
        if not etag:  # the SDK falls back to a TableEntity's own ETag
            etag = getattr(entity, "metadata", {}).get("etag")
        if not etag:
            raise ValueError("IfNotModified needs an etag")
        return _quoted_etag(etag)
    if condition == MatchConditions.Unconditionally:
        if etag:
            # The SDK refuses this too; silently ignoring the ETag would turn
            # an intended guarded write into an unconditional one.
            raise ValueError("an etag needs match_condition=IfNotModified")
        return "*"
    raise ValueError(f"unsupported match condition: {condition!r}")


def _quoted_etag(etag: str) -> str:
    if etag.startswith(("W/", '"', "'")):
        return etag
    return f'"{etag}"'


# ---- response -----------------------------------------------------------


def parse_response(
    content_type: str, content: bytes, operations: int
) -> list[str | None]:
    """The ETag of each operation from a 202 answer, or TransactionRejectedError
    for the operation the service refused."""
    responses = _inner_responses(content_type.encode("latin-1"), content)
    for position, response in enumerate(responses):
        if not 200 <= response.status < 300:
            raise _rejection(response, position, operations)
    if len(responses) != operations:
        raise StorageError(
            f"transaction answered {len(responses)} responses for "
            f"{operations} operations"
        )
    # Answers come in the order of the requests.
    return [response.headers.get("etag") for response in responses]


def _inner_responses(content_type: bytes, content: bytes) -> list[_InnerResponse]:
    """Every ``application/http`` part of a multipart body, into nested
    multiparts (the changeset inside the batch), in order."""
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise StorageError(f"transaction answer is not multipart: {content_type!r}")
    delimiter = b"--" + match.group(1)
    responses: list[_InnerResponse] = []
    # Before the first delimiter is a preamble, after the last "--" an epilogue.
    for part in content.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        headers, body = _split_head(part.lstrip(b"\r\n"))
        part_type = headers.get("content-type", "")
        if part_type.lower().startswith("multipart/"):
            responses += _inner_responses(part_type.encode("latin-1"), body)
        elif part_type.lower().startswith("application/http"):
            responses.append(_http_response(body))
    return responses


def _http_response(message: bytes) -> _InnerResponse:
    head, body = _split_message(message.lstrip(b"\r\n"))
    status_line, _, header_block = head.partition(b"\n")
    status = _STATUS_LINE.match(status_line)
    if status is None:
        raise StorageError(f"transaction answer has a bad status line: {status_line!r}")
    return _InnerResponse(
        int(status.group(1)), _parse_headers(header_block), body.rstrip(b"\r\n")
    )


def _split_head(part: bytes) -> tuple[dict[str, str], bytes]:
    head, body = _split_message(part)
    return _parse_headers(head), body


def _split_message(message: bytes) -> tuple[bytes, bytes]:
    end = _HEADER_END.search(message)
    if end is None:
        return message, b""
    return message[: end.start()], message[end.end() :]


def _parse_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.decode("latin-1").splitlines():
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


def _rejection(
    response: _InnerResponse, position: int, operations: int
) -> TransactionRejectedError:
    code, message = _error_of(response.body)
    # The service names the refused operation by a "3:" prefix on the message
    # (0-based); failing that, by the Content-ID it was sent with (1-based).
    index: int | None = None
    prefix = _INDEX_PREFIX.match(message)
    if prefix is not None:
        index = int(prefix.group(1))
        message = message[prefix.end() :]
    elif response.headers.get("content-id", "").isdigit():
        index = int(response.headers["content-id"]) - 1
    elif operations > 1 and position == 0:
        logger.warning(
            "transaction refused (%s %s) without naming the operation; "
            "assuming the first",
            response.status,
            code,
        )
    if index is None or not 0 <= index < operations:
        index = position if position < operations else 0
    return TransactionRejectedError(response.status, index, code, message.strip())


def _error_of(body: bytes) -> tuple[str, str]:
    """The code and message of an OData (JSON) error body, or its raw text."""
    try:
        error = json.loads(body)["odata.error"]
        return str(error.get("code", "")), str(error["message"]["value"])
    except (ValueError, KeyError, TypeError):
        return "", body.decode("utf-8", "replace")[:500]
