"""Composition root: builds the adapters and services of this process once,
from the settings, on first use. Nothing here holds request or tenant state;
caching only saves reconnecting on every call."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from azure.core.exceptions import AzureError

from shared import settings as settings_module
from shared.adapters import storage_clients
from shared.adapters.command_queue import CommandQueue
from shared.adapters.idempotency_table import IdempotencyTable
from shared.adapters.storage_errors import StorageError
from shared.adapters.subscription_table import SubscriptionTable
from shared.application.accept_commands import CommandAcceptor
from shared.application.apply_commands import CommandApplier
from shared.domain.versions import VersionClock

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Services:
    settings: settings_module.Settings
    subscriptions: SubscriptionTable
    idempotency: IdempotencyTable
    command_queue: CommandQueue
    acceptor: CommandAcceptor
    applier: CommandApplier


_lock = threading.Lock()
_services: Services | None = None


def get_services() -> Services:
    global _services
    with _lock:
        if _services is None:
            _services = _build(settings_module.get_settings())
        return _services


def reset_services() -> None:
    """Forget the built services (tests change settings between cases)."""
    global _services
    with _lock:
        _services = None


def _build(settings: settings_module.Settings) -> Services:
    tables = storage_clients.table_service(settings.storage)
    try:
        for name in (
            settings_module.SUBSCRIPTIONS_TABLE,
            settings_module.IDEMPOTENCY_TABLE,
        ):
            tables.create_table_if_not_exists(name)
    except AzureError as error:
        raise StorageError(f"tables could not be created: {error}") from error
    subscriptions = SubscriptionTable(
        tables.get_table_client(settings_module.SUBSCRIPTIONS_TABLE)
    )
    idempotency = IdempotencyTable(
        tables.get_table_client(settings_module.IDEMPOTENCY_TABLE)
    )
    command_queue = CommandQueue(
        storage_clients.queue_client(settings.storage, settings_module.COMMAND_QUEUE)
    )
    command_queue.ensure_exists()
    logger.info("services built for storage %s", _describe(settings))
    return Services(
        settings=settings,
        subscriptions=subscriptions,
        idempotency=idempotency,
        command_queue=command_queue,
        acceptor=CommandAcceptor(
            command_queue, idempotency, subscriptions, VersionClock()
        ),
        applier=CommandApplier(subscriptions),
    )


def _describe(settings: settings_module.Settings) -> str:
    # Never log the connection string: it carries the account key.
    if settings.storage.connection_string:
        return "from a connection string"
    return f"{settings.storage.table_service_uri} with managed identity"
