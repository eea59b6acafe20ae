"""Parsing and validation of API requests into domain values.

Every rejection is a Problem naming the offending field; nothing is enqueued
for a request that fails here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.api import problems
from shared.domain.commands import MAX_BATCH_IDS, Action, Change
from shared.domain.ids import InvalidIdError, parse_guid
from shared.domain.subscriptions import SubscriptionState
from shared.domain.versions import InvalidVersionError, parse_version

MAX_BODY_BYTES = 256 * 1024
MAX_IDEMPOTENCY_KEY_LENGTH = 255
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# "code" carries the function key on FUNCTION-level routes.
_HOST_QUERY_PARAMS = {"code"}


def guid(value: str, field_name: str) -> str:
    try:
        return parse_guid(value, field_name)
    except InvalidIdError as error:
        raise problems.invalid_field(field_name, str(error)) from None


def no_body(body: bytes) -> None:
    if body.strip():
        raise problems.invalid_field("body", "this call takes no body")


def reject_query_params(params: Mapping[str, str], allowed: set[str]) -> None:
    unknown = sorted(set(params) - allowed - _HOST_QUERY_PARAMS)
    if unknown:
        raise problems.invalid_field(
            unknown[0], f"unknown query parameter {unknown[0]!r}"
        )


def json_body(body: bytes, content_type: str | None) -> Any:
    if len(body) > MAX_BODY_BYTES:
        raise problems.body_too_large(MAX_BODY_BYTES)
    media_type = (content_type or "application/json").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise problems.unsupported_media_type(content_type or "")
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise problems.malformed_body(f"body is not valid JSON: {error}") from None


def batch_changes(payload: Any) -> tuple[Change, ...]:
    """``{"register": [ids], "deregister": [ids]}`` as changes."""
    if not isinstance(payload, dict):
        raise problems.invalid_field("body", "body must be a JSON object")
    unknown = sorted(set(payload) - {"register", "deregister"})
    if unknown:
        raise problems.invalid_field(unknown[0], f"unknown field {unknown[0]!r}")
    lists: dict[str, list[str]] = {}
    for name in ("register", "deregister"):
        value = payload.get(name, [])
        if not isinstance(value, list):
            raise problems.invalid_field(name, f"{name} must be an array of GUIDs")
        lists[name] = [guid(item, f"{name}[{i}]") for i, item in enumerate(value)]
    total = len(lists["register"]) + len(lists["deregister"])
    if total == 0:
        raise problems.invalid_field(
            "register", "register and deregister are both empty"
        )
    if total > MAX_BATCH_IDS:
        raise problems.invalid_field(
            "register",
            f"register and deregister hold {total} ids together; "
            f"at most {MAX_BATCH_IDS} per batch",
        )
    for name, ids in lists.items():
        seen: set[str] = set()
        for index, user_id in enumerate(ids):
            if user_id in seen:
                raise problems.invalid_field(
                    f"{name}[{index}]", f"{user_id} appears twice in {name}"
                )
            seen.add(user_id)
    both = sorted(set(lists["register"]) & set(lists["deregister"]))
    if both:
        raise problems.invalid_field(
            "deregister", f"{both[0]} is in both register and deregister"
        )
    return tuple(Change(u, Action.REGISTER) for u in lists["register"]) + tuple(
        Change(u, Action.DEREGISTER) for u in lists["deregister"]
    )


def canonical_json(payload: Any) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8")


def if_match(header: str | None) -> str | None:
    """The version an ``If-Match`` header names, ``*``, or None."""
    if header is None or not header.strip():
        return None
    value = header.strip()
    if value == "*":
        return value
    if value.startswith("W/"):
        raise problems.invalid_field("If-Match", "weak ETags are not accepted")
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        raise problems.invalid_field("If-Match", 'If-Match must be "<version>" or *')
    try:
        return parse_version(value[1:-1])
    except InvalidVersionError as error:
        raise problems.invalid_field("If-Match", str(error)) from None


def idempotency_key(header: str | None) -> str | None:
    if header is None:
        return None
    if not header.strip() or len(header) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise problems.invalid_field(
            "Idempotency-Key",
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters",
        )
    return header


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id(header: str | None) -> str | None:
    """A caller's correlation id, kept only if short and plain: it travels in
    the queue message and the logs."""
    if header is None or not _REQUEST_ID.match(header):
        return None
    return header


def fingerprint(method: str, path: str, body: bytes, precondition: str | None) -> str:
    """What makes two calls under one Idempotency-Key the same request."""
    digest = hashlib.sha256()
    for part in (method.upper(), path, precondition or "", body.decode("utf-8")):
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


@dataclass(frozen=True)
class ListQuery:
    state: SubscriptionState | None
    limit: int
    continuation: dict[str, str] | None


def list_query(params: Mapping[str, str]) -> ListQuery:
    reject_query_params(params, {"state", "limit", "continuationToken"})
    state = None
    if "state" in params:
        try:
            state = SubscriptionState(params["state"])
        except ValueError:
            raise problems.invalid_field(
                "state", "state must be 'active' or 'removed'"
            ) from None
    limit = DEFAULT_PAGE_SIZE
    if "limit" in params:
        raw = params["limit"]
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_PAGE_SIZE:
            raise problems.invalid_field(
                "limit", f"limit must be an integer from 1 to {MAX_PAGE_SIZE}"
            )
        limit = int(raw)
    continuation = None
    if params.get("continuationToken"):
        continuation = decode_continuation(params["continuationToken"])
    return ListQuery(state, limit, continuation)


def encode_continuation(token: dict[str, str] | None) -> str | None:
    if not token:
        return None
    raw = json.dumps(token, separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_continuation(value: str) -> dict[str, str]:
    try:
        padded = value + "=" * (-len(value) % 4)
        token = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (binascii.Error, ValueError, UnicodeError):
        token = None
    # The storage token: where the next page starts. The listing's own filter
    # still confines it to the tenant in the path, whatever a client sends.
    if (
        not isinstance(token, dict)
        or not set(token) <= {"PartitionKey", "RowKey"}
        or not all(isinstance(v, str) for v in token.values())
    ):
        raise problems.invalid_field(
            "continuationToken", "continuationToken is not one this API issued"
        )
    return token
