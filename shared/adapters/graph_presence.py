"""The production client for Graph presence: ``getPresencesByUserId`` app-only,
with token reuse, one token refresh on 401, Retry-After on 429, bounded
back-off on 5xx and network errors, and an in-process per-tenant call budget.

Across instances the Graph limit (1,500 calls per 30 s per app per tenant) is
held by the design, one poll per shard per cycle, plus honouring every 429: the
budget here only stops one process from overrunning it on its own.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import requests

from shared.adapters.graph_auth import (
    DEFAULT_POOL_SIZE,
    DEFAULT_TIMEOUT,
    AppTokenProvider,
    GraphAuthError,
    GraphConfigurationError,
    GraphError,
    TimeoutHttpClient,
    build_session,
)
from shared.domain.presence import Presence
from shared.settings import GraphSettings, get_settings

logger = logging.getLogger(__name__)

MAX_IDS_PER_CALL = 650
PRESENCE_ENDPOINT = "/communications/getPresencesByUserId"

__all__ = [
    "MAX_IDS_PER_CALL",
    "CallBudget",
    "GraphAuthError",
    "GraphConfigurationError",
    "GraphError",
    "GraphPresenceClient",
    "GraphRequestError",
    "GraphThrottledError",
    "GraphUnavailableError",
    "ObservedPresence",
    "RetryPolicy",
    "missing_ids",
]


class GraphThrottledError(GraphError):
    """Graph (or the in-process budget) wants this tenant left alone for
    ``retry_after`` seconds: record a cool-down and queue the work again."""

    def __init__(self, tenant_id: str, retry_after: float, reason: str) -> None:
        super().__init__(tenant_id, f"{reason}; retry after {retry_after:.1f} s")
        self.retry_after = retry_after


class GraphUnavailableError(GraphError):
    """5xx, connection errors or timeouts outlasted the bounded retries."""

    def __init__(self, tenant_id: str, message: str, status: int | None = None) -> None:
        super().__init__(tenant_id, message)
        self.status = status


class GraphRequestError(GraphError):
    """Graph refused the request itself (400, 404...): retrying will not help."""

    def __init__(self, tenant_id: str, status: int, code: str, message: str) -> None:
        super().__init__(tenant_id, f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.graph_message = message


@dataclass(frozen=True)
class ObservedPresence:
    user_id: str
    presence: Presence


def missing_ids(
    requested: Iterable[str], observed: Iterable[ObservedPresence]
) -> set[str]:
    """Requested ids Graph did not answer (deleted users, or left out)."""
    answered = {item.user_id.lower() for item in observed}
    return {user_id for user_id in requested if user_id.lower() not in answered}


@dataclass(frozen=True)
class RetryPolicy:
    # A Retry-After up to this is waited out here; beyond it the caller gets
    # GraphThrottledError and re-queues the work.
    max_retry_after_seconds: float = 10.0
    max_throttle_retries: int = 2
    max_unavailable_retries: int = 3
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 8.0
    timeout: tuple[float, float] = DEFAULT_TIMEOUT
    budget_calls: int = 1500
    budget_window_seconds: float = 30.0
    # Longest wait for room in the budget before giving up with a throttle.
    budget_max_wait_seconds: float = 5.0

    def backoff(self, attempt: int, jitter: float) -> float:
        """Exponential back-off for retry ``attempt`` (0-based), with full
        jitter in [0.5, 1.0] of the step so instances spread out."""
        step = min(self.backoff_max_seconds, self.backoff_base_seconds * 2**attempt)
        return step * (0.5 + 0.5 * jitter)


Clock = Callable[[], float]
Sleep = Callable[[float], None]


class CallBudget:
    """Per tenant: at most ``limit`` calls in any sliding ``window`` seconds,
    and a "not before" time after a 429, shared by every call in the process."""

    def __init__(self, policy: RetryPolicy, clock: Clock, sleep: Sleep) -> None:
        self._policy = policy
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._calls: dict[str, deque[float]] = {}
        self._not_before: dict[str, float] = {}

    def hold_off(self, tenant_id: str, seconds: float) -> None:
        """No call to the tenant from this process for ``seconds``."""
        until = self._clock() + seconds
        with self._lock:
            self._not_before[tenant_id] = max(
                until, self._not_before.get(tenant_id, 0.0)
            )

    def acquire(self, tenant_id: str) -> None:
        """Waits for the tenant's cool-down and for room in its window, then
        counts one call. Raises GraphThrottledError instead of a long wait."""
        while True:
            with self._lock:
                now = self._clock()
                wait = self._not_before.get(tenant_id, 0.0) - now
                reason = "tenant cooling down after a 429"
                if wait <= 0:
                    calls = self._calls.setdefault(tenant_id, deque())
                    while (
                        calls and calls[0] <= now - self._policy.budget_window_seconds
                    ):
                        calls.popleft()
                    if len(calls) < self._policy.budget_calls:
                        calls.append(now)
                        return
                    wait = calls[0] + self._policy.budget_window_seconds - now
                    reason = "in-process call budget for the tenant is spent"
            bound = (
                self._policy.max_retry_after_seconds
                if reason.startswith("tenant")
                else self._policy.budget_max_wait_seconds
            )
            if wait > bound:
                logger.warning(
                    "Graph call for tenant %s not made: %s (%.1f s)",
                    tenant_id,
                    reason,
                    wait,
                )
                raise GraphThrottledError(tenant_id, wait, reason)
            self._sleep(wait)


class GraphPresenceClient:
    """Reads presence for up to 650 users of one tenant per call. Thread-safe;
    create one per process and share it."""

    def __init__(
        self,
        settings: GraphSettings,
        *,
        policy: RetryPolicy | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._policy = policy or RetryPolicy()
        self._session = build_session(settings.ca_bundle, pool_size)
        self._tokens = AppTokenProvider(
            settings, TimeoutHttpClient(self._session, self._policy.timeout)
        )
        self._url = settings.base_url.rstrip("/") + PRESENCE_ENDPOINT
        self._clock = clock
        self._sleep = sleep
        self._jitter = jitter
        self.budget = CallBudget(self._policy, clock, sleep)

    @classmethod
    def from_settings(cls, **kwargs: Any) -> GraphPresenceClient:
        return cls(get_settings().graph, **kwargs)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> GraphPresenceClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def get_presences(
        self, tenant_id: str, user_ids: Sequence[str]
    ) -> list[ObservedPresence]:
        """Presence of ``user_ids`` (at most 650) in one Graph call. Ids Graph
        does not answer are absent; see :func:`missing_ids`."""
        ids = list(user_ids)
        if len(ids) > MAX_IDS_PER_CALL:
            raise ValueError(f"at most {MAX_IDS_PER_CALL} ids per call, got {len(ids)}")
        if not ids:
            return []
        throttle_retries = unavailable_retries = 0
        token_refreshed = False
        while True:
            self.budget.acquire(tenant_id)
            token = self._token(tenant_id, refresh=False)
            response = self._post(tenant_id, ids, token)
            if response is None:  # connection error or timeout
                unavailable_retries = self._back_off_or_raise(
                    tenant_id, unavailable_retries, None, "no answer from Graph"
                )
                continue
            status = response.status_code
            if status == 200:
                return self._parse(tenant_id, response)
            if status == 401 and not token_refreshed:
                token_refreshed = True
                self._token(tenant_id, refresh=True)
                continue
            if status == 429:
                throttle_retries = self._wait_out_throttle(
                    tenant_id, response, throttle_retries
                )
                continue
            if status >= 500:
                unavailable_retries = self._back_off_or_raise(
                    tenant_id,
                    unavailable_retries,
                    status,
                    f"Graph answered HTTP {status}",
                )
                continue
            code, message = _graph_error(response)
            if status in (401, 403):
                raise GraphAuthError(
                    tenant_id,
                    f"Graph refused the token: {code}: {message}",
                    code,
                    status,
                )
            raise GraphRequestError(tenant_id, status, code, message)

    # Steps ----------------------------------------------------------------

    def _token(self, tenant_id: str, refresh: bool) -> str:
        try:
            if refresh:
                return self._tokens.refresh(tenant_id)
            return self._tokens.token(tenant_id)
        except requests.RequestException as error:
            raise GraphUnavailableError(
                tenant_id, f"identity platform unreachable: {type(error).__name__}"
            ) from None

    def _post(
        self, tenant_id: str, ids: list[str], token: str
    ) -> requests.Response | None:
        started = self._clock()
        try:
            response = self._session.post(
                self._url,
                json={"ids": ids},
                headers={"Authorization": f"Bearer {token}"},
                timeout=self._policy.timeout,
            )
        except (requests.ConnectionError, requests.Timeout) as error:
            logger.warning(
                "getPresencesByUserId tenant %s: %d ids, no answer (%s)",
                tenant_id,
                len(ids),
                type(error).__name__,
            )
            return None
        logger.info(
            "getPresencesByUserId tenant %s: %d ids, HTTP %d in %.0f ms",
            tenant_id,
            len(ids),
            response.status_code,
            (self._clock() - started) * 1000,
        )
        return response

    def _wait_out_throttle(
        self, tenant_id: str, response: requests.Response, retries: int
    ) -> int:
        retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
        if retry_after is None:
            retry_after = self._policy.backoff(retries, self._jitter())
        # Every call to this tenant from this process waits, not just this one.
        self.budget.hold_off(tenant_id, retry_after)
        if retry_after > self._policy.max_retry_after_seconds or (
            retries >= self._policy.max_throttle_retries
        ):
            logger.warning(
                "Graph throttled tenant %s for %.1f s; handing back to the caller",
                tenant_id,
                retry_after,
            )
            raise GraphThrottledError(tenant_id, retry_after, "Graph answered 429")
        logger.warning(
            "Graph throttled tenant %s for %.1f s; retrying after it",
            tenant_id,
            retry_after,
        )
        return retries + 1  # the wait itself happens in budget.acquire

    def _back_off_or_raise(
        self, tenant_id: str, retries: int, status: int | None, what: str
    ) -> int:
        if retries >= self._policy.max_unavailable_retries:
            logger.warning(
                "%s for tenant %s; giving up after %d retries", what, tenant_id, retries
            )
            raise GraphUnavailableError(
                tenant_id, f"{what} after {retries} retries", status
            )
        delay = self._policy.backoff(retries, self._jitter())
        logger.info("%s for tenant %s; retrying in %.2f s", what, tenant_id, delay)
        self._sleep(delay)
        return retries + 1

    @staticmethod
    def _parse(tenant_id: str, response: requests.Response) -> list[ObservedPresence]:
        try:
            items = response.json().get("value")
        except ValueError:
            items = None
        if not isinstance(items, list):
            raise GraphUnavailableError(
                tenant_id, "Graph answered 200 without a value list", 200
            )
        observed = []
        for item in items:
            user_id = item.get("id") if isinstance(item, dict) else None
            if not user_id:
                logger.warning(
                    "Graph presence entry without id for tenant %s skipped", tenant_id
                )
                continue
            sequence = item.get("sequenceNumber")
            observed.append(
                ObservedPresence(
                    # GUIDs compare case-insensitively; ours are lower case.
                    user_id=str(user_id).lower(),
                    presence=Presence(
                        # Open sets: whatever Graph says is kept as it is.
                        availability=str(item.get("availability") or "PresenceUnknown"),
                        activity=str(item.get("activity") or "PresenceUnknown"),
                        sequence_number=None if sequence is None else str(sequence),
                    ),
                )
            )
        return observed


def _retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds, or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _graph_error(response: requests.Response) -> tuple[str, str]:
    try:
        error = response.json().get("error") or {}
        return str(error.get("code") or "unknown"), str(error.get("message") or "")
    except (ValueError, AttributeError):
        return "unknown", response.reason or ""
