"""Poll one shard: read its members' presence from Graph in one call, record
what changed with its outbox entry, publish, and free the shard.

Why this is safe with any number of instances:

* The worker claims the shard's lease (ETag-guarded) before calling Graph. A
  duplicate message, or a second worker, finds the lease taken and skips.
* The shard's presence snapshot is written guarded by the ETag it was read
  with, and an observation older than the stored one (by ``sequenceNumber``,
  else by time) never replaces it.
* A change and its outbox entry are one write of that row; publishing happens
  after, and whatever is not published stays in the outbox for the sweep.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Protocol

from shared.adapters.graph_presence import (
    GraphRequestError,
    GraphThrottledError,
    ObservedPresence,
)
from shared.adapters.presence_table import PresenceTable, ShardPresence
from shared.adapters.shard_leases import LeaseState, ShardLease, ShardLeases
from shared.adapters.storage_errors import ConcurrencyConflictError
from shared.adapters.subscription_table import SubscriptionTable
from shared.adapters.tenant_directory import TenantDirectory
from shared.application.publish_outbox import OutboxPublisher
from shared.domain.polling import PollRequest
from shared.domain.presence import detect_change

logger = logging.getLogger(__name__)

# Longer than the worst case of one poll: the Graph call with its bounded
# retries (4 attempts of up to 35 s, plus back-off and throttle waits), the
# writes, and the publish.
POLLING_LEASE = timedelta(minutes=5)
# Users Graph refused as unknown are asked about again after this.
NOT_FOUND_RECHECK = timedelta(hours=24)
_RECORD_ATTEMPTS = 3
# Ids named in the log line about members missing from Graph's answer.
_MISSING_IDS_LOGGED = 20
# A refusal is taken as naming an unknown user only if it says "not found" or
# names one of the ids asked for; anything else (a wrong base URL, an API
# change) fails the poll instead of setting every member aside.
_NOT_FOUND_CODES = {"ItemNotFound", "ResourceNotFound", "Request_ResourceNotFound"}


class PresenceSource(Protocol):
    def get_presences(
        self, tenant_id: str, user_ids: Sequence[str]
    ) -> list[ObservedPresence]: ...


class PollOutcome(StrEnum):
    POLLED = "polled"
    STALE_MESSAGE = "stale message: a newer cycle owns the shard"
    ALREADY_POLLING = "another worker is polling the shard"
    SHARD_GONE = "shard no longer exists"
    COOLING_DOWN = "tenant is cooling down after a 429"


@dataclass
class PollResult:
    outcome: PollOutcome
    graph_calls: int = 0
    changes: int = 0
    # Table writes of the shard's presence: one for a poll with changes.
    writes: int = 0
    # Changes left for a later poll because the outbox was full.
    deferred: int = 0
    published: int = 0
    missing: int = 0


class ShardPoller:
    def __init__(
        self,
        leases: ShardLeases,
        presence: PresenceTable,
        subscriptions: SubscriptionTable,
        tenants: TenantDirectory,
        graph: PresenceSource,
        outbox: OutboxPublisher,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        polling_lease: timedelta = POLLING_LEASE,
    ) -> None:
        self._leases = leases
        self._presence = presence
        self._subscriptions = subscriptions
        self._tenants = tenants
        self._graph = graph
        self._outbox = outbox
        self._clock = clock
        self._polling_lease = polling_lease

    def poll(self, request: PollRequest) -> PollResult:
        tenant_id, shard = request.tenant_id, request.shard
        lease = self._claim(request)
        if isinstance(lease, PollOutcome):
            logger.info("shard %s/%d skipped: %s", tenant_id, shard, lease.value)
            return PollResult(lease)
        try:
            result = self._poll_claimed(request, lease)
        except GraphThrottledError as error:
            until = self._clock() + timedelta(seconds=error.retry_after)
            self._tenants.cool_down(tenant_id, until)
            # The next cycle polls it again; nothing is owed from this one.
            self._release(request, LeaseState.IDLE, lease)
            return PollResult(PollOutcome.COOLING_DOWN)
        except Exception:
            # Hand the shard back to this message: the host redelivers it after
            # the visibility timeout and any instance can claim it again.
            self._release(request, LeaseState.QUEUED, lease)
            raise
        self._release(request, LeaseState.IDLE, lease)
        logger.info(
            "shard %s/%d polled: %d graph calls, %d changes in %d writes, "
            "%d published, %d missing from the answer",
            tenant_id,
            shard,
            result.graph_calls,
            result.changes,
            result.writes,
            result.published,
            result.missing,
        )
        return result

    def _claim(self, request: PollRequest) -> ShardLease | PollOutcome:
        now = self._clock()
        for _ in range(2):
            lease = self._leases.read(request.tenant_id, request.shard)
            if lease is None:
                return PollOutcome.SHARD_GONE
            if lease.token != request.lease_token:
                return PollOutcome.STALE_MESSAGE
            if lease.state is LeaseState.POLLING and lease.until > now:
                return PollOutcome.ALREADY_POLLING
            cool_down = self._tenants.cool_down_until(request.tenant_id)
            if cool_down is not None and cool_down > now:
                self._release(request, LeaseState.IDLE)
                return PollOutcome.COOLING_DOWN
            until = now + self._polling_lease
            etag = self._leases.take(
                lease, LeaseState.POLLING, request.lease_token, until
            )
            if etag is not None:
                # Kept so that the release needs no second read of the row.
                return replace(lease, state=LeaseState.POLLING, until=until, etag=etag)
            # The row changed under us (a membership change, or another
            # worker's claim): read again and decide again.
        return PollOutcome.ALREADY_POLLING

    def _poll_claimed(self, request: PollRequest, lease: ShardLease) -> PollResult:
        tenant_id, shard = request.tenant_id, request.shard
        result = PollResult(PollOutcome.POLLED)
        stored = self._presence.read_shard(tenant_id, shard)
        now = self._clock()
        asked = [
            user
            for user in lease.members
            if now - stored.not_found.get(user, datetime.min.replace(tzinfo=UTC))
            > NOT_FOUND_RECHECK
        ]
        refused: dict[str, datetime] = {}
        answered = self._fetch(tenant_id, shard, asked, refused, result)
        # Only members: an id Graph adds on its own must not become presence.
        asked_set = set(asked)
        observed = [o for o in answered if o.user_id in asked_set]
        observed_at = self._clock()
        answered_ids = {o.user_id for o in observed}
        missing = sorted(asked_set - answered_ids - set(refused))
        result.missing = len(missing)
        if missing:
            logger.warning(
                "shard %s/%d: %d members missing from Graph's answer keep their "
                "last presence: %s%s",
                tenant_id,
                shard,
                len(missing),
                ", ".join(missing[:_MISSING_IDS_LOGGED]),
                " ..." if len(missing) > _MISSING_IDS_LOGGED else "",
            )
        # Users Graph had refused and now answers for: their note goes first,
        # then the snapshot forgets them (a failure in between clears again).
        recovered = answered_ids & set(stored.not_found)
        for user_id in sorted(recovered):
            self._subscriptions.clear_poll_problem(tenant_id, user_id)
        stored = self._record(
            stored,
            observed,
            observed_at,
            set(lease.members),
            refused,
            recovered,
            result,
        )
        result.published = self._outbox.publish_and_clear(stored)
        return result

    def _fetch(
        self,
        tenant_id: str,
        shard: int,
        user_ids: list[str],
        refused: dict[str, datetime],
        result: PollResult,
    ) -> list[ObservedPresence]:
        """One Graph call; only if Graph refuses the request as naming an
        unknown user is it split, to find that user and add it to
        ``refused``."""
        if not user_ids:
            return []
        result.graph_calls += 1
        try:
            return self._graph.get_presences(tenant_id, user_ids)
        except GraphRequestError as error:
            if not _names_unknown_user(error, user_ids):
                raise
            if len(user_ids) == 1:
                self._set_aside(tenant_id, shard, user_ids[0], str(error))
                refused[user_ids[0]] = self._clock()
                return []
        middle = len(user_ids) // 2
        return self._fetch(
            tenant_id, shard, user_ids[:middle], refused, result
        ) + self._fetch(tenant_id, shard, user_ids[middle:], refused, result)

    def _set_aside(self, tenant_id: str, shard: int, user_id: str, why: str) -> None:
        # The note on the subscription goes first; the mark that stops polling
        # the user is written with the poll's presence. If that write fails,
        # the retry finds the user unknown again and notes it again.
        logger.warning(
            "shard %s/%d: Graph does not know user %s; not polled for %s: %s",
            tenant_id,
            shard,
            user_id,
            NOT_FOUND_RECHECK,
            why,
        )
        self._subscriptions.record_poll_problem(tenant_id, user_id, shard, why)

    def _record(
        self,
        stored: ShardPresence,
        observed: list[ObservedPresence],
        observed_at: datetime,
        members: set[str],
        refused: dict[str, datetime],
        recovered: set[str],
        result: PollResult,
    ) -> ShardPresence:
        """Writes the changes and the refused members in one write, none when
        nothing changed; returns the shard as stored after."""
        for attempt in range(1, _RECORD_ATTEMPTS + 1):
            changes = [
                change
                for item in observed
                if (
                    change := detect_change(
                        stored.tenant_id,
                        item.user_id,
                        item.presence,
                        observed_at,
                        stored.presence.get(item.user_id),
                    )
                )
                is not None
            ]
            if len(changes) > stored.outbox_room:
                # Event Grid has been failing for long: the unrecorded changes
                # are seen again by a later poll, once the outbox drains.
                result.deferred = len(changes) - stored.outbox_room
                logger.warning(
                    "shard %s/%d: outbox full; %d changes wait for a later poll",
                    stored.tenant_id,
                    stored.shard,
                    result.deferred,
                )
                changes = changes[: stored.outbox_room]
            if not changes and not refused and not recovered:
                return stored
            try:
                written = self._presence.record(
                    stored, changes, members, refused, recovered
                )
            except ConcurrencyConflictError:
                # Only a worker whose lease expired mid-poll, or the sweep
                # clearing the outbox, writes here at the same time. Decide
                # again against what is stored now.
                logger.warning(
                    "shard %s/%d: presence changed concurrently (attempt %d); "
                    "re-reading",
                    stored.tenant_id,
                    stored.shard,
                    attempt,
                )
                stored = self._presence.read_shard(stored.tenant_id, stored.shard)
                continue
            result.changes = len(changes)
            result.writes += 1
            return written
        raise ConcurrencyConflictError(
            self._presence.table_name,
            f"{stored.tenant_id}|{stored.shard}",
            "presence snapshot",
        )

    def _release(
        self, request: PollRequest, state: LeaseState, held: ShardLease | None = None
    ) -> None:
        """Frees the lease if this message still holds it. ``held`` is the
        lease as this worker last wrote it: tried first, without a read; if
        the row changed since (a membership change), it is read again."""
        for _ in range(3):
            lease = held or self._leases.read(request.tenant_id, request.shard)
            held = None
            if lease is None or lease.token != request.lease_token:
                return
            token = request.lease_token if state is LeaseState.QUEUED else ""
            extra = (
                {"lastPolledAt": self._clock()} if state is LeaseState.IDLE else None
            )
            until = self._clock() + (
                self._polling_lease if state is LeaseState.QUEUED else timedelta(0)
            )
            if self._leases.take(lease, state, token, until, extra) is not None:
                return
        logger.warning(
            "shard %s/%d: lease not released; it expires on its own",
            request.tenant_id,
            request.shard,
        )


def _names_unknown_user(error: GraphRequestError, user_ids: list[str]) -> bool:
    if error.status not in (400, 404):
        return False
    if error.code in _NOT_FOUND_CODES:
        return True
    text = str(error).lower()
    return any(user_id in text for user_id in user_ids)
