"""Fixtures for driving devhost: an app folder with a small host.json and
local settings, an in-process host, and a host run as a child process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devhost.host import Host, HostOptions

REPO_ROOT = Path(__file__).resolve().parents[2]
FUNCTION_KEY = "devhost-test-key"

SAMPLE_APP = "tests.devhost.sample_app:app"
_LISTENING = re.compile(r"HTTP functions listening on (http://[^\s]+)")
TIMER_APP = "tests.devhost.timer_app:app"

# Short timings so retry and poison tests take seconds, not minutes.
TEST_HOST_JSON: dict[str, Any] = {
    "version": "2.0",
    "extensions": {
        "http": {"routePrefix": "api"},
        "queues": {
            "batchSize": 4,
            "newBatchThreshold": 2,
            "maxPollingInterval": "00:00:00.500",
            "visibilityTimeout": "00:00:01",
            "maxDequeueCount": 3,
            "messageEncoding": "base64",
        },
    },
}


def wait_for(
    condition: Callable[[], Any], timeout: float, message: str, interval: float = 0.1
) -> Any:
    """Poll until condition() is truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def read_records(record_dir: Path, kind: str) -> list[dict[str, Any]]:
    path = record_dir / f"{kind}.jsonl"
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    # A line being appended right now may be incomplete: ignore it.
    return [json.loads(line) for line in lines if line.endswith("}")]


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """A script root with host.json and local.settings.json for the samples."""
    root = tmp_path / "app"
    records = tmp_path / "records"
    root.mkdir()
    records.mkdir()
    (root / "host.json").write_text(json.dumps(TEST_HOST_JSON), encoding="utf-8")
    values = {
        "DEVHOST_FUNCTION_KEY": FUNCTION_KEY,
        "SAMPLE_RECORD_DIR": str(records),
        "FAST_TICK_SCHEDULE": "*/2 * * * * *",
    }
    (root / "local.settings.json").write_text(
        json.dumps({"IsEncrypted": False, "Values": values}), encoding="utf-8"
    )
    return root


@pytest.fixture
def record_dir(app_dir: Path) -> Path:
    return app_dir.parent / "records"


@pytest.fixture
def restore_environ() -> Iterator[None]:
    """The host exports settings into os.environ; undo that after the test."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def start_host(app_dir: Path, restore_environ: None) -> Iterator[Callable[..., Host]]:
    """Start an in-process host on a free port; stopped after the test."""
    hosts: list[Host] = []

    def start(app: str = SAMPLE_APP, **options: Any) -> Host:
        host = Host(HostOptions(script_root=app_dir, app=app, port=0, **options))
        host.start()
        hosts.append(host)
        return host

    yield start
    for host in hosts:
        host.stop(timeout=10)


class HostProcess:
    """``python -m devhost`` as a child process, its output collected."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "devhost", *args],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_listening(self, timeout: float = 30) -> str:
        def url() -> str | None:
            for line in self.lines:
                if match := _LISTENING.search(line):
                    return match.group(1)
            if self.process.poll() is not None:
                pytest.fail(f"devhost exited early:\n{self.output}")
            return None

        found: str = wait_for(url, timeout, "devhost to listen")
        return found

    def terminate(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def host_processes() -> Iterator[list[HostProcess]]:
    """Child hosts registered here are killed after the test, whatever happened."""
    processes: list[HostProcess] = []
    yield processes
    for process in processes:
        process.kill()
