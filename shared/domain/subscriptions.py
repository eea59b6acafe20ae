"""Subscription state, its events, and the rule that applies a command.

The rule is last-writer-wins by version: a change older than (or as old as)
the stored version changes nothing, and a deregistration leaves a tombstone
carrying its version, so a late, older register cannot bring an agent back.
Because the rule only compares versions, applying the same commands in any
order, any number of times, ends in the same state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from shared.domain.commands import Action, Change, SubscriptionCommand
from shared.domain.versions import version_time


class SubscriptionState(StrEnum):
    ACTIVE = "active"
    REMOVED = "removed"


class EventType(StrEnum):
    REGISTERED = "SubscriptionRegistered"
    DEREGISTERED = "SubscriptionDeregistered"


class SkipReason(StrEnum):
    ALREADY_APPLIED = "already applied"
    SUPERSEDED = "a newer version is stored"
    PRECONDITION_FAILED = "If-Match version no longer current"


@dataclass(frozen=True)
class Subscription:
    tenant_id: str
    user_id: str
    state: SubscriptionState
    version: str
    updated_at: datetime
    command_id: str
    # Poll shard holding an active agent; None for tombstones.
    shard: int | None = None
    # Why Graph could not give this agent's presence, if it refused it; kept
    # while the agent stays active in its shard (see evolve).
    poll_problem: PollProblem | None = None


@dataclass(frozen=True)
class PollProblem:
    detail: str
    noted_at: datetime


@dataclass(frozen=True)
class SubscriptionEvent:
    event_type: EventType
    tenant_id: str
    user_id: str
    version: str
    command_id: str
    occurred_at: datetime

    @property
    def new_state(self) -> SubscriptionState:
        if self.event_type is EventType.REGISTERED:
            return SubscriptionState.ACTIVE
        return SubscriptionState.REMOVED


def decide(
    current: Subscription | None, change: Change, command: SubscriptionCommand
) -> SubscriptionEvent | SkipReason:
    """The event a change produces against the stored state, or why it is
    skipped."""
    if current is not None and current.version == command.version:
        return SkipReason.ALREADY_APPLIED
    if current is not None and current.version > command.version:
        return SkipReason.SUPERSEDED
    if command.expected_version is not None:
        stored = current.version if current is not None else ""
        if stored != command.expected_version:
            return SkipReason.PRECONDITION_FAILED
    event_type = (
        EventType.REGISTERED
        if change.action is Action.REGISTER
        else EventType.DEREGISTERED
    )
    return SubscriptionEvent(
        event_type=event_type,
        tenant_id=command.tenant_id,
        user_id=change.user_id,
        version=command.version,
        command_id=command.command_id,
        occurred_at=version_time(command.version),
    )


def evolve(
    event: SubscriptionEvent, shard: int | None, current: Subscription | None = None
) -> Subscription:
    """The state after an event; ``shard`` is where an active agent is polled.

    A note that Graph refused the agent stays while the agent stays active
    in the same shard: that shard's poller still has it set aside, and only
    Graph answering for it again clears the note."""
    new_shard = shard if event.new_state is SubscriptionState.ACTIVE else None
    still_set_aside = (
        current is not None
        and current.state is SubscriptionState.ACTIVE
        and new_shard is not None
        and current.shard == new_shard
    )
    return Subscription(
        tenant_id=event.tenant_id,
        user_id=event.user_id,
        state=event.new_state,
        version=event.version,
        updated_at=event.occurred_at,
        command_id=event.command_id,
        shard=new_shard,
        poll_problem=current.poll_problem if current and still_set_aside else None,
    )
