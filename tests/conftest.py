"""Shared fixtures: one real Azurite for the session, clean storage per test,
and settings pointing at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from azure.data.tables import TableServiceClient
from azure.storage.queue import QueueServiceClient

from devtools.azurite import Azurite, AzuriteEndpoints
from shared import settings as settings_module

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
    yield connection
    settings_module.get_settings.cache_clear()


def _empty_storage(connection: str) -> None:
    tables = TableServiceClient.from_connection_string(connection)
    for table in tables.list_tables():
        tables.delete_table(table.name)
    queues = QueueServiceClient.from_connection_string(connection)
    for queue in queues.list_queues():
        queues.delete_queue(queue.name)
