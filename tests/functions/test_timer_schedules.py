"""The timers' schedules: the app setting when it is set, the default when
it is not (the host would refuse to index a timer naming a missing one)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import azure.functions as func
import pytest
from azure.functions.decorators.timer import TimerTrigger

import functions.polling
from shared import settings as settings_module


def schedules() -> dict[str, str]:
    """Indexes a fresh app with the polling blueprint, as the host would."""
    module = importlib.reload(functions.polling)
    app = func.FunctionApp()
    app.register_functions(module.bp)
    found: dict[str, str] = {}
    for function in app.get_functions():
        trigger = function.get_trigger()
        if isinstance(trigger, TimerTrigger):
            found[str(function.get_function_name())] = trigger.schedule
    return found


@pytest.fixture(autouse=True)
def _reload_after() -> Iterator[None]:
    yield
    importlib.reload(functions.polling)


def test_set_schedules_are_referenced_for_the_host_to_resolve(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POLL_SCHEDULE", "*/10 * * * * *")
    monkeypatch.setenv("OUTBOX_SWEEP_SCHEDULE", "5 * * * * *")

    assert schedules() == {
        "poll_fan_out": "%POLL_SCHEDULE%",
        "outbox_sweep": "%OUTBOX_SWEEP_SCHEDULE%",
    }


def test_missing_schedules_fall_back_to_the_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("POLL_SCHEDULE", raising=False)
    monkeypatch.setenv("OUTBOX_SWEEP_SCHEDULE", "  ")

    assert schedules() == {
        "poll_fan_out": settings_module.DEFAULT_POLL_SCHEDULE,
        "outbox_sweep": settings_module.DEFAULT_OUTBOX_SWEEP_SCHEDULE,
    }
    assert settings_module.DEFAULT_POLL_SCHEDULE == "*/30 * * * * *"
