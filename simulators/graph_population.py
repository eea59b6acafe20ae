"""Simulated users per tenant whose Teams presence changes over time.

Changes come in ticks: each tick moves a set fraction of each tenant's users to
a different presence. Ticks advance when asked, or by wall time when a tick
length is set. Everything random comes from one seeded generator, so a run is
reproducible.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

# (availability, activity, weight): what Graph reports, common pairs weighted
# higher, with the rarer ones a client must not choke on.
PRESENCE_STATES: tuple[tuple[str, str, int], ...] = (
    ("Available", "Available", 30),
    ("AvailableIdle", "Available", 4),
    ("Busy", "Busy", 8),
    ("Busy", "InACall", 8),
    ("Busy", "InAConferenceCall", 3),
    ("Busy", "InAMeeting", 10),
    ("BusyIdle", "Busy", 2),
    ("DoNotDisturb", "Presenting", 2),
    ("DoNotDisturb", "DoNotDisturb", 2),
    ("DoNotDisturb", "Focusing", 2),
    ("BeRightBack", "BeRightBack", 3),
    ("Away", "Away", 8),
    ("Offline", "OffWork", 6),
    ("Offline", "Offline", 10),
    ("Offline", "OutOfOffice", 1),
    ("PresenceUnknown", "PresenceUnknown", 1),
)

# Wall-time catch-up is capped so a long pause cannot stall one request.
_MAX_TICKS_PER_CATCH_UP = 1000


@dataclass(frozen=True)
class SimulatedPresence:
    availability: str
    activity: str
    sequence_number: str


class UnknownTenantError(KeyError):
    """The tenant was never added to the simulator."""


class Population:
    """Tenants, their users and each user's current presence. Thread-safe."""

    def __init__(
        self, seed: int = 0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._random = random.Random(seed)
        self._clock = clock
        self._lock = threading.Lock()
        self._tenants: dict[str, dict[str, SimulatedPresence]] = {}
        # Fraction of a user not yet changed, per tenant, so small tenants still
        # change at the set rate over several ticks.
        self._carry: dict[str, float] = {}
        self._sequence = 0
        self._change_fraction = 0.0
        self._tick_seconds: float | None = None
        self._tick_anchor = clock()
        self._wall_ticks_applied = 0
        self._ticks = 0

    # Tenants and users -------------------------------------------------

    def add_tenant(self, tenant_id: str | None = None) -> str:
        with self._lock:
            tenant = tenant_id or self._new_guid()
            self._tenants.setdefault(tenant, {})
            self._carry.setdefault(tenant, 0.0)
            return tenant

    def has_tenant(self, tenant_id: str) -> bool:
        with self._lock:
            return tenant_id in self._tenants

    def tenant_ids(self) -> list[str]:
        with self._lock:
            return list(self._tenants)

    def add_users(
        self, tenant_id: str, count: int = 0, user_ids: Iterable[str] = ()
    ) -> list[str]:
        """Adds ``count`` new users with generated GUIDs plus any ``user_ids``
        given; returns the ids added, in order."""
        with self._lock:
            users = self._users(tenant_id)
            added = [*(self._new_guid() for _ in range(count)), *user_ids]
            for user_id in added:
                users[user_id] = self._next_presence(current=None)
            return added

    def remove_users(self, tenant_id: str, user_ids: Iterable[str]) -> None:
        """The users no longer exist (deleted accounts)."""
        with self._lock:
            users = self._users(tenant_id)
            for user_id in user_ids:
                users.pop(user_id, None)

    def user_ids(self, tenant_id: str) -> list[str]:
        with self._lock:
            return list(self._users(tenant_id))

    # Change over time ----------------------------------------------------

    def set_change_rate(
        self, fraction: float, tick_seconds: float | None = None
    ) -> None:
        """Each tick changes ``fraction`` of every tenant's users. With
        ``tick_seconds`` ticks also happen by wall time; without, only
        :meth:`advance` moves time on."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("fraction must be between 0 and 1")
        if tick_seconds is not None and tick_seconds <= 0:
            raise ValueError("tick_seconds must be positive")
        with self._lock:
            self._change_fraction = fraction
            self._tick_seconds = tick_seconds
            self._tick_anchor = self._clock()
            self._wall_ticks_applied = 0

    def advance(self, ticks: int = 1) -> int:
        """Applies ``ticks`` ticks now; returns how many users changed."""
        if ticks < 0:
            raise ValueError("ticks must not be negative")
        with self._lock:
            return sum(self._apply_tick() for _ in range(ticks))

    @property
    def ticks(self) -> int:
        with self._lock:
            return self._ticks

    def lookup(
        self, tenant_id: str, user_ids: Sequence[str]
    ) -> dict[str, SimulatedPresence]:
        """Current presence of the ids that exist; unknown ids are absent."""
        with self._lock:
            self._catch_up_wall_time()
            users = self._users(tenant_id)
            return {uid: users[uid] for uid in user_ids if uid in users}

    # Internals (callers hold the lock) ------------------------------------

    def _users(self, tenant_id: str) -> dict[str, SimulatedPresence]:
        try:
            return self._tenants[tenant_id]
        except KeyError:
            raise UnknownTenantError(tenant_id) from None

    def _new_guid(self) -> str:
        return str(uuid.UUID(int=self._random.getrandbits(128), version=4))

    def _next_presence(self, current: SimulatedPresence | None) -> SimulatedPresence:
        choices = [
            state
            for state in PRESENCE_STATES
            if current is None or state[:2] != (current.availability, current.activity)
        ]
        availability, activity, _ = self._random.choices(
            choices, weights=[weight for *_, weight in choices]
        )[0]
        self._sequence += 1
        # Fixed width keeps string order equal to numeric order.
        return SimulatedPresence(availability, activity, f"{self._sequence:020d}")

    def _apply_tick(self) -> int:
        self._ticks += 1
        changed = 0
        for tenant_id, users in self._tenants.items():
            due = self._carry[tenant_id] + self._change_fraction * len(users)
            count = min(int(due), len(users))
            self._carry[tenant_id] = due - count
            for user_id in self._random.sample(list(users), count):
                users[user_id] = self._next_presence(current=users[user_id])
            changed += count
        return changed

    def _catch_up_wall_time(self) -> None:
        if self._tick_seconds is None:
            return
        due = int((self._clock() - self._tick_anchor) / self._tick_seconds)
        pending = due - self._wall_ticks_applied
        for _ in range(min(pending, _MAX_TICKS_PER_CATCH_UP)):
            self._apply_tick()
        self._wall_ticks_applied = due
