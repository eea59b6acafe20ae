"""The subscriber's view of presence: latest per user, duplicates and stale
events dropped. Plain Python, no HTTP, so the rules are easy to read."""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

PRESENCE_CHANGED = "Presence.Changed"


class Outcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # an id seen before: Event Grid delivers at least once
    STALE = "stale"  # older than what is already known: no ordering guarantee
    IGNORED = "ignored"  # another event type


@dataclass(frozen=True)
class UserPresence:
    availability: str
    activity: str
    sequence_number: str | None
    observed_at: datetime
    event_id: str

    def is_older_than(self, other: UserPresence) -> bool:
        # Graph's sequenceNumber orders one user's presences; observedAt is the
        # fallback when either side has none.
        if self.sequence_number and other.sequence_number:
            return self.sequence_number <= other.sequence_number
        return self.observed_at <= other.observed_at


class MalformedEventError(ValueError):
    """The event is not a well-formed Presence.Changed event."""


class PresenceView:
    """Thread-safe; the HTTP server calls it from several threads.

    Seen ids are kept in memory, bounded; a real subscriber keeps them (and
    the latest presence) in a durable store with a time to live longer than
    Event Grid's retry period (24 hours by default).
    """

    def __init__(self, remembered_ids: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._seen_ids: OrderedDict[str, None] = OrderedDict()
        self._remembered_ids = remembered_ids
        self._latest: dict[tuple[str, str], UserPresence] = {}
        self._outcomes: Counter[Outcome] = Counter()

    def apply(self, event: dict[str, Any]) -> Outcome:
        if event.get("type") != PRESENCE_CHANGED:
            outcome = Outcome.IGNORED
        else:
            outcome = self._apply_presence(*_parse(event))
        with self._lock:
            self._outcomes[outcome] += 1
        return outcome

    def _apply_presence(
        self, tenant_id: str, user_id: str, presence: UserPresence
    ) -> Outcome:
        key = (tenant_id, user_id)
        with self._lock:
            if presence.event_id in self._seen_ids:
                return Outcome.DUPLICATE
            self._remember(presence.event_id)
            known = self._latest.get(key)
            if known is not None and presence.is_older_than(known):
                return Outcome.STALE
            self._latest[key] = presence
            return Outcome.APPLIED

    def outcomes(self) -> dict[str, int]:
        """How many events had each outcome so far."""
        with self._lock:
            return {outcome.value: n for outcome, n in self._outcomes.items()}

    def latest(self, tenant_id: str, user_id: str) -> UserPresence | None:
        with self._lock:
            return self._latest.get((tenant_id, user_id))

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {
                f"{tenant}/{user}": {
                    "availability": p.availability,
                    "activity": p.activity,
                    "sequenceNumber": p.sequence_number,
                    "observedAt": p.observed_at.isoformat(),
                }
                for (tenant, user), p in self._latest.items()
            }

    def _remember(self, event_id: str) -> None:
        self._seen_ids[event_id] = None
        while len(self._seen_ids) > self._remembered_ids:
            self._seen_ids.popitem(last=False)


def _parse(event: dict[str, Any]) -> tuple[str, str, UserPresence]:
    data = event.get("data")
    event_id = event.get("id")
    if not isinstance(data, dict) or not isinstance(event_id, str):
        raise MalformedEventError("a Presence.Changed event needs an id and data")
    try:
        return (
            str(data["tenantId"]),
            str(data["userId"]),
            UserPresence(
                availability=str(data["availability"]),
                activity=str(data["activity"]),
                sequence_number=data.get("sequenceNumber"),
                observed_at=datetime.fromisoformat(data["observedAt"]),
                event_id=event_id,
            ),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise MalformedEventError(f"event {event_id}: bad data ({error})") from error
