"""Presence observations and the changes published to subscribers."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

# Namespace for deterministic CloudEvent ids: one change always maps to one id,
# however often it is published.
_CHANGE_ID_NAMESPACE = uuid.UUID("6c1f0d0e-5b3a-4f7e-9a51-2f0c3b8d9e41")


@dataclass(frozen=True)
class Presence:
    """One user's presence as Graph reported it. Availability and activity are
    open strings: Graph adds values over time and none is rejected."""

    availability: str
    activity: str
    sequence_number: str | None = None


@dataclass(frozen=True)
class PresenceChange:
    """A presence that differs from the one stored before it."""

    tenant_id: str
    user_id: str
    current: Presence
    previous: Presence | None
    observed_at: datetime

    # Cached: the id is asked for when recording, publishing and clearing.
    @cached_property
    def change_id(self) -> str:
        """Deterministic id: a republished change carries the same id."""
        stamp = self.current.sequence_number or self.observed_at.isoformat()
        key = "|".join(
            (
                self.tenant_id,
                self.user_id,
                stamp,
                self.current.availability,
                self.current.activity,
            )
        )
        return str(uuid.uuid5(_CHANGE_ID_NAMESPACE, key))


@dataclass(frozen=True)
class StoredPresence:
    """The read model's latest presence of one user."""

    presence: Presence
    observed_at: datetime


def is_newer(observed: Presence, observed_at: datetime, stored: StoredPresence) -> bool:
    """Whether an observation may replace the stored one.

    Graph's ``sequenceNumber`` orders presence versions when both have one
    and they can be compared; otherwise the observation time decides. Either
    way an older observation, from a slow or redelivered poll, never wins.
    """
    if observed.sequence_number and stored.presence.sequence_number:
        newer = _sequence_is_newer(
            observed.sequence_number, stored.presence.sequence_number
        )
        if newer is not None:
            return newer
    return observed_at > stored.observed_at


# Graph documents sequenceNumber only as a string; seen values are a letter
# and digits ("C319191255625145"). Compared as text, "C9" would sort after
# "C10", so the digits are compared as a number.
_SEQUENCE = re.compile(r"^(\D*)(\d+)$")


def _sequence_is_newer(observed: str, stored: str) -> bool | None:
    """Whether ``observed`` comes after ``stored``; None when the two cannot
    be ordered (another shape of value, with different prefixes or lengths)."""
    a, b = _SEQUENCE.match(observed), _SEQUENCE.match(stored)
    if a and b and a.group(1) == b.group(1):
        return int(a.group(2)) > int(b.group(2))
    if len(observed) == len(stored):
        return observed > stored
    return None


def detect_change(
    tenant_id: str,
    user_id: str,
    observed: Presence,
    observed_at: datetime,
    stored: StoredPresence | None,
) -> PresenceChange | None:
    """The change to publish, or None when the availability and activity
    subscribers see are unchanged or the observation is not newer."""
    if stored is not None:
        if not is_newer(observed, observed_at, stored):
            return None
        same = (observed.availability, observed.activity) == (
            stored.presence.availability,
            stored.presence.activity,
        )
        if same:
            return None
    return PresenceChange(
        tenant_id=tenant_id,
        user_id=user_id,
        current=observed,
        previous=stored.presence if stored is not None else None,
        observed_at=observed_at,
    )
