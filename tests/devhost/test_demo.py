"""The local run's demo pieces that need no processes: readable event lines
and the run settings."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from devtools import demo
from devtools.demo import PresenceLinePrinter, presence_line, short_ids
from devtools.local_services import (
    DEFAULT_DEMO_TENANT,
    DEMO_POLL_SCHEDULE,
    LocalConfig,
    StartError,
)
from simulators.eventgrid_sink import describe_event
from tests.devhost.conftest import wait_for

TENANT = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
USER = "9b2d4c1e-6f3a-4b8e-a2d7-1c5e8f9a0b3d"


def sink_line(previous: dict[str, str] | None) -> str:
    """The line the sink prints, made by the sink's own code."""
    data = {
        "tenantId": TENANT,
        "userId": USER,
        "availability": "Available",
        "activity": "Available",
        "previous": previous,
        "sequenceNumber": "00000000000000000042",
        "observedAt": "2026-03-01T10:16:00.412331Z",
    }
    return describe_event({"id": "e1", "type": "Presence.Changed", "data": data})


def test_a_change_becomes_a_short_readable_line() -> None:
    line = sink_line({"availability": "Away", "activity": "Away"})
    assert presence_line(line) == (
        "presence 10:16:00 tenant 3f2504e0 user 9b2d4c1e: "
        "Available/Available (was Away/Away)"
    )


def test_other_lines_are_not_presence_lines() -> None:
    assert presence_line("event e2 Other.Type from /x") is None
    assert short_ids(f"oops {TENANT}") == "oops 3f2504e0"


def test_first_presences_are_counted_into_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(demo, "FIRST_SEEN_QUIET_SECONDS", 0.05)
    shown: list[str] = []
    lock = threading.Lock()

    def out(text: str) -> None:
        with lock:
            shown.append(text)

    printer = PresenceLinePrinter(out)
    for _ in range(3):
        printer.sink_line(sink_line(None))
    wait_for(lambda: shown, 5, "the burst to be reported")
    assert shown == [
        "presence: first presence of 3 agent(s) received (e.g. 10:16:00 tenant "
        "3f2504e0 user 9b2d4c1e: Available/Available); changes follow"
    ]
    # A change right after a burst flushes the count first, in order.
    printer.sink_line(sink_line(None))
    printer.sink_line(sink_line({"availability": "Away", "activity": "Away"}))
    assert shown[1].startswith("presence: first presence of 1 agent(s)")
    assert shown[2].endswith("(was Away/Away)")
    printer.flush()
    assert len(shown) == 3


def test_defaults_are_the_demo_ones() -> None:
    config = LocalConfig.from_environ({})
    assert (config.graph_sim_port, config.sink_port) == (0, 0)
    assert config.demo_agents == 300
    assert config.demo_tenant == DEFAULT_DEMO_TENANT
    assert (config.change_fraction, config.tick_seconds) == (0.05, 10.0)
    assert config.poll_schedule == DEMO_POLL_SCHEDULE
    assert config.data_dir.parts[-1] == ".local"


def test_settings_from_the_environment_win() -> None:
    config = LocalConfig.from_environ(
        {
            "POLL_SCHEDULE": "*/30 * * * * *",
            "DEMO_AGENTS": "0",
            "DEMO_TENANT": TENANT.upper(),
            "GRAPH_SIM_PORT": "8443",
            "LOCAL_DATA_DIR": "/tmp/x",
        }
    )
    assert config.poll_schedule == "*/30 * * * * *"
    assert config.demo_agents == 0
    assert config.demo_tenant == TENANT
    assert config.graph_sim_port == 8443
    assert config.data_dir == Path("/tmp/x")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DEMO_TENANT", "acme", "DEMO_TENANT='acme' is not a GUID"),
        ("DEMO_AGENTS", "-3", "DEMO_AGENTS='-3' is not a whole number"),
        ("EVENTGRID_SINK_PORT", "70000", "EVENTGRID_SINK_PORT='70000' is not a port"),
        ("HOST_PORT", "0", "HOST_PORT=0: this port must be given"),
        ("DEMO_CHANGE_FRACTION", "2", "DEMO_CHANGE_FRACTION='2' is not a number"),
        ("DEMO_TICK_SECONDS", "soon", "DEMO_TICK_SECONDS='soon' is not a number"),
    ],
)
def test_bad_settings_are_one_line_errors(name: str, value: str, message: str) -> None:
    with pytest.raises(StartError) as caught:
        LocalConfig.from_environ({name: value})
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)
