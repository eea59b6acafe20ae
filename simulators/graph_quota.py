"""Graph's own rate limit for presence: 1,500 requests per 30 s per app per
tenant. Every request counts, refused ones included, as with real Graph."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

DEFAULT_LIMIT = 1500
DEFAULT_WINDOW_SECONDS = 30.0


class SlidingWindowQuota:
    def __init__(
        self,
        limit: int = DEFAULT_LIMIT,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window_seconds = window_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str], deque[float]] = {}

    def admit(self, client_id: str, tenant_id: str) -> int | None:
        """Counts a request; returns None if within the limit, else the whole
        seconds to wait (the Retry-After)."""
        now = self._clock()
        with self._lock:
            window = self._requests.setdefault((client_id, tenant_id), deque())
            while window and window[0] <= now - self.window_seconds:
                window.popleft()
            window.append(now)
            if len(window) <= self.limit:
                return None
            # The request that must leave the window before one more fits.
            oldest_in_limit = window[len(window) - self.limit - 1]
            return max(1, math.ceil(oldest_in_limit + self.window_seconds - now))

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
