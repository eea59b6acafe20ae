"""Shared fixtures: one real Azurite for the session, clean storage per test,
and settings pointing at it."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueClient, QueueServiceClient

from devtools.azurite import Azurite, AzuriteEndpoints
from shared import settings as settings_module
from shared.adapters import storage_clients
from shared.services import Services, get_services, reset_services

pytest_plugins = ["tests.plugins.graph_sim", "tests.plugins.eventgrid_sink"]


@pytest.fixture(scope="session")
def azurite() -> Iterator[AzuriteEndpoints]:
    with Azurite() as endpoints:
        yield endpoints


@pytest.fixture
def storage_connection(
    azurite: AzuriteEndpoints, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """Points the app's settings at the session Azurite and empties storage
    before the test (Azurite slows down with every message left behind)."""
    connection = azurite.connection_string
    monkeypatch.setenv(settings_module.STORAGE_CONNECTION, connection)
    _empty_storage(connection)
    settings_module.get_settings.cache_clear()
    reset_services()
    yield connection
    settings_module.get_settings.cache_clear()
    reset_services()


def _empty_storage(connection: str) -> None:
    tables = TableServiceClient.from_connection_string(connection)
    for table in tables.list_tables():
        tables.delete_table(table.name)
    queues = QueueServiceClient.from_connection_string(connection)
    for queue in queues.list_queues():
        queues.delete_queue(queue.name)


@pytest.fixture
def services(storage_connection: str) -> Services:
    """The app's services on a clean Azurite."""
    return get_services()


@pytest.fixture
def command_queue(services: Services) -> QueueClient:
    return storage_clients.queue_client(
        services.settings.storage, settings_module.COMMAND_QUEUE
    )


@pytest.fixture(autouse=True, scope="session")
def _quiet_sdk_http_logging() -> None:
    # The SDK logs every request and response at INFO; keep test output to ours.
    logging.getLogger("azure").setLevel(logging.WARNING)
