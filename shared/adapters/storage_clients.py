"""Build Azure Storage clients from settings: a connection string, or managed
identity with service URIs (no shared keys in production)."""

from __future__ import annotations

import threading
import urllib.request
from typing import Any

import requests
from azure.core.pipeline.transport import RequestsTransport
from azure.data.tables import TableServiceClient
from azure.storage.queue import (
    BinaryBase64DecodePolicy,
    BinaryBase64EncodePolicy,
    LinearRetry,
    QueueClient,
    QueueServiceClient,
)

from shared.settings import StorageSettings

# A failing storage call should fail an API request within seconds (the client
# then gets a 503 and retries), not hang it through the SDKs' long default
# back-off. The Tables SDK uses azure-core's retry policy...
_TABLE_RETRY: dict[str, Any] = {
    "retry_total": 3,
    "retry_backoff_factor": 0.2,
    "connection_timeout": 5,
}


def _table_options() -> dict[str, Any]:
    return {**_TABLE_RETRY, "transport": _transport()}


def _queue_retry() -> dict[str, Any]:
    # ...the queue SDK its own, whose default first back-off is 15 s.
    return {
        "retry_policy": LinearRetry(backoff=1, random_jitter_range=0, retry_total=2),
        "connection_timeout": 5,
        "transport": _transport(),
    }


# Connections kept per storage host. azure-core's default of 10 is below the
# host's concurrency (batchSize 16 plus newBatchThreshold, and the subscription
# reader threads): beyond it connections are opened and thrown away.
POOL_SIZE = 32

_session_lock = threading.Lock()
_session: requests.Session | None = None


def _transport() -> RequestsTransport:
    """A transport over one pooled session shared by every storage client of
    this process."""
    global _session
    with _session_lock:
        if _session is None:
            _session = requests.Session()
            # With trust_env, requests reads the proxy variables, .netrc and
            # the CA-bundle variables from the environment again on every
            # request: about a millisecond each on this machine, a quarter of
            # a command's client CPU (docs/benchmarks.md). Read once instead:
            # with no proxy configured they are left out, and TLS to Azure
            # Storage is verified against the default (certifi) roots.
            _session.trust_env = bool(urllib.request.getproxies())
            adapter = requests.adapters.HTTPAdapter(
                pool_connections=4, pool_maxsize=POOL_SIZE
            )
            _session.mount("http://", adapter)
            _session.mount("https://", adapter)
        return RequestsTransport(session=_session, session_owner=False)


def _credential(settings: StorageSettings) -> Any:
    # Imported lazily: azure-identity is only needed without a connection string.
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(
        managed_identity_client_id=settings.managed_identity_client_id
    )


def table_service(settings: StorageSettings) -> TableServiceClient:
    if settings.connection_string:
        return TableServiceClient.from_connection_string(
            settings.connection_string, **_table_options()
        )
    assert settings.table_service_uri  # checked when settings were read
    return TableServiceClient(
        settings.table_service_uri,
        credential=_credential(settings),
        **_table_options(),
    )


def queue_service(settings: StorageSettings) -> QueueServiceClient:
    if settings.connection_string:
        return QueueServiceClient.from_connection_string(
            settings.connection_string, **_queue_retry()
        )
    assert settings.queue_service_uri  # checked when settings were read
    return QueueServiceClient(
        settings.queue_service_uri, credential=_credential(settings), **_queue_retry()
    )


def queue_client(settings: StorageSettings, queue_name: str) -> QueueClient:
    """A queue client whose messages match the Functions host's default
    ``messageEncoding: base64`` (host.json), in both directions."""
    return queue_service(settings).get_queue_client(
        queue_name,
        message_encode_policy=BinaryBase64EncodePolicy(),
        message_decode_policy=BinaryBase64DecodePolicy(),
    )
