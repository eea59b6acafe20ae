"""The real function app (``function_app:app``) served by devhost over HTTP,
with its queue trigger applying commands from Azurite."""

from __future__ import annotations

import os
import socket
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from azure.data.tables import TableClient

from tests.devhost.conftest import REPO_ROOT, HostProcess, wait_for

pytestmark = pytest.mark.slow

E2E_KEY = "devhost-e2e-key"
SUBSCRIPTIONS_TABLE = "subscriptions"
EVENT_PREFIX = "evt|"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RealApp:
    """The repository's app in a devhost child process on a fixed port."""

    def __init__(self, connection: str, processes: list[HostProcess]) -> None:
        self.port = free_port()
        self._processes = processes
        self.env = dict(os.environ)
        self.env["AzureWebJobsStorage"] = connection
        self.env["DEVHOST_FUNCTION_KEY"] = E2E_KEY
        # Keep the presence-polling timers (which call Graph) out of these
        # command-path tests: once a year is never during a test.
        self.env["POLL_SCHEDULE"] = "0 0 0 1 1 *"
        self.env["OUTBOX_SWEEP_SCHEDULE"] = "0 0 0 1 1 *"
        self.session = requests.Session()
        self.session.headers["x-functions-key"] = E2E_KEY
        self.url = ""
        self.process: HostProcess | None = None

    def start(self, message_lease: float = 30) -> None:
        self.process = HostProcess(
            [
                "--script-root",
                str(REPO_ROOT),
                "--app",
                "function_app:app",
                "--port",
                str(self.port),
                "--message-lease",
                str(message_lease),
            ],
            env=self.env,
        )
        self._processes.append(self.process)
        self.url = self.process.wait_listening(timeout=60)

    def log_tail(self) -> str:
        """The host's recent output, to explain a failed assertion."""
        return "" if self.process is None else self.process.output[-4000:]

    def subscription(self, tenant: str, user: str) -> requests.Response:
        return self.session.get(
            f"{self.url}/tenants/{tenant}/subscriptions/{user}", timeout=10
        )

    def state(self, tenant: str, user: str) -> str | None:
        response = self.subscription(tenant, user)
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        state: str = response.json()["state"]
        return state


@pytest.fixture
def real_app(
    storage_connection: str, host_processes: list[HostProcess]
) -> Iterator[RealApp]:
    if not (REPO_ROOT / "function_app.py").exists():
        pytest.fail("function_app.py is missing at the repository root")
    yield RealApp(storage_connection, host_processes)


def wait_state(app: RealApp, tenant: str, user: str, state: str) -> None:
    wait_for(
        lambda: app.state(tenant, user) == state,
        30,
        f"user {user} to be {state}",
        interval=0.2,
    )


def test_register_deregister_and_batch(real_app: RealApp) -> None:
    real_app.start()
    tenant, user = str(uuid.uuid4()), str(uuid.uuid4())
    item = f"{real_app.url}/tenants/{tenant}/subscriptions/{user}"

    assert requests.put(item, timeout=10).status_code == 401  # no key
    put = real_app.session.put(item, timeout=10)
    assert put.status_code == 202, real_app.log_tail()
    wait_state(real_app, tenant, user, "active")

    delete = real_app.session.delete(item, timeout=10)
    assert delete.status_code == 202, real_app.log_tail()
    wait_state(real_app, tenant, user, "removed")

    added, removed = str(uuid.uuid4()), user
    batch = real_app.session.post(
        f"{real_app.url}/tenants/{tenant}/subscriptions/batch",
        json={"register": [added], "deregister": [removed]},
        timeout=10,
    )
    assert batch.status_code == 202, real_app.log_tail()
    wait_state(real_app, tenant, added, "active")
    assert real_app.state(tenant, removed) == "removed"


def event_counts(connection: str, tenant: str) -> Counter[str]:
    table = TableClient.from_connection_string(connection, SUBSCRIPTIONS_TABLE)
    rows: list[dict[str, Any]] = list(
        table.query_entities(
            "PartitionKey eq @tenant and RowKey ge @low and RowKey lt @high",
            parameters={"tenant": tenant, "low": EVENT_PREFIX, "high": "evt}"},
        )
    )
    # RowKey: evt|<version>|<userId>
    return Counter(row["RowKey"].rsplit("|", 1)[1] for row in rows)


def test_kill_9_while_applying_loses_and_duplicates_nothing(
    real_app: RealApp, storage_connection: str
) -> None:
    # A short lease so messages cut off by the kill come back quickly.
    real_app.start(message_lease=5)
    tenant = str(uuid.uuid4())
    users = [str(uuid.uuid4()) for _ in range(500)]

    def register(user: str) -> int:
        url = f"{real_app.url}/tenants/{tenant}/subscriptions/{user}"
        return real_app.session.put(url, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(register, users))
    assert statuses == [202] * len(users), real_app.log_tail()

    # Kill while the worker is part way through applying them.
    wait_for(
        lambda: sum(event_counts(storage_connection, tenant).values()) > 0,
        60,
        "the first commands to be applied",
        interval=0.05,
    )
    assert real_app.process is not None
    real_app.process.kill()
    applied_at_kill = sum(event_counts(storage_connection, tenant).values())
    assert applied_at_kill < len(users), "the kill came too late to test anything"

    real_app.start(message_lease=5)
    wait_for(
        lambda: len(event_counts(storage_connection, tenant)) == len(users),
        180,
        "every registration to be applied after the restart",
        interval=0.5,
    )
    counts = event_counts(storage_connection, tenant)
    assert set(counts) == set(users)
    assert set(counts.values()) == {1}, {u: n for u, n in counts.items() if n != 1}
    for user in users:
        assert real_app.state(tenant, user) == "active"
