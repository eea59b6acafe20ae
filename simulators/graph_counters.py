"""What the simulator was asked: every call with tenant, endpoint, status, ids
requested and arrival time (``time.monotonic`` of the simulator process)."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

DISCOVERY = "discovery"
TOKEN = "token"
PRESENCE = "presence"

# Bounded so a long benchmark cannot grow the log without limit; the totals
# below are kept exactly.
_MAX_LOGGED_CALLS = 200_000


@dataclass(frozen=True)
class RecordedCall:
    endpoint: str
    tenant_id: str | None
    status: int
    id_count: int
    arrived_at: float  # time.monotonic() when the request was read

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class CallCounters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._log: deque[RecordedCall] = deque(maxlen=_MAX_LOGGED_CALLS)
        self._calls: dict[str, dict[str, int]] = {}
        self._statuses: dict[str, dict[str, int]] = {}
        self._ids: dict[str, int] = {}

    def record(self, call: RecordedCall) -> None:
        tenant = call.tenant_id or "-"
        with self._lock:
            self._log.append(call)
            per_tenant = self._calls.setdefault(call.endpoint, {})
            per_tenant[tenant] = per_tenant.get(tenant, 0) + 1
            per_status = self._statuses.setdefault(call.endpoint, {})
            per_status[str(call.status)] = per_status.get(str(call.status), 0) + 1
            if call.endpoint == PRESENCE:
                self._ids[tenant] = self._ids.get(tenant, 0) + call.id_count

    def count(self, endpoint: str, tenant_id: str | None = None) -> int:
        """Calls to ``endpoint`` (for one tenant, or all)."""
        with self._lock:
            per_tenant = self._calls.get(endpoint, {})
            if tenant_id is None:
                return sum(per_tenant.values())
            return per_tenant.get(tenant_id, 0)

    def calls(
        self, endpoint: str | None = None, tenant_id: str | None = None
    ) -> list[RecordedCall]:
        with self._lock:
            return [
                call
                for call in self._log
                if endpoint in (None, call.endpoint)
                and tenant_id in (None, call.tenant_id)
            ]

    def snapshot(self) -> dict[str, Any]:
        """Totals as JSON: calls per endpoint per tenant, statuses per endpoint,
        ids requested per tenant."""
        with self._lock:
            return {
                "calls": {name: dict(v) for name, v in self._calls.items()},
                "statuses": {name: dict(v) for name, v in self._statuses.items()},
                "ids_requested": dict(self._ids),
            }

    def reset(self) -> None:
        with self._lock:
            self._log.clear()
            self._calls.clear()
            self._statuses.clear()
            self._ids.clear()
