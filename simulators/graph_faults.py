"""Faults the simulator injects into presence calls on request: throttling,
service errors, latency and ids left out of answers."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class InjectedFailure:
    """An answer to give instead of presence."""

    status: int
    retry_after_seconds: int | None = None


@dataclass
class _PendingFailures:
    remaining: int
    failure: InjectedFailure
    tenant_id: str | None  # None: any tenant


class FaultPlan:
    """What goes wrong next. Failures are consumed one per presence call, in the
    order they were set; latency and omitted ids stay until cleared."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[_PendingFailures] = []
        self._latency_seconds = 0.0
        self._omitted: set[str] = set()

    def throttle_next(
        self,
        count: int,
        retry_after_seconds: int | None = 1,
        tenant_id: str | None = None,
    ) -> None:
        """The next ``count`` presence calls (for ``tenant_id`` only, if given)
        get 429; with ``retry_after_seconds=None`` the header is left out."""
        self._add(count, InjectedFailure(429, retry_after_seconds), tenant_id)

    def fail_next(
        self, count: int, status: int = 503, tenant_id: str | None = None
    ) -> None:
        """The next ``count`` presence calls get ``status`` (a 5xx)."""
        self._add(count, InjectedFailure(status), tenant_id)

    def set_latency_ms(self, milliseconds: float) -> None:
        if milliseconds < 0:
            raise ValueError("latency must not be negative")
        with self._lock:
            self._latency_seconds = milliseconds / 1000.0

    def omit_ids(self, user_ids: Iterable[str]) -> None:
        """These ids are left out of every answer until cleared."""
        with self._lock:
            self._omitted.update(user_ids)

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()
            self._latency_seconds = 0.0
            self._omitted.clear()

    @property
    def latency_seconds(self) -> float:
        with self._lock:
            return self._latency_seconds

    def omitted_ids(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._omitted)

    def take_failure(self, tenant_id: str) -> InjectedFailure | None:
        """Consumes and returns the failure due for this call, if any."""
        with self._lock:
            for pending in self._pending:
                if pending.tenant_id in (None, tenant_id):
                    pending.remaining -= 1
                    if pending.remaining == 0:
                        self._pending.remove(pending)
                    return pending.failure
            return None

    def _add(self, count: int, failure: InjectedFailure, tenant_id: str | None) -> None:
        if count < 0:
            raise ValueError("count must not be negative")
        if count:
            with self._lock:
                self._pending.append(_PendingFailures(count, failure, tenant_id))
