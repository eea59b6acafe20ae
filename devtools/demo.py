"""The local run's demo: register the Graph simulator's demo tenant through the
real HTTP API, say how to try it, and show presence events as short lines.

Registration goes through ``POST .../subscriptions/batch`` with the function
key, exactly as a customer would call it, so the demo exercises the whole
path: API → command queue → apply → poll fan-out → Graph → Event Grid.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import requests

logger = logging.getLogger(__name__)

Print = Callable[[str], None]

BATCH_LIMIT = 1000  # ids per batch request (docs/api.md)
HEALTH_TIMEOUT = 90.0  # the host imports the app and creates queues first
APPLY_TIMEOUT = 60.0
REQUEST_TIMEOUT = 10.0
RETRY_PAUSE = 1.0
_ATTEMPTS = 5


class DemoError(RuntimeError):
    """The demo could not register its tenant; the message says why."""


class DemoStopped(Exception):
    """run_local is stopping: the demo gives up quietly."""


@dataclass(frozen=True)
class DemoTarget:
    api_url: str  # http://127.0.0.1:7071/api
    function_key: str
    tenant_id: str
    control_url: str  # the Graph simulator's /_sim
    ca_bundle: str  # the simulator's throwaway CA
    sink_url: str  # the Event Grid sink, for its /_sink/events
    poll_schedule: str


@dataclass(frozen=True)
class DemoResult:
    tenant_id: str
    user_ids: list[str]
    version: str


def run_demo(target: DemoTarget, stop: threading.Event, out: Print) -> DemoResult:
    """Waits for the API, registers every simulator user of the tenant, waits
    until the registration is applied, then prints how to try the API.
    Raises DemoStopped once ``stop`` is set, DemoError when it cannot go on."""
    session = requests.Session()
    # No proxies or REQUESTS_CA_BUNDLE from the environment: loopback only,
    # and the simulator is trusted through its own CA (passed per call).
    session.trust_env = False
    with session:
        wait_until_healthy(session, target.api_url, stop)
        user_ids = simulator_user_ids(session, target)
        if not user_ids:
            raise DemoError(f"the Graph simulator has no users in {target.tenant_id}")
        version = register(session, target, user_ids, stop)
        wait_until_applied(session, target, user_ids[-1], version, stop)
    result = DemoResult(target.tenant_id, user_ids, version)
    for line in summary(target, result):
        out(line)
    return result


def wait_until_healthy(
    session: requests.Session,
    api_url: str,
    stop: threading.Event,
    timeout: float = HEALTH_TIMEOUT,
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = session.get(f"{api_url}/health", timeout=REQUEST_TIMEOUT)
            if response.status_code == 200:
                return
            seen = f"answered {response.status_code}"
        except requests.RequestException as error:
            seen = f"did not answer ({type(error).__name__})"
        if time.monotonic() > deadline:
            raise DemoError(f"{api_url}/health {seen} for {timeout:.0f}s")
        _pause(stop, 0.25)


def simulator_user_ids(session: requests.Session, target: DemoTarget) -> list[str]:
    url = f"{target.control_url}/tenants/{target.tenant_id}/users"
    try:
        response = session.get(url, verify=target.ca_bundle, timeout=REQUEST_TIMEOUT)
    except requests.RequestException as error:
        raise DemoError(f"GET {url} failed: {error}") from error
    if response.status_code != 200:
        raise DemoError(f"GET {url} answered {response.status_code}")
    user_ids: list[str] = response.json()["user_ids"]
    return user_ids


def register(
    session: requests.Session,
    target: DemoTarget,
    user_ids: Sequence[str],
    stop: threading.Event,
) -> str:
    """Registers the users in batches; returns the last batch's version."""
    url = f"{target.api_url}/tenants/{target.tenant_id}/subscriptions/batch"
    run = secrets.token_hex(4)
    version = ""
    for start in range(0, len(user_ids), BATCH_LIMIT):
        chunk = list(user_ids[start : start + BATCH_LIMIT])
        # A retry after a timeout replays the same command instead of
        # queueing a second one.
        headers = {
            "x-functions-key": target.function_key,
            "Idempotency-Key": f"local-demo-{run}-{start}",
        }
        response = _post_with_retries(session, url, {"register": chunk}, headers, stop)
        if response.status_code != 202:
            raise DemoError(
                f"POST {url} answered {response.status_code}: {response.text[:300]}"
            )
        version = str(response.json()["version"])
    logger.debug("registered %d users, version %s", len(user_ids), version)
    return version


def wait_until_applied(
    session: requests.Session,
    target: DemoTarget,
    user_id: str,
    version: str,
    stop: threading.Event,
    timeout: float = APPLY_TIMEOUT,
) -> None:
    """Polls one subscription until it carries ``version`` (or a later one:
    versions compare as strings, docs/api.md)."""
    url = f"{target.api_url}/tenants/{target.tenant_id}/subscriptions/{user_id}"
    headers = {"x-functions-key": target.function_key}
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = session.get(url, headers=headers, timeout=REQUEST_TIMEOUT)
            if response.status_code == 200 and response.json()["version"] >= version:
                return
        except requests.RequestException:
            pass  # the next round tells
        if time.monotonic() > deadline:
            raise DemoError(f"the registration was not applied within {timeout:.0f}s")
        # Applying takes a second or two; every 404 on the way is a host log line.
        _pause(stop, 1.0)


def summary(target: DemoTarget, result: DemoResult) -> list[str]:
    """What a newcomer needs, ready to paste into another terminal."""
    rule = "=" * 78
    return [
        rule,
        f"Demo tenant {result.tenant_id}: {len(result.user_ids)} agents "
        "registered through the API.",
        f"Graph is polled on '{target.poll_schedule}'; each presence event "
        "shows below as a 'presence' line.",
        "Try it in another terminal:",
        "",
        f"  API={target.api_url}",
        f"  KEY={target.function_key}",
        f"  T={result.tenant_id}",
        f"  U={result.user_ids[0]}",
        '  curl -s -H "x-functions-key: $KEY" $API/tenants/$T/presence/$U',
        '  curl -s -H "x-functions-key: $KEY" $API/tenants/$T/subscriptions/$U',
        '  curl -s -H "x-functions-key: $KEY" '
        '"$API/tenants/$T/subscriptions?state=active&limit=5"',
        "  curl -s $API/health",
        f"  curl -s {target.sink_url}/_sink/events   # every event received",
        "",
        "Ctrl-C stops everything.",
        rule,
    ]


def _post_with_retries(
    session: requests.Session,
    url: str,
    body: dict[str, list[str]],
    headers: dict[str, str],
    stop: threading.Event,
) -> requests.Response:
    # 503 means nothing was accepted (storage busy); retrying is what the API
    # asks for, with the same Idempotency-Key.
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            response = session.post(
                url, json=body, headers=headers, timeout=REQUEST_TIMEOUT
            )
            if response.status_code != 503 or attempt == _ATTEMPTS:
                return response
        except requests.RequestException as error:
            if attempt == _ATTEMPTS:
                raise DemoError(f"POST {url} failed: {error}") from error
        _pause(stop, RETRY_PAUSE * attempt)
    raise AssertionError("unreachable")


def _pause(stop: threading.Event, seconds: float) -> None:
    if stop.wait(seconds):
        raise DemoStopped


# Showing the events ---------------------------------------------------------

# simulators.eventgrid_sink.describe_event's line for a Presence.Changed event.
_SINK_EVENT = re.compile(
    r"^event \S+ tenant (?P<tenant>\S+) user (?P<user>\S+): (?P<now>\S+) "
    r"\((?P<before>was [^)]*|first seen)\)(?: seq \S+)? at (?P<at>\S+)$"
)
_GUID = re.compile(
    r"\b([0-9a-fA-F]{8})-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
    r"[0-9a-fA-F]{12}\b"
)
# First presences arrive in a burst (one per agent on the first poll); they
# are counted and shown as one line once the burst has been quiet this long.
FIRST_SEEN_QUIET_SECONDS = 1.0


def short_ids(text: str) -> str:
    """GUIDs cut to their first 8 hex digits: enough to tell agents apart."""
    return _GUID.sub(r"\1", text)


def presence_line(sink_line: str) -> str | None:
    """``presence 10:16:00 tenant dec0de00 user 9b2d4c1e: Available/Available
    (was Away/Away)`` for a sink event line; None for other lines."""
    match = _SINK_EVENT.match(sink_line)
    if match is None:
        return None
    observed = match["at"]
    clock = observed[11:19] if len(observed) >= 19 else observed
    return short_ids(
        f"presence {clock} tenant {match['tenant']} user {match['user']}: "
        f"{match['now']} ({match['before']})"
    )


class PresenceLinePrinter:
    """Turns the sink's output into readable lines; thread-safe."""

    def __init__(self, out: Print) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._first_seen = 0
        self._example = ""
        self._quiet_at = 0.0
        self._timer: threading.Timer | None = None

    def sink_line(self, line: str) -> None:
        readable = presence_line(line)
        if readable is None:
            self.flush()
            self._out(f"sink: {short_ids(line)}")
        elif readable.endswith("(first seen)"):
            self._count_first_seen(readable)
        else:
            self.flush()
            self._out(readable)

    def flush(self) -> None:
        """Prints the count of first presences not shown yet, if any."""
        with self._lock:
            count, example = self._first_seen, self._example
            self._first_seen, self._example = 0, ""
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if count:
            example = example.removeprefix("presence ").removesuffix(" (first seen)")
            self._out(
                f"presence: first presence of {count} agent(s) received "
                f"(e.g. {example}); changes follow"
            )

    def _count_first_seen(self, readable: str) -> None:
        with self._lock:
            self._first_seen += 1
            self._example = self._example or readable
            self._quiet_at = time.monotonic() + FIRST_SEEN_QUIET_SECONDS
            if self._timer is None:
                self._start_timer(FIRST_SEEN_QUIET_SECONDS)

    def _start_timer(self, seconds: float) -> None:
        self._timer = threading.Timer(seconds, self._on_timer)
        self._timer.daemon = True
        self._timer.start()

    def _on_timer(self) -> None:
        with self._lock:
            left = self._quiet_at - time.monotonic()
            if left > 0:  # more arrived meanwhile: wait for quiet
                self._start_timer(left)
                return
            self._timer = None
        self.flush()
