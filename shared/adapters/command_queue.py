"""Storage queue adapter for subscription commands."""

from __future__ import annotations

import logging

from azure.core.exceptions import AzureError, ResourceExistsError
from azure.storage.queue import QueueClient

from shared.adapters.storage_errors import StorageError
from shared.domain.commands import SubscriptionCommand

logger = logging.getLogger(__name__)


class MessageQueue:
    """Puts messages on a queue that a queue-triggered function reads.

    The client must encode messages the way host.json's ``messageEncoding``
    tells the Functions host to decode them (base64 by default).
    """

    def __init__(self, client: QueueClient) -> None:
        self._client = client

    def ensure_exists(self) -> None:
        try:
            self._client.create_queue()
        except ResourceExistsError:
            pass
        except AzureError as error:
            raise StorageError(f"queue {self._client.queue_name}: {error}") from error

    def send(self, message: str) -> None:
        """Returns only once the message is durably stored."""
        try:
            self._client.send_message(message.encode("utf-8"))
        except AzureError as error:
            raise StorageError(
                f"could not enqueue on {self._client.queue_name}: {error}"
            ) from error

    def ping(self) -> None:
        try:
            self._client.get_queue_properties()
        except AzureError as error:
            raise StorageError(f"queue {self._client.queue_name}: {error}") from error


class CommandQueue(MessageQueue):
    """The queue of subscription commands."""

    def send_command(self, command: SubscriptionCommand) -> None:
        self.send(command.to_message())
        logger.info(
            "enqueued command %s tenant %s version %s (%d changes, request %s)",
            command.command_id,
            command.tenant_id,
            command.version,
            len(command.changes),
            command.request_id or "-",
        )
