"""devhost as a command: start-up line, busy port, graceful SIGTERM."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from azure.storage.queue import QueueClient

from devtools.azurite import Azurite
from tests.devhost.conftest import (
    REPO_ROOT,
    SAMPLE_APP,
    HostProcess,
    read_records,
    wait_for,
)
from tests.devhost.sample_app import WORK_QUEUE

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(
    app_dir: Path,
    processes: list[HostProcess],
    *extra: str,
    env: dict[str, str] | None = None,
) -> tuple[HostProcess, str]:
    args = ["--script-root", str(app_dir), "--app", SAMPLE_APP, *extra]
    process = HostProcess(
        ["--port", str(free_port()), *args], env=env or dict(os.environ)
    )
    processes.append(process)
    return process, process.wait_listening()


def enqueue(connection: str, body: str) -> None:
    client = QueueClient.from_connection_string(connection, WORK_QUEUE)
    client.send_message(base64.b64encode(body.encode()).decode())


def test_prints_where_it_listens_and_serves(
    app_dir: Path, storage_connection: str, host_processes: list[HostProcess]
) -> None:
    process, url = start(app_dir, host_processes)
    assert url.startswith("http://127.0.0.1:") and url.endswith("/api")
    assert requests.get(f"{url}/teapot", timeout=10).status_code == 418
    assert process.terminate() == 0


def test_port_in_use_is_a_one_line_error_with_exit_code_2(
    app_dir: Path, storage_connection: str
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        command = [sys.executable, "-m", "devhost", "--port", str(port)]
        command += ["--script-root", str(app_dir), "--app", SAMPLE_APP]
        result = subprocess.run(
            command,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "devhost:" in line]
    assert errors == [f"devhost: port {port} on 127.0.0.1 is already in use"]


def test_sigterm_lets_an_in_flight_message_finish(
    app_dir: Path,
    storage_connection: str,
    record_dir: Path,
    host_processes: list[HostProcess],
) -> None:
    process, _ = start(app_dir, host_processes, "--shutdown-timeout", "10")
    enqueue(storage_connection, "sleep:2:graceful")
    wait_for(lambda: read_records(record_dir, "queue"), 15, "the message to start")
    process.process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0, process.output
    events = [line["event"] for line in read_records(record_dir, "queue")]
    assert events == ["start", "done"]
    client = QueueClient.from_connection_string(storage_connection, WORK_QUEUE)
    assert client.get_queue_properties().approximate_message_count == 0


def test_message_cut_off_by_shutdown_is_visible_again_at_once(
    app_dir: Path,
    storage_connection: str,
    record_dir: Path,
    host_processes: list[HostProcess],
) -> None:
    # A 300 s lease: without the release at shutdown the message would stay
    # invisible far longer than this test waits.
    process, _ = start(
        app_dir, host_processes, "--shutdown-timeout", "1", "--message-lease", "300"
    )
    enqueue(storage_connection, "sleep:30:cut-off")
    wait_for(lambda: read_records(record_dir, "queue"), 15, "the message to start")
    stopped_at = time.monotonic()
    process.process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 1, process.output
    assert time.monotonic() - stopped_at < 10
    client = QueueClient.from_connection_string(storage_connection, WORK_QUEUE)
    [message] = wait_for(
        lambda: list(client.peek_messages()), 5, "the message to be visible"
    )
    assert base64.b64decode(message.content) == b"sleep:30:cut-off"
    assert "cut off by shutdown" in process.output
    client.clear_messages()


def test_stop_is_bounded_even_when_storage_is_gone(
    app_dir: Path, record_dir: Path, host_processes: list[HostProcess]
) -> None:
    with Azurite() as own_storage:  # this test kills its storage
        env = dict(os.environ, AzureWebJobsStorage=own_storage.connection_string)
        process, _ = start(app_dir, host_processes, "--shutdown-timeout", "1", env=env)
        enqueue(own_storage.connection_string, "sleep:60:stranded")
        wait_for(lambda: read_records(record_dir, "queue"), 15, "the message to start")
    # Storage is gone: releasing the cut-off message can only time out.
    stopped_at = time.monotonic()
    process.process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 1, process.output
    assert time.monotonic() - stopped_at < 1 + 5 + 3
