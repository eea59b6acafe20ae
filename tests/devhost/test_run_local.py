"""devtools.run_local: Azurite, the Graph simulator, the Event Grid sink and the
real app in devhost, with the demo tenant, in one command."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.devhost.conftest import REPO_ROOT, wait_for

pytestmark = pytest.mark.slow


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for probe in sockets:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


PORT_SETTINGS = (
    "AZURITE_BLOB_PORT",
    "AZURITE_QUEUE_PORT",
    "AZURITE_TABLE_PORT",
    "HOST_PORT",
    "GRAPH_SIM_PORT",
    "EVENTGRID_SINK_PORT",
)


def run_local_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        zip(PORT_SETTINGS, map(str, free_ports(len(PORT_SETTINGS))), strict=True)
    )
    env.update(LOCAL_DATA_DIR=str(tmp_path / "local"), DEMO_AGENTS="0")
    env.pop("POLL_SCHEDULE", None)
    return env


@pytest.mark.parametrize(
    ("setting", "description"),
    [
        ("AZURITE_QUEUE_PORT", "Azurite queue"),
        ("GRAPH_SIM_PORT", "Graph simulator"),
        ("EVENTGRID_SINK_PORT", "Event Grid sink"),
    ],
)
def test_busy_port_is_a_clear_error(
    tmp_path: Path, setting: str, description: str
) -> None:
    env = run_local_env(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", int(env[setting])))
        busy.listen()
        result = subprocess.run(
            [sys.executable, "-m", "devtools.run_local"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert result.stderr == (
        f"run_local: port {env[setting]} for {description} ({setting}) "
        "is already in use\n"
    )
    assert not (tmp_path / "local").exists()  # nothing was started


def start_run_local(
    env: dict[str, str], *args: str
) -> tuple[subprocess.Popen[str], list[str], threading.Thread]:
    """The run command as a child process, its output collected as it comes."""
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools.run_local", *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []

    def collect() -> None:
        assert process.stdout is not None
        lines.extend(process.stdout)

    reader = threading.Thread(target=collect, daemon=True)
    reader.start()
    return process, lines, reader


def test_starts_storage_and_host_and_stops_both_on_ctrl_c(tmp_path: Path) -> None:
    env = run_local_env(tmp_path)
    del env["DEMO_AGENTS"]  # --no-demo alone must skip the demo
    process, lines, reader = start_run_local(env, "--no-demo")
    try:
        api = f"http://127.0.0.1:{env['HOST_PORT']}/api"
        wait_for(
            lambda: any(f"listening on {api}" in line for line in lines),
            60,
            "the host to listen",
        )
        assert any(f"API at {api}" in line for line in lines)
        # The health check answers only when table and queue storage do.
        assert requests.get(f"{api}/health", timeout=10).status_code == 200
        assert (tmp_path / "local" / "azurite").is_dir()
        assert not any("demo tenant" in line for line in lines)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0, "".join(lines)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(5)
    assert "run_local: stopped\n" in lines
    assert_ports_free(env)


def assert_ports_free(env: dict[str, str]) -> None:
    for setting in PORT_SETTINGS:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", int(env[setting])))


def descendants(pid: int) -> dict[int, str]:
    """Every process below ``pid``, as {pid: its start time} (to tell a pid
    that was reused later from the same process)."""
    children: dict[int, list[int]] = {}
    start_times: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        # Fields after the command name, which may hold spaces: state, ppid...
        fields = stat.rsplit(")", 1)[1].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        start_times[int(entry.name)] = fields[19]
    found: dict[int, str] = {}
    pending = list(children.get(pid, []))
    while pending:
        child = pending.pop()
        found[child] = start_times[child]
        pending.extend(children.get(child, []))
    return found


def still_running(pid: int, start_time: str) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    return fields[19] == start_time and fields[0] != "Z"


def test_demo_registers_agents_and_events_flow_then_ctrl_c_stops_all(
    tmp_path: Path,
) -> None:
    env = run_local_env(tmp_path)
    tenant = str(uuid.uuid4())
    env.update(
        DEMO_AGENTS="50",
        DEMO_TENANT=tenant,
        DEMO_TICK_SECONDS="1",
        DEMO_CHANGE_FRACTION="0.1",
        POLL_SCHEDULE="*/2 * * * * *",
        OUTBOX_SWEEP_SCHEDULE="*/5 * * * * *",
    )
    process, lines, reader = start_run_local(env)
    session = requests.Session()
    session.trust_env = False  # loopback: no proxy, no REQUESTS_CA_BUNDLE
    api = f"http://127.0.0.1:{env['HOST_PORT']}/api"
    sink = f"http://127.0.0.1:{env['EVENTGRID_SINK_PORT']}"
    simulator = f"https://127.0.0.1:{env['GRAPH_SIM_PORT']}/_sim"
    ca_bundle = tmp_path / "local" / "graph-ca" / "graph-simulator-ca.pem"

    def demo_events() -> list[dict[str, Any]]:
        if process.poll() is not None:
            pytest.fail(f"run_local exited early:\n{''.join(lines)}")
        try:
            events = session.get(f"{sink}/_sink/events", timeout=5).json()["events"]
        except requests.RequestException:
            return []
        return [e for e in events if e["data"]["tenantId"] == tenant]

    def simulator_users() -> list[str] | None:
        try:
            answer = session.get(
                f"{simulator}/tenants/{tenant}/users", verify=str(ca_bundle), timeout=5
            )
        except requests.RequestException:
            return None
        return answer.json()["user_ids"] if answer.status_code == 200 else None

    try:
        wait_for(lambda: ca_bundle.exists(), 60, "the Graph simulator's CA")
        agents = wait_for(simulator_users, 30, "the simulator's demo tenant")
        assert len(agents) == 50
        # Every agent's first presence, then at least one change.
        wait_for(
            lambda: (
                {e["data"]["userId"] for e in demo_events()} >= set(agents)
                and any(e["data"]["previous"] for e in demo_events())
            ),
            90,
            "presence events for every demo agent",
        )
        key = "local-dev-function-key-not-a-secret"
        url = f"{api}/tenants/{tenant}/presence/{agents[0]}"
        answer = session.get(url, headers={"x-functions-key": key}, timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json()["userId"] == agents[0]
        assert session.get(url, timeout=10).status_code == 401

        output = "".join(lines)
        assert f"Demo tenant {tenant}: 50 agents registered" in output
        assert f"KEY={key}" in output
        short = tenant[:8]
        change = re.compile(
            rf"^presence \d\d:\d\d:\d\d tenant {short} user [0-9a-f]{{8}}: "
            r"\S+/\S+ \(was \S+/\S+\)$",
            re.MULTILINE,
        )
        wait_for(lambda: change.search("".join(lines)), 10, "a readable change line")
        assert "presence: first presence of " in output

        children = descendants(process.pid)
        # Azurite, the Graph simulator, the sink and the host at least.
        assert len(children) >= 4, children
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=90) == 0, "".join(lines)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        session.close()
    reader.join(5)
    assert "run_local: stopped\n" in lines
    left = {pid for pid, started in children.items() if still_running(pid, started)}
    assert not left, f"still running after run_local exited: {left}"
    assert_ports_free(env)
