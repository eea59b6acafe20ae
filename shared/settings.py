"""Every setting the service reads, named in one place and read once.

Values come from the process environment (Azure app settings, or
``local.settings.json`` under a local host). Names of the Graph and Event Grid
settings are part of the deployment contract: keep them exactly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache

# Storage connection shared with the Functions host's own bindings: either a
# connection string, or identity-based service URIs (``__queueServiceUri``...).
STORAGE_CONNECTION = "AzureWebJobsStorage"

COMMAND_QUEUE = "subscription-commands"
POLL_QUEUE = "shard-polls"
SUBSCRIPTIONS_TABLE = "subscriptions"
TENANTS_TABLE = "tenants"
PRESENCE_TABLE = "presence"
IDEMPOTENCY_TABLE = "idempotency"

DEFAULT_POLL_SCHEDULE = "*/30 * * * * *"
DEFAULT_OUTBOX_SWEEP_SCHEDULE = "15 * * * * *"
DEFAULT_IDEMPOTENCY_RETENTION_HOURS = 24.0


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True)
class StorageSettings:
    connection_string: str | None
    queue_service_uri: str | None
    table_service_uri: str | None
    managed_identity_client_id: str | None


@dataclass(frozen=True)
class GraphSettings:
    base_url: str
    authority_host: str
    client_id: str | None
    client_secret: str | None
    client_certificate_path: str | None
    ca_bundle: str | None


@dataclass(frozen=True)
class EventGridSettings:
    topic_endpoint: str | None
    topic_key: str | None


@dataclass(frozen=True)
class Settings:
    storage: StorageSettings
    graph: GraphSettings
    event_grid: EventGridSettings
    # How long an Idempotency-Key is remembered.
    idempotency_retention: timedelta = timedelta(
        hours=DEFAULT_IDEMPOTENCY_RETENTION_HOURS
    )

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ

        def get(name: str, default: str | None = None) -> str | None:
            value = env.get(name, "").strip()
            return value or default

        connection = get(STORAGE_CONNECTION)
        if connection == "UseDevelopmentStorage=true":
            connection = _AZURITE_DEFAULT_CONNECTION
        storage = StorageSettings(
            connection_string=connection,
            queue_service_uri=get(f"{STORAGE_CONNECTION}__queueServiceUri"),
            table_service_uri=get(f"{STORAGE_CONNECTION}__tableServiceUri"),
            managed_identity_client_id=get(f"{STORAGE_CONNECTION}__clientId"),
        )
        if storage.connection_string is None and not (
            storage.queue_service_uri and storage.table_service_uri
        ):
            raise SettingsError(
                f"storage is not configured: set {STORAGE_CONNECTION} to a "
                f"connection string, or {STORAGE_CONNECTION}__queueServiceUri "
                f"and {STORAGE_CONNECTION}__tableServiceUri for managed identity"
            )
        graph = GraphSettings(
            base_url=(
                get("GRAPH_BASE_URL") or "https://graph.microsoft.com/v1.0"
            ).rstrip("/"),
            authority_host=(
                get("GRAPH_AUTHORITY_HOST") or "https://login.microsoftonline.com"
            ).rstrip("/"),
            client_id=get("GRAPH_CLIENT_ID"),
            client_secret=get("GRAPH_CLIENT_SECRET"),
            client_certificate_path=get("GRAPH_CLIENT_CERTIFICATE_PATH"),
            ca_bundle=get("GRAPH_CA_BUNDLE"),
        )
        event_grid = EventGridSettings(
            topic_endpoint=get("EVENTGRID_TOPIC_ENDPOINT"),
            topic_key=get("EVENTGRID_TOPIC_KEY"),
        )
        return cls(
            storage=storage,
            graph=graph,
            event_grid=event_grid,
            idempotency_retention=_hours(
                "IDEMPOTENCY_RETENTION_HOURS",
                get("IDEMPOTENCY_RETENTION_HOURS"),
                DEFAULT_IDEMPOTENCY_RETENTION_HOURS,
            ),
        )


def _hours(name: str, value: str | None, default: float) -> timedelta:
    if value is None:
        return timedelta(hours=default)
    try:
        hours = float(value)
    except ValueError:
        hours = float("nan")
    if not hours > 0:  # also rejects NaN
        raise SettingsError(f"{name} must be a positive number of hours, not {value!r}")
    return timedelta(hours=hours)


_AZURITE_DEFAULT_CONNECTION = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
    "K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
    "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read on first use."""
    return Settings.from_environ()
