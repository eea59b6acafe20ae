"""Publish presence changes to an Azure Event Grid topic as CloudEvents 1.0.

The event contract (attributes and ``data``) is documented in ``docs/events.md``
and ``docs/schemas/presence-changed.schema.json``; keep the three in step.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from azure.core.credentials import AzureKeyCredential
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridPublisherClient

from shared.domain.presence import Presence, PresenceChange
from shared.settings import EventGridSettings, SettingsError

logger = logging.getLogger(__name__)

WireEvent = dict[str, Any]

EVENT_TYPE = "Presence.Changed"
DATA_CONTENT_TYPE = "application/json"

# Event Grid rejects a publish request over 1 MB. The budget stays below
# 1,000,000 bytes so that neither reading of "1 MB" is crossed.
MAX_REQUEST_BYTES = 1_000_000
# Event Grid documents no count limit for topics; a bound keeps one failed
# request from forcing a retry of thousands of events.
DEFAULT_MAX_EVENTS_PER_REQUEST = 500

DEFAULT_CONNECTION_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 10.0
# The outbox retries later anyway, so the client only absorbs short blips. A
# hanging topic thus holds a publish for at most about
# (retries + 1) * (connection + read timeout) plus the SDK's back-off.
DEFAULT_RETRY_TOTAL = 2

# Brackets of the JSON array, and the ", " json.dumps writes between events.
_ARRAY_OVERHEAD = 2
_SEPARATOR_BYTES = 2
_PER_EVENT_SLACK = 32


class EventPublishError(Exception):
    """Events could not be published; the caller keeps them for a later retry.

    ``delivered`` counts the leading changes (in the order given) that did reach
    the topic before the failure. Republishing them is harmless: their event
    ids are deterministic and subscribers drop duplicates.
    """

    def __init__(self, message: str, *, delivered: int = 0) -> None:
        super().__init__(message)
        self.delivered = delivered


def to_cloud_event(change: PresenceChange) -> CloudEvent:
    """The ``Presence.Changed`` CloudEvent for one change."""
    observed_at = _as_utc(change.observed_at)
    return CloudEvent(
        source=f"/tenants/{change.tenant_id}",
        type=EVENT_TYPE,
        subject=f"users/{change.user_id}",
        time=observed_at,
        id=change.change_id,
        datacontenttype=DATA_CONTENT_TYPE,
        data=_event_data(change, observed_at),
    )


def _event_data(change: PresenceChange, observed_at: datetime) -> dict[str, Any]:
    # sequenceNumber is always present (null when Graph gave none) so that
    # subscribers read one shape instead of testing for a missing key.
    return {
        "tenantId": change.tenant_id,
        "userId": change.user_id,
        "availability": change.current.availability,
        "activity": change.current.activity,
        "previous": _previous(change.previous),
        "sequenceNumber": change.current.sequence_number,
        "observedAt": format_utc(observed_at),
    }


def _previous(previous: Presence | None) -> dict[str, str] | None:
    if previous is None:
        return None
    return {"availability": previous.availability, "activity": previous.activity}


def _as_utc(moment: datetime) -> datetime:
    # A naive time is taken as UTC (the service records times in UTC); refusing
    # it here would leave the change stuck in the outbox for ever.
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def format_utc(moment: datetime) -> str:
    """ISO 8601 UTC with a fixed width (microseconds, ``Z``), so that strings of
    this form sort in time order."""
    return _as_utc(moment).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class EventGridPublisher:
    """Sends presence changes to the topic named in the settings.

    With ``EVENTGRID_TOPIC_KEY`` set the key authenticates (header
    ``aeg-sas-key``); without it the managed identity does, through
    ``DefaultAzureCredential``, which Event Grid accepts only over https.
    """

    def __init__(
        self,
        settings: EventGridSettings,
        *,
        connection_timeout: float = DEFAULT_CONNECTION_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        retry_total: int = DEFAULT_RETRY_TOTAL,
        max_events_per_request: int = DEFAULT_MAX_EVENTS_PER_REQUEST,
        max_request_bytes: int = MAX_REQUEST_BYTES,
    ) -> None:
        if not settings.topic_endpoint:
            raise SettingsError("EVENTGRID_TOPIC_ENDPOINT is not set")
        if max_events_per_request < 1 or max_request_bytes < 1:
            raise ValueError("request limits must be positive")
        self._endpoint = topic_endpoint_url(settings.topic_endpoint)
        self._max_events = max_events_per_request
        self._max_bytes = max_request_bytes
        # azure-eventgrid 4.22 drops transport and retry options given to the
        # constructor of a basic-topic client (defaults: 300 s timeouts, up to
        # 10 retries), so they go with every send(), as per-operation options.
        self._request_options: dict[str, Any] = {
            "connection_timeout": connection_timeout,
            "read_timeout": read_timeout,
            "retry_total": retry_total,
        }
        self._client = EventGridPublisherClient(
            self._endpoint, _credential(settings, self._endpoint)
        )

    @property
    def endpoint(self) -> str:
        return self._endpoint

    def publish(self, changes: Sequence[PresenceChange]) -> None:
        """Publish every change, in order, in as few requests as the limits
        allow. Raises EventPublishError unless all of them were accepted."""
        if not changes:
            return
        # Split everything first, so an unsendable event fails the call before
        # any request goes out.
        chunks = list(self._chunks([to_cloud_event(change) for change in changes]))
        delivered = 0
        for chunk in chunks:
            try:
                self._client.send(chunk, **self._request_options)
            except Exception as error:
                # One exception type for the caller, whatever failed (HTTP
                # status, timeout, credential, serialization): in every case
                # the remaining changes were not delivered.
                logger.warning(
                    "publishing %d presence events to %s failed after %d delivered: %s",
                    len(changes),
                    self._endpoint,
                    delivered,
                    _describe(error),
                )
                raise EventPublishError(
                    f"Event Grid publish to {self._endpoint} failed: "
                    f"{_describe(error)}",
                    delivered=delivered,
                ) from error
            delivered += len(chunk)
        logger.info(
            "published %d presence events in %d requests to %s",
            delivered,
            len(chunks),
            self._endpoint,
        )

    def _chunks(self, events: list[CloudEvent]) -> Iterator[list[CloudEvent]]:
        chunk: list[CloudEvent] = []
        chunk_bytes = _ARRAY_OVERHEAD
        for event in events:
            size = _wire_size(event)
            if _ARRAY_OVERHEAD + size > self._max_bytes:
                raise EventPublishError(
                    f"event {event.id} is about {size} bytes, over the "
                    f"{self._max_bytes}-byte request limit"
                )
            added = size + (_SEPARATOR_BYTES if chunk else 0)
            if chunk and (
                len(chunk) >= self._max_events or chunk_bytes + added > self._max_bytes
            ):
                yield chunk
                chunk, chunk_bytes = [], _ARRAY_OVERHEAD
                added = size
            chunk.append(event)
            chunk_bytes += added
        if chunk:
            yield chunk

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> EventGridPublisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def topic_endpoint_url(endpoint: str) -> str:
    """The publish URL: a bare topic host (as sometimes copied from the
    portal) gets the ``/api/events`` path every Event Grid topic uses."""
    parts = urlsplit(endpoint.strip())
    if parts.path in ("", "/"):
        parts = parts._replace(path="/api/events")
    return urlunsplit(parts)


def _credential(settings: EventGridSettings, endpoint: str) -> Any:
    if settings.topic_key:
        return AzureKeyCredential(settings.topic_key)
    if urlsplit(endpoint).scheme != "https":
        # The SDK refuses to send a bearer token over plain http; say so now
        # rather than on the first publish.
        raise SettingsError(
            "EVENTGRID_TOPIC_KEY is not set and EVENTGRID_TOPIC_ENDPOINT is not "
            "https: managed identity needs an https topic endpoint"
        )
    # Imported lazily: azure-identity is only needed without a topic key.
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def wire_form(event: CloudEvent) -> WireEvent:
    """The event in the CloudEvents JSON format: the attributes and values the
    SDK writes into the request (which may shorten ``time`` to milliseconds
    when its microseconds are zero)."""
    wire: WireEvent = {
        "specversion": event.specversion,
        "id": event.id,
        "source": event.source,
        "type": event.type,
    }
    optional = {
        "subject": event.subject,
        "time": format_utc(event.time) if event.time else None,
        "datacontenttype": event.datacontenttype,
        "dataschema": event.dataschema,
    }
    wire.update({name: value for name, value in optional.items() if value})
    wire.update(event.extensions or {})
    # JSON data only: this service never publishes binary (data_base64) events.
    wire["data"] = event.data
    return wire


def _wire_size(event: CloudEvent) -> int:
    # Upper bound: the SDK may write ``time`` shorter (milliseconds when the
    # microseconds are zero), never longer; the slack covers anything else.
    return len(json.dumps(wire_form(event))) + _PER_EVENT_SLACK


class _DropOptionEchoes(logging.Filter):
    """azure-eventgrid 4.22 also offers a send()'s per-operation options to
    each event's generated model, which logs a warning per event and option
    ("... is not a known attribute ... and will be ignored"). The options do
    reach the pipeline; only those misleading warnings are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            "is not a known attribute" in str(record.msg)
            and bool(record.args)
            and isinstance(record.args, tuple)
            and record.args[0] in _REQUEST_OPTION_NAMES
        )


_REQUEST_OPTION_NAMES = frozenset({"connection_timeout", "read_timeout", "retry_total"})
logging.getLogger("azure.eventgrid._legacy._generated._serialization").addFilter(
    _DropOptionEchoes()
)


def _describe(error: Exception) -> str:
    status = getattr(error, "status_code", None)
    kind = type(error).__name__
    if status is not None:
        return f"{kind} (HTTP {status})"
    return f"{kind}: {error}"
