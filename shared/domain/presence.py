"""Presence observations and the changes published to subscribers."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

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

    @property
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
