"""devtools.run_local: Azurite plus the real app in devhost, one command."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

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


def run_local_env(tmp_path: Path) -> dict[str, str]:
    blob, queue, table, host = free_ports(4)
    env = dict(os.environ)
    env.update(
        AZURITE_BLOB_PORT=str(blob),
        AZURITE_QUEUE_PORT=str(queue),
        AZURITE_TABLE_PORT=str(table),
        HOST_PORT=str(host),
        LOCAL_DATA_DIR=str(tmp_path / "local"),
    )
    return env


def test_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    env = run_local_env(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", int(env["AZURITE_QUEUE_PORT"])))
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
        f"run_local: port {env['AZURITE_QUEUE_PORT']} for Azurite queue "
        "(AZURITE_QUEUE_PORT) is already in use\n"
    )


def test_starts_storage_and_host_and_stops_both_on_ctrl_c(tmp_path: Path) -> None:
    env = run_local_env(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools.run_local"],
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
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0, "".join(lines)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(5)
    assert "run_local: stopped\n" in lines
    for port in ("AZURITE_QUEUE_PORT", "HOST_PORT"):
        with socket.socket() as probe:  # both released
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", int(env[port])))
