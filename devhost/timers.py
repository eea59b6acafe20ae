"""Timer triggers on six-field NCRONTAB schedules (seconds first).

One thread per timer runs the function, so a timer never overlaps itself.
When a run ends after one or more later ticks have passed, those missed
ticks are collapsed into a single immediate run with ``past_due=True``, as
the real host does when it finds an occurrence in the past.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from azure.functions.timer import TimerRequest
from croniter import croniter

from devhost.functions import TimerFunction, invoke
from devhost.settings import resolve_references

logger = logging.getLogger(__name__)

# A run that starts this late after its tick counts as past due.
PAST_DUE_TOLERANCE = timedelta(seconds=1)


class ScheduleError(ValueError):
    """A timer schedule is not a valid six-field NCRONTAB expression."""


def parse_schedule(expression: str) -> str:
    """Validate a six-field expression (second minute hour day month weekday)."""
    fields = expression.split()
    if len(fields) != 6:
        raise ScheduleError(
            f"schedule {expression!r} must have six fields "
            "(second minute hour day month day-of-week); TimeSpan schedules "
            "are not supported by devhost"
        )
    if not croniter.is_valid(expression, second_at_beginning=True):
        raise ScheduleError(f"schedule {expression!r} is not a valid NCRONTAB")
    return expression


def next_tick(expression: str, after: datetime) -> datetime:
    # second_at_beginning: without it croniter reads the first field as
    # minutes and "0 */5 * * * *" silently means something else.
    schedule = croniter(expression, after, second_at_beginning=True)
    return schedule.get_next(datetime)


def latest_tick_at_or_before(expression: str, moment: datetime) -> datetime:
    schedule = croniter(
        expression, moment + timedelta(microseconds=1), second_at_beginning=True
    )
    return schedule.get_prev(datetime)


class TimerRunner:
    """Runs one timer function on its schedule in its own thread."""

    def __init__(self, function: TimerFunction, settings: Mapping[str, str]) -> None:
        self._function = function
        self._schedule = parse_schedule(resolve_references(function.schedule, settings))
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run_loop, name=f"timer-{function.info.name}", daemon=True
        )

    @property
    def name(self) -> str:
        return self._function.info.name

    def start(self) -> None:
        self._thread.start()
        logger.info("Timer function %s scheduled '%s'", self.name, self._schedule)

    def stop(self) -> None:
        self._stopping.set()

    def wait_stopped(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run_loop(self) -> None:
        if self._function.run_on_startup:
            self._run_once(past_due=False)
        due = next_tick(self._schedule, _now())
        missed_ticks = False
        while not self._stopping.is_set():
            wait = (due - _now()).total_seconds()
            if wait > 0 and self._stopping.wait(wait):
                return
            late = _now() - due > PAST_DUE_TOLERANCE
            self._run_once(past_due=missed_ticks or late)
            following = next_tick(self._schedule, due)
            now = _now()
            # Ticks missed while running collapse into one past-due run.
            missed_ticks = following <= now
            if missed_ticks:
                due = latest_tick_at_or_before(self._schedule, now)
            else:
                due = following

    def _run_once(self, past_due: bool) -> None:
        if past_due:
            logger.info("Timer %s is past due", self.name)
        try:
            invoke(self._function.info, TimerRequest(past_due=past_due))
        except Exception:
            logger.exception("Timer function %s failed", self.name)


def _now() -> datetime:
    return datetime.now(UTC)
