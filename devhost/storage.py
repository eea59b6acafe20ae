"""Queue storage access shared by queue triggers and queue output bindings."""

from __future__ import annotations

import base64
import binascii
import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import ExponentialRetry, QueueClient

from devhost.functions import QueueOutput
from devhost.settings import storage_connection_string

logger = logging.getLogger(__name__)


def _quick_retry() -> ExponentialRetry:
    # The SDK default waits 15 s, then about 45 s, between retries; locally an
    # unreachable Azurite should show up in the log within seconds.
    return ExponentialRetry(
        initial_backoff=1, increment_base=2, retry_total=3, random_jitter_range=1
    )


class MessageCodec:
    """host.json ``messageEncoding``: base64 (the default) or none.

    Queue clients are created without an encode policy, so the text stored
    in the queue is exactly what we send and receive; that keeps a poisoned
    message's body byte for byte what the producer wrote.
    """

    def __init__(self, encoding: str) -> None:
        self._base64 = encoding == "base64"

    def decode(self, stored_text: str) -> bytes:
        if not self._base64:
            return stored_text.encode("utf-8")
        try:
            return base64.b64decode(stored_text, validate=True)
        except binascii.Error as error:
            raise ValueError(f"message is not valid base64: {error}") from error

    def encode(self, body: str | bytes) -> str:
        raw = body.encode("utf-8") if isinstance(body, str) else body
        if not self._base64:
            return raw.decode("utf-8")
        return base64.b64encode(raw).decode("ascii")


class QueueClients:
    """Queue clients by (connection setting, queue name), queues created once."""

    def __init__(self, settings: Mapping[str, str]) -> None:
        self._settings = settings
        self._clients: dict[tuple[str | None, str], QueueClient] = {}
        self._lock = threading.Lock()

    def get(self, connection_setting: str | None, queue_name: str) -> QueueClient:
        key = (connection_setting, queue_name)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                connection = storage_connection_string(
                    connection_setting, self._settings
                )
                client = QueueClient.from_connection_string(
                    connection, queue_name, retry_policy=_quick_retry()
                )
                try:
                    client.create_queue()
                    logger.info("Created queue %s", queue_name)
                except ResourceExistsError:
                    pass
                self._clients[key] = client
            return client

    def send_outputs(
        self, outputs: Mapping[QueueOutput, Any], codec: MessageCodec
    ) -> None:
        """Send what a function set on its queue output bindings."""
        for output, value in outputs.items():
            if value is None:
                continue
            client = self.get(output.connection, output.queue_name)
            for body in _as_messages(value):
                client.send_message(codec.encode(body))

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()


def _as_messages(value: Any) -> Iterable[str | bytes]:
    if isinstance(value, str | bytes):
        return [value]
    if isinstance(value, Iterable):
        return [item if isinstance(item, str | bytes) else str(item) for item in value]
    return [str(value)]
