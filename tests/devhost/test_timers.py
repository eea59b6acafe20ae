"""Timer triggers: NCRONTAB with seconds, %SETTING% schedules, no overlap,
past_due after missed ticks, run_on_startup."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from devhost.host import Host
from devhost.timers import ScheduleError, TimerRunner
from tests.devhost.conftest import TIMER_APP, read_records, wait_for


def test_two_second_schedule_fires_every_two_seconds(
    start_host: Callable[..., Host], record_dir: Path
) -> None:
    started = time.time()
    start_host(app=TIMER_APP)
    runs = wait_for(
        lambda: (lambda r: r if len(r) >= 6 else None)(
            read_records(record_dir, "fast_tick")
        ),
        16,
        "six runs of a two-second timer",
    )
    starts = [run["start"] for run in runs]
    # Six runs span five periods: about ten seconds, never faster.
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert all(1.5 <= gap <= 2.5 for gap in gaps), gaps
    # The first tick comes within one period (plus start-up time).
    assert starts[0] - started <= 5
    # Runs start just after even seconds: */2 applies to the seconds field.
    assert all(int(start) % 2 == 0 for start in starts), starts
    assert not any(run["past_due"] for run in runs)


def test_timer_never_overlaps_itself_and_reports_past_due(
    start_host: Callable[..., Host], record_dir: Path
) -> None:
    # slow_tick runs 1.6 s on a one-second schedule.
    start_host(app=TIMER_APP)
    runs = wait_for(
        lambda: (lambda r: r if len(r) >= 4 else None)(
            read_records(record_dir, "slow_tick")
        ),
        15,
        "four slow timer runs",
    )
    for earlier, later in itertools.pairwise(runs):
        assert later["start"] >= earlier["end"], (earlier, later)
    # The startup run is followed by an on-time tick; from then on each run
    # overruns the next tick, so every later run is past due.
    assert all(run["past_due"] for run in runs[2:]), runs


def test_run_on_startup(start_host: Callable[..., Host], record_dir: Path) -> None:
    start_host(app=TIMER_APP)
    [run] = wait_for(
        lambda: read_records(record_dir, "startup_only"), 10, "the startup run"
    )
    assert run["past_due"] is False


def test_schedule_setting_must_exist(
    start_host: Callable[..., Host], app_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = app_dir / "local.settings.json"
    settings.write_text(settings.read_text().replace("FAST_TICK_SCHEDULE", "OTHER"))
    monkeypatch.delenv("FAST_TICK_SCHEDULE", raising=False)
    with pytest.raises(Exception, match="FAST_TICK_SCHEDULE"):
        start_host(app=TIMER_APP)


@pytest.mark.parametrize("schedule", ["*/5 * * * *", "00:05:00", "61 * * * * *"])
def test_invalid_schedules_are_rejected(schedule: str) -> None:
    from devhost.functions import FunctionInfo, TimerFunction

    function = TimerFunction(FunctionInfo("t", print, "timer"), schedule, False)
    with pytest.raises(ScheduleError):
        TimerRunner(function, {})
