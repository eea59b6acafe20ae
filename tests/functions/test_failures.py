"""Storage failing: clear 503s, nothing half done, and no message lost."""

from __future__ import annotations

import base64
import json
import socket
import uuid

import pytest
from azure.storage.queue import QueueClient

from devtools.azurite import DEV_ACCOUNT, DEV_KEY
from shared import settings as settings_module
from shared.adapters import storage_clients
from shared.adapters.command_queue import CommandQueue
from shared.adapters.storage_errors import StorageError
from shared.application.accept_commands import CommandAcceptor, CommandRequest
from shared.domain.commands import Action, Change, CommandFormatError
from shared.domain.versions import VersionClock
from shared.services import Services, reset_services
from tests.support.functions_host import http, receive, response_json, user_functions

TENANT = "5d1c6c1e-3b0a-4a39-8d7e-2f0b8a6c9e11"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def dead_connection_string() -> str:
    port = closed_port()
    base = f"http://127.0.0.1:{port}/{DEV_ACCOUNT}"
    return (
        f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};"
        f"AccountKey={DEV_KEY};QueueEndpoint={base};TableEndpoint={base};"
    )


@pytest.fixture
def storage_down(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(settings_module.STORAGE_CONNECTION, dead_connection_string())
    settings_module.get_settings.cache_clear()
    reset_services()


def test_register_while_storage_is_down_is_503_problem(storage_down: None) -> None:
    user = str(uuid.uuid4())

    response = http(
        "subscription_item",
        "PUT",
        f"/api/tenants/{TENANT}/subscriptions/{user}",
        {"tenantId": TENANT, "userId": user},
    )

    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert response.headers["Retry-After"]
    assert "Idempotency-Key" in response_json(response)["detail"]


def test_health_is_503_while_storage_is_down(storage_down: None) -> None:
    response = http("health", "GET", "/api/health", {})

    assert response.status_code == 503
    assert response_json(response)["status"] == "unhealthy"


def test_health_is_200_when_storage_answers(services: Services) -> None:
    response = http("health", "GET", "/api/health", {})

    assert response.status_code == 200
    assert response_json(response) == {"status": "healthy"}


def test_failed_enqueue_is_completed_by_a_retry_with_the_same_key(
    services: Services, command_queue: QueueClient
) -> None:
    """The record is stored, then enqueueing fails (503 to the client). The
    client's retry, on any instance, sends the very same command."""
    dead_queue = storage_clients.queue_client(
        settings_module.Settings.from_environ(
            {settings_module.STORAGE_CONNECTION: dead_connection_string()}
        ).storage,
        settings_module.COMMAND_QUEUE,
    )
    request = CommandRequest(
        tenant_id=TENANT,
        changes=(Change(str(uuid.uuid4()), Action.REGISTER),),
        fingerprint="same-request",
        idempotency_key="key-1",
    )

    def describe(command):
        return {"commandId": command.command_id, "version": command.version}

    broken = CommandAcceptor(
        CommandQueue(dead_queue), services.idempotency, services.subscriptions,
        VersionClock(),
    )  # fmt: skip
    with pytest.raises(StorageError):
        broken.accept(request, describe)
    assert command_queue.get_queue_properties().approximate_message_count == 0

    retried = services.acceptor.accept(request, describe)

    ((message, _raw),) = receive(command_queue)
    sent = json.loads(message.get_body())
    assert retried.replayed
    assert sent["commandId"] == retried.body["commandId"]
    assert sent["version"] == retried.body["version"]


def test_an_unparseable_message_fails_loudly_for_the_poison_queue(
    services: Services, command_queue: QueueClient, caplog: pytest.LogCaptureFixture
) -> None:
    command_queue.send_message(b"this is not a command")
    ((message, _raw),) = receive(command_queue)

    with pytest.raises(CommandFormatError):
        user_functions()["apply_subscription_command"](message=message)

    assert str(message.id) in caplog.text
    assert "is not a command" in caplog.text


def test_enqueued_messages_use_the_hosts_base64_encoding(
    services: Services, command_queue: QueueClient
) -> None:
    user = str(uuid.uuid4())
    http(
        "subscription_item",
        "PUT",
        f"/api/tenants/{TENANT}/subscriptions/{user}",
        {"tenantId": TENANT, "userId": user},
    )
    plain = QueueClient.from_queue_url(
        command_queue.url, credential=command_queue.credential
    )

    (raw,) = plain.receive_messages(max_messages=1)

    decoded = json.loads(base64.b64decode(raw.content))
    assert decoded["register"] == [user]


def test_an_unparseable_message_is_logged_once_not_on_every_retry(
    services: Services, command_queue: QueueClient, caplog: pytest.LogCaptureFixture
) -> None:
    command_queue.send_message(b"still not a command")
    handler = user_functions()["apply_subscription_command"]

    for _attempt in range(3):
        ((message, raw),) = receive(command_queue)
        with pytest.raises(CommandFormatError):
            handler(message=message)
        command_queue.update_message(raw, visibility_timeout=0)

    assert caplog.text.count("is not a command") == 1
