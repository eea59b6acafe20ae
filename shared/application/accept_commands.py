"""Accept a client's call as a command: check preconditions, give it an id
and a version, and put it durably on the queue.

Answers to the hard cases:

* The same call twice (a client retrying after a timeout, on another
  instance): with an ``Idempotency-Key`` the first instance stores the command
  and its response before enqueueing; a retry finds the record and answers
  with the same command id and body, re-sending the stored command if the
  first attempt may not have enqueued it. Re-sending is safe because the apply
  step recognises a command by its version.
* Enqueueing fails: the caller gets an error (503) and nothing was applied;
  a retry with the same key completes the same command.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.adapters.command_queue import CommandQueue
from shared.adapters.idempotency_table import IdempotencyRecord, IdempotencyTable
from shared.adapters.storage_errors import StorageError
from shared.adapters.subscription_table import SubscriptionTable
from shared.domain.commands import Change, SubscriptionCommand
from shared.domain.versions import VersionClock

logger = logging.getLogger(__name__)

ANY_VERSION = "*"


class PreconditionFailedError(Exception):
    """If-Match named a version that is not the stored one."""

    def __init__(self, expected: str, stored: str | None) -> None:
        super().__init__(
            f"If-Match expected version {expected!r} but the stored version is "
            f"{stored!r}"
            if stored
            else f"If-Match expected version {expected!r} but the subscription "
            "does not exist"
        )


class IdempotencyKeyReusedError(Exception):
    """The key was used before for a different request."""


@dataclass(frozen=True)
class CommandRequest:
    tenant_id: str
    changes: tuple[Change, ...]
    # Hash of everything that makes two calls "the same request".
    fingerprint: str
    if_match: str | None = None
    idempotency_key: str | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class Acceptance:
    command_id: str
    body: dict[str, Any]
    replayed: bool


# Builds the response body for a newly accepted command.
Describe = Callable[[SubscriptionCommand], dict[str, Any]]


class CommandAcceptor:
    def __init__(
        self,
        queue: CommandQueue,
        idempotency: IdempotencyTable,
        subscriptions: SubscriptionTable,
        clock: VersionClock,
    ) -> None:
        self._queue = queue
        self._idempotency = idempotency
        self._subscriptions = subscriptions
        self._clock = clock

    def accept(self, request: CommandRequest, describe: Describe) -> Acceptance:
        key = request.idempotency_key
        if key is not None:
            replay = self._replay(request, key)
            if replay is not None:
                return replay

        command = SubscriptionCommand(
            command_id=str(uuid.uuid4()),
            tenant_id=request.tenant_id,
            version=self._clock.mint()[0],
            changes=request.changes,
            expected_version=self._expected_version(request),
            request_id=request.request_id,
        )
        body = describe(command)
        if key is not None:
            record = IdempotencyRecord(
                fingerprint=request.fingerprint,
                message=command.to_message(),
                response=json.dumps(body),
                enqueued=False,
            )
            if not self._idempotency.create(request.tenant_id, key, record):
                # Another instance took the same key a moment ago: its
                # command is the one this call stands for.
                replay = self._replay(request, key)
                if replay is None:
                    # It expired or was purged in this very moment: answer
                    # 503 rather than enqueue a command no record stands for.
                    raise StorageError(
                        "idempotency record vanished while it was being read"
                    )
                return replay
        self._queue.send_command(command)
        if key is not None:
            self._idempotency.mark_enqueued(request.tenant_id, key)
        return Acceptance(command.command_id, body, replayed=False)

    def _expected_version(self, request: CommandRequest) -> str | None:
        if request.if_match is None:
            return None
        (change,) = request.changes  # If-Match is only offered on single calls
        current = self._subscriptions.get(request.tenant_id, change.user_id)
        stored = current.version if current else None
        if stored is None or request.if_match not in (ANY_VERSION, stored):
            raise PreconditionFailedError(request.if_match, stored)
        return stored

    def _replay(self, request: CommandRequest, key: str) -> Acceptance | None:
        record = self._idempotency.get(request.tenant_id, key)
        if record is None:
            return None
        if record.fingerprint != request.fingerprint:
            raise IdempotencyKeyReusedError(
                "Idempotency-Key was already used for a different request"
            )
        command = SubscriptionCommand.from_message(record.message)
        if not record.enqueued:
            # The first attempt may have died between storing the record and
            # enqueueing: send again; the apply step skips a duplicate.
            self._queue.send_command(command)
            self._idempotency.mark_enqueued(request.tenant_id, key)
        logger.info(
            "idempotent replay of command %s for tenant %s",
            command.command_id,
            request.tenant_id,
        )
        return Acceptance(command.command_id, json.loads(record.response), True)
