"""Composition root: builds the adapters and services of this process once,
from the settings, on first use. Nothing here holds request or tenant state;
caching only saves reconnecting on every call.

Graph and Event Grid clients are built only when a poll or publish first needs
them, so the command path runs without their settings.
"""

from __future__ import annotations

import logging
import threading
from functools import cached_property

from azure.core.exceptions import AzureError

from shared import settings as settings_module
from shared.adapters import storage_clients
from shared.adapters.command_queue import CommandQueue, MessageQueue
from shared.adapters.eventgrid_publisher import EventGridPublisher
from shared.adapters.graph_presence import GraphPresenceClient
from shared.adapters.idempotency_table import IdempotencyTable
from shared.adapters.presence_table import PresenceTable
from shared.adapters.shard_leases import ShardLeases
from shared.adapters.storage_errors import StorageError
from shared.adapters.subscription_table import SubscriptionTable
from shared.adapters.tenant_directory import TenantDirectory
from shared.application.accept_commands import CommandAcceptor
from shared.application.apply_commands import CommandApplier
from shared.application.fan_out import PollFanOut
from shared.application.poll_shard import ShardPoller
from shared.application.publish_outbox import OutboxPublisher, OutboxSweep
from shared.domain.versions import VersionClock

logger = logging.getLogger(__name__)

_TABLES = (
    settings_module.SUBSCRIPTIONS_TABLE,
    settings_module.IDEMPOTENCY_TABLE,
    settings_module.TENANTS_TABLE,
    settings_module.PRESENCE_TABLE,
)
_QUEUES = (settings_module.COMMAND_QUEUE, settings_module.POLL_QUEUE)


class Services:
    def __init__(self, settings: settings_module.Settings) -> None:
        self.settings = settings
        self._tables = storage_clients.table_service(settings.storage)
        self._create_storage()
        logger.info("services built for storage %s", _describe(settings))

    def _create_storage(self) -> None:
        try:
            for name in _TABLES:
                self._tables.create_table_if_not_exists(name)
        except AzureError as error:
            raise StorageError(f"tables could not be created: {error}") from error
        self.command_queue.ensure_exists()
        self.poll_queue.ensure_exists()

    # ---- adapters -------------------------------------------------------

    @cached_property
    def subscriptions(self) -> SubscriptionTable:
        return SubscriptionTable(
            self._tables.get_table_client(settings_module.SUBSCRIPTIONS_TABLE)
        )

    @cached_property
    def idempotency(self) -> IdempotencyTable:
        return IdempotencyTable(
            self._tables.get_table_client(settings_module.IDEMPOTENCY_TABLE),
            retention=self.settings.idempotency_retention,
        )

    @cached_property
    def tenants(self) -> TenantDirectory:
        return TenantDirectory(
            self._tables.get_table_client(settings_module.TENANTS_TABLE)
        )

    @cached_property
    def presence(self) -> PresenceTable:
        return PresenceTable(
            self._tables.get_table_client(settings_module.PRESENCE_TABLE)
        )

    @cached_property
    def shard_leases(self) -> ShardLeases:
        return ShardLeases(
            self._tables.get_table_client(settings_module.SUBSCRIPTIONS_TABLE)
        )

    @cached_property
    def command_queue(self) -> CommandQueue:
        return CommandQueue(
            storage_clients.queue_client(
                self.settings.storage, settings_module.COMMAND_QUEUE
            )
        )

    @cached_property
    def poll_queue(self) -> MessageQueue:
        return MessageQueue(
            storage_clients.queue_client(
                self.settings.storage, settings_module.POLL_QUEUE
            )
        )

    @cached_property
    def graph(self) -> GraphPresenceClient:
        return GraphPresenceClient(self.settings.graph)

    @cached_property
    def event_publisher(self) -> EventGridPublisher:
        return EventGridPublisher(self.settings.event_grid)

    # ---- use cases ------------------------------------------------------

    @cached_property
    def acceptor(self) -> CommandAcceptor:
        return CommandAcceptor(
            self.command_queue, self.idempotency, self.subscriptions, VersionClock()
        )

    @cached_property
    def applier(self) -> CommandApplier:
        return CommandApplier(self.subscriptions, self.tenants)

    @cached_property
    def fan_out(self) -> PollFanOut:
        return PollFanOut(self.tenants, self.shard_leases, self.poll_queue)

    @cached_property
    def outbox(self) -> OutboxPublisher:
        return OutboxPublisher(self.presence, self.event_publisher)

    @cached_property
    def poller(self) -> ShardPoller:
        return ShardPoller(
            self.shard_leases,
            self.presence,
            self.subscriptions,
            self.tenants,
            self.graph,
            self.outbox,
        )

    @cached_property
    def outbox_sweep(self) -> OutboxSweep:
        return OutboxSweep(self.tenants, self.shard_leases, self.outbox)


_lock = threading.Lock()
_services: Services | None = None


def get_services() -> Services:
    global _services
    with _lock:
        if _services is None:
            _services = Services(settings_module.get_settings())
        return _services


def reset_services() -> None:
    """Forget the built services (tests change settings between cases)."""
    global _services
    with _lock:
        _services = None


def _describe(settings: settings_module.Settings) -> str:
    # Never log the connection string: it carries the account key.
    if settings.storage.connection_string:
        return "from a connection string"
    return f"{settings.storage.table_service_uri} with managed identity"
