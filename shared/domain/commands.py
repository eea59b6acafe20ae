"""Subscription commands: what a client asked for, as accepted by the API.

A command carries everything the apply step needs, so any instance can apply
it, as often as the queue delivers it, with the same result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from shared.domain.ids import InvalidIdError, parse_guid
from shared.domain.versions import InvalidVersionError, parse_version

MAX_BATCH_IDS = 1000
MESSAGE_SCHEMA = 1


class Action(StrEnum):
    REGISTER = "register"
    DEREGISTER = "deregister"


class CommandFormatError(ValueError):
    """A queue message that is not a valid command (it can never be applied)."""


@dataclass(frozen=True)
class Change:
    user_id: str
    action: Action


@dataclass(frozen=True)
class SubscriptionCommand:
    """One accepted call: a single register/deregister, or a batch.

    All changes of a command share its version; a batch never names one user
    twice, so (version, user) identifies each change uniquely.
    """

    command_id: str
    tenant_id: str
    version: str
    changes: tuple[Change, ...]
    # Set from If-Match: the change applies only if the stored version still
    # equals this ("" means the subscription must not exist yet).
    expected_version: str | None = None
    # Correlates the log lines of one call across instances.
    request_id: str | None = field(default=None, compare=False)

    def to_message(self) -> str:
        register = [c.user_id for c in self.changes if c.action is Action.REGISTER]
        deregister = [c.user_id for c in self.changes if c.action is Action.DEREGISTER]
        body: dict[str, Any] = {
            "schema": MESSAGE_SCHEMA,
            "commandId": self.command_id,
            "tenantId": self.tenant_id,
            "version": self.version,
            "register": register,
            "deregister": deregister,
        }
        if self.expected_version is not None:
            body["expectedVersion"] = self.expected_version
        if self.request_id:
            body["requestId"] = self.request_id
        # Compact separators: a 1,000-id batch must fit one 64 KiB message
        # after base64 (about 48 KiB of payload).
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def from_message(cls, text: str) -> SubscriptionCommand:
        try:
            body = json.loads(text)
        except ValueError as error:
            raise CommandFormatError(f"message is not JSON: {error}") from error
        if not isinstance(body, dict):
            raise CommandFormatError("message is not a JSON object")
        if body.get("schema") != MESSAGE_SCHEMA:
            raise CommandFormatError(f"unknown message schema {body.get('schema')!r}")
        try:
            tenant_id = parse_guid(body.get("tenantId"), "tenantId")
            version = parse_version(str(body.get("version")))
            changes = tuple(
                Change(parse_guid(user, "register"), Action.REGISTER)
                for user in _id_list(body, "register")
            ) + tuple(
                Change(parse_guid(user, "deregister"), Action.DEREGISTER)
                for user in _id_list(body, "deregister")
            )
            expected = body.get("expectedVersion")
            if expected not in (None, ""):
                expected = parse_version(str(expected))
        except (InvalidIdError, InvalidVersionError) as error:
            raise CommandFormatError(str(error)) from error
        command_id = body.get("commandId")
        if not isinstance(command_id, str) or not command_id:
            raise CommandFormatError("commandId is missing")
        if not changes:
            raise CommandFormatError("command names no user")
        if len({c.user_id for c in changes}) != len(changes):
            raise CommandFormatError("command names a user twice")
        return cls(
            command_id=command_id,
            tenant_id=tenant_id,
            version=version,
            changes=changes,
            expected_version=expected,
            request_id=body.get("requestId"),
        )


def _id_list(body: dict[str, Any], key: str) -> list[Any]:
    value = body.get(key, [])
    if not isinstance(value, list):
        raise CommandFormatError(f"{key} is not a list")
    return value
