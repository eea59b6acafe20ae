"""The example subscriber over real HTTP: the validation handshakes, and
delivery from the real azure-eventgrid client and as Event Grid would push."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests

from examples.subscriber.server import SubscriberServer
from shared.adapters.eventgrid_publisher import EventGridPublisher
from shared.domain.presence import Presence, PresenceChange
from shared.settings import EventGridSettings
from simulators.eventgrid_sink import EventGridSink

T0 = datetime(2025, 3, 4, 9, 0, tzinfo=UTC)


@pytest.fixture
def subscriber() -> Iterator[SubscriberServer]:
    server = SubscriberServer(0)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def presence_change(
    availability: str, sequence: str | None, minutes: int, user: str = "u-1"
) -> PresenceChange:
    return PresenceChange(
        tenant_id="t-1",
        user_id=user,
        current=Presence(availability, availability, sequence),
        previous=None,
        observed_at=T0 + timedelta(minutes=minutes),
    )


def test_cloudevents_handshake_echoes_the_origin(
    subscriber: SubscriberServer,
) -> None:
    response = requests.options(
        subscriber.url,
        headers={"WebHook-Request-Origin": "eventgrid.azure.net"},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    assert response.headers["WebHook-Allowed-Rate"] == "*"
    assert "POST" in response.headers["Allow"]


def test_handshake_refuses_a_missing_or_unknown_origin(
    subscriber: SubscriberServer,
) -> None:
    missing = requests.options(subscriber.url, timeout=10)
    unknown = requests.options(
        subscriber.url, headers={"WebHook-Request-Origin": "evil.example"}, timeout=10
    )
    assert missing.status_code == 400
    assert unknown.status_code == 403
    assert "WebHook-Allowed-Origin" not in unknown.headers


def test_event_grid_schema_validation_event_is_answered(
    subscriber: SubscriberServer,
) -> None:
    validation = [
        {
            "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
            "topic": "/subscriptions/x/resourceGroups/y/providers/"
            "Microsoft.EventGrid/topics/presence",
            "subject": "",
            "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"},
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "eventTime": "2025-03-04T09:00:00Z",
            "metadataVersion": "1",
            "dataVersion": "1",
        }
    ]
    response = requests.post(
        subscriber.url,
        json=validation,
        headers={"aeg-event-type": "SubscriptionValidation"},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.json() == {
        "validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"
    }


def test_batches_from_the_real_client_drop_duplicates_and_stale_events(
    subscriber: SubscriberServer,
) -> None:
    # The subscriber accepts cloudevents-batch+json (Event Grid with batching
    # on), so the real publisher can deliver to it directly; it ignores the key.
    settings = EventGridSettings(topic_endpoint=subscriber.url, topic_key="unused")
    away = presence_change("Away", "0002", minutes=2)
    busy = presence_change("Busy", "0003", minutes=3)
    older = presence_change("Available", "0001", minutes=1)
    other_user = presence_change("Offline", None, minutes=0, user="u-2")

    with EventGridPublisher(settings, retry_total=0) as publisher:
        publisher.publish([away, busy])
        publisher.publish([away, busy, older, other_user])  # redelivery + late

    assert subscriber.view.outcomes() == {"applied": 3, "duplicate": 2, "stale": 1}
    latest = subscriber.view.latest("t-1", "u-1")
    assert latest is not None
    assert (latest.availability, latest.event_id) == ("Busy", busy.change_id)
    snapshot = requests.get(
        subscriber.url.rsplit("/", 2)[0] + "/presence", timeout=10
    ).json()
    assert snapshot["t-1/u-1"]["availability"] == "Busy"
    assert snapshot["t-1/u-2"]["availability"] == "Offline"


def test_single_deliveries_out_of_order_keep_the_newest(
    subscriber: SubscriberServer,
    eventgrid_sink: EventGridSink,
    eventgrid_settings: EventGridSettings,
) -> None:
    # Capture the events exactly as they go on the wire, then push them one
    # per request, newest first, with a duplicate: as Event Grid may.
    changes = [
        presence_change("Available", None, minutes=0),
        presence_change("Away", None, minutes=5),
        presence_change("DoNotDisturb", None, minutes=9),
    ]
    with EventGridPublisher(eventgrid_settings, retry_total=0) as publisher:
        publisher.publish(changes)
    wire = eventgrid_sink.wait_for_events(3)

    outcomes = []
    for event in [wire[2], wire[0], wire[2], wire[1]]:
        response = requests.post(
            subscriber.url,
            json=event,
            headers={"Content-Type": "application/cloudevents+json; charset=utf-8"},
            timeout=10,
        )
        assert response.status_code == 200
        outcomes.append(response.json())

    assert outcomes == [
        {"applied": 1},
        {"stale": 1},
        {"duplicate": 1},
        {"stale": 1},
    ]
    latest = subscriber.view.latest("t-1", "u-1")
    assert latest is not None
    assert latest.availability == "DoNotDisturb"


def test_malformed_presence_event_is_rejected(subscriber: SubscriberServer) -> None:
    response = requests.post(
        subscriber.url,
        json={"specversion": "1.0", "id": "x", "type": "Presence.Changed"},
        headers={"Content-Type": "application/cloudevents+json"},
        timeout=10,
    )
    assert response.status_code == 400
