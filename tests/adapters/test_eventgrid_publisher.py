"""EventGridPublisher against the Event Grid sink, over real sockets, with the
real azure-eventgrid client."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import jsonschema
import pytest

from shared.adapters.eventgrid_publisher import (
    EventGridPublisher,
    EventPublishError,
    to_cloud_event,
    topic_endpoint_url,
    wire_form,
)
from shared.domain.presence import Presence, PresenceChange
from shared.settings import EventGridSettings, SettingsError
from simulators.eventgrid_sink import MAX_REQUEST_BYTES, EventGridSink

SCHEMA_PATH = (
    Path(__file__).resolve().parents[2]
    / "docs"
    / "schemas"
    / "presence-changed.schema.json"
)
OBSERVED_AT = datetime(2025, 3, 4, 9, 30, 15, 123456, tzinfo=UTC)


def change(
    user: str = "user-1",
    *,
    availability: str = "Available",
    activity: str = "Available",
    previous: Presence | None = None,
    sequence_number: str | None = None,
    observed_at: datetime = OBSERVED_AT,
) -> PresenceChange:
    return PresenceChange(
        tenant_id="tenant-1",
        user_id=user,
        current=Presence(availability, activity, sequence_number),
        previous=previous,
        observed_at=observed_at,
    )


def fast_publisher(settings: EventGridSettings, **limits: int) -> EventGridPublisher:
    # No client retries: each failing test would otherwise wait through the
    # SDK's back-off.
    return EventGridPublisher(settings, retry_total=0, **limits)


def test_publishes_each_change_with_the_contract_attributes_and_data(
    eventgrid_sink: EventGridSink, eventgrid_settings: EventGridSettings
) -> None:
    first = change(
        "user-1",
        availability="Busy",
        activity="InACall",
        previous=Presence("Available", "Available"),
        sequence_number="C8A1",
    )
    second = change("user-2", availability="Away", activity="Away")

    with fast_publisher(eventgrid_settings) as publisher:
        publisher.publish([first, second])

    events = eventgrid_sink.wait_for_events(2)
    assert len(events) == 2
    by_subject = {event["subject"]: event for event in events}
    busy = by_subject["users/user-1"]
    assert {k: v for k, v in busy.items() if k != "data"} == {
        "id": first.change_id,
        "source": "/tenants/tenant-1",
        "type": "Presence.Changed",
        "subject": "users/user-1",
        "specversion": "1.0",
        "datacontenttype": "application/json",
        "time": "2025-03-04T09:30:15.123456Z",
    }
    assert busy["data"] == {
        "tenantId": "tenant-1",
        "userId": "user-1",
        "availability": "Busy",
        "activity": "InACall",
        "previous": {"availability": "Available", "activity": "Available"},
        "sequenceNumber": "C8A1",
        "observedAt": "2025-03-04T09:30:15.123456Z",
    }
    away = by_subject["users/user-2"]
    assert away["id"] == second.change_id
    assert away["data"]["previous"] is None
    assert away["data"]["sequenceNumber"] is None
    [request] = eventgrid_sink.requests
    assert request.api_version == "2018-01-01"
    assert request.content_type.startswith("application/cloudevents-batch+json")


def test_republished_change_carries_the_same_id(
    eventgrid_sink: EventGridSink, eventgrid_settings: EventGridSettings
) -> None:
    same = change(availability="DoNotDisturb", activity="Presenting")
    with fast_publisher(eventgrid_settings) as publisher:
        publisher.publish([same])
        publisher.publish([same])

    first, second = eventgrid_sink.wait_for_events(2)
    assert first["id"] == second["id"] == same.change_id
    assert first == second


def test_observed_at_is_converted_to_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    event = to_cloud_event(
        change(observed_at=datetime(2025, 3, 4, 11, 30, tzinfo=plus_two))
    )
    assert event.time == datetime(2025, 3, 4, 9, 30, tzinfo=UTC)
    assert isinstance(event.data, dict)
    assert event.data["observedAt"] == "2025-03-04T09:30:00.000000Z"


def test_wrong_key_raises_publish_error(
    eventgrid_sink: EventGridSink, eventgrid_settings: EventGridSettings
) -> None:
    wrong = EventGridSettings(
        topic_endpoint=eventgrid_settings.topic_endpoint, topic_key="not-the-key"
    )
    with fast_publisher(wrong) as publisher, pytest.raises(EventPublishError) as info:
        publisher.publish([change()])

    assert info.value.delivered == 0
    assert info.value.__cause__ is not None
    assert "401" in str(info.value)
    assert eventgrid_sink.events == []
    assert [r.status for r in eventgrid_sink.requests] == [401]


def test_failing_topic_raises_publish_error_and_records_nothing(
    eventgrid_sink: EventGridSink, eventgrid_settings: EventGridSettings
) -> None:
    eventgrid_sink.fail()  # until recovered
    with fast_publisher(eventgrid_settings) as publisher:
        with pytest.raises(EventPublishError):
            publisher.publish([change("a"), change("b")])
        assert eventgrid_sink.events == []

        # The outbox retries later: the same changes then go through.
        eventgrid_sink.recover()
        publisher.publish([change("a"), change("b")])

    assert len(eventgrid_sink.wait_for_events(2)) == 2
    assert [r.status for r in eventgrid_sink.requests] == [500, 200]


def test_client_retries_absorb_a_single_failure(
    eventgrid_sink: EventGridSink, eventgrid_settings: EventGridSettings
) -> None:
    eventgrid_sink.fail(count=1)
    with EventGridPublisher(eventgrid_settings, retry_total=1) as publisher:
        publisher.publish([change()])

    assert [r.status for r in eventgrid_sink.requests] == [500, 200]
    assert len(eventgrid_sink.events) == 1


def test_partial_failure_reports_what_was_delivered(
    eventgrid_sink: EventGridSink, eventgrid_settings: EventGridSettings
) -> None:
    changes = [change(f"user-{n}") for n in range(5)]
    eventgrid_sink.fail(after=1)  # first request accepted, the rest fail
    with (
        fast_publisher(eventgrid_settings, max_events_per_request=2) as publisher,
        pytest.raises(EventPublishError) as info,
    ):
        publisher.publish(changes)

    assert info.value.delivered == 2
    assert [e["id"] for e in eventgrid_sink.events] == [
        c.change_id for c in changes[:2]
    ]
    assert [r.status for r in eventgrid_sink.requests] == [200, 500]


def test_large_batch_is_split_by_count(
    eventgrid_sink: EventGridSink, eventgrid_settings: EventGridSettings
) -> None:
    changes = [change(f"user-{n:03}") for n in range(25)]
    with fast_publisher(eventgrid_settings, max_events_per_request=10) as publisher:
        publisher.publish(changes)

    events = eventgrid_sink.wait_for_events(25)
    assert [r.event_count for r in eventgrid_sink.requests] == [10, 10, 5]
    assert [e["id"] for e in events] == [c.change_id for c in changes]


def test_large_batch_is_split_under_the_byte_limit(
    eventgrid_sink: EventGridSink, eventgrid_settings: EventGridSettings
) -> None:
    # Long activity strings make ~2 KB events: 1,200 of them are ~2.4 MB, far
    # over one request, and the count limit is lifted so bytes decide.
    changes = [
        change(f"user-{n:05}", activity="InAMeeting" + "x" * 2000) for n in range(1200)
    ]
    with fast_publisher(
        eventgrid_settings, max_events_per_request=100_000
    ) as publisher:
        publisher.publish(changes)

    eventgrid_sink.wait_for_events(1200)
    requests = eventgrid_sink.requests
    assert len(requests) >= 3
    assert all(r.status == 200 for r in requests)
    assert all(r.body_bytes <= MAX_REQUEST_BYTES for r in requests)
    assert sum(r.event_count for r in requests) == 1200


def test_requests_stay_within_a_tight_byte_budget(
    eventgrid_sink: EventGridSink, eventgrid_settings: EventGridSettings
) -> None:
    # Whole-second times are where the SDK's serialization differs most from
    # ours; the size estimate must still be an upper bound.
    changes = [
        change(f"user-{n:02}", observed_at=datetime(2025, 1, 1, tzinfo=UTC))
        for n in range(30)
    ]
    with fast_publisher(eventgrid_settings, max_request_bytes=3000) as publisher:
        publisher.publish(changes)

    requests = eventgrid_sink.requests
    assert len(requests) > 3
    assert all(0 < r.body_bytes <= 3000 for r in requests)
    assert sum(r.event_count for r in requests) == 30


def test_oversized_single_event_fails_before_sending(
    eventgrid_sink: EventGridSink, eventgrid_settings: EventGridSettings
) -> None:
    huge = change(activity="x" * 5000)
    with (
        fast_publisher(eventgrid_settings, max_request_bytes=4096) as publisher,
        pytest.raises(EventPublishError),
    ):
        publisher.publish([change("small"), huge])
    assert eventgrid_sink.requests == []


def test_a_hanging_topic_times_out(
    eventgrid_sink: EventGridSink, eventgrid_settings: EventGridSettings
) -> None:
    eventgrid_sink.hold()
    started = time.monotonic()
    try:
        with (
            EventGridPublisher(
                eventgrid_settings, read_timeout=0.5, retry_total=0
            ) as publisher,
            pytest.raises(EventPublishError),
        ):
            publisher.publish([change()])
        assert time.monotonic() - started < 5
    finally:
        eventgrid_sink.recover()


def test_the_key_never_reaches_the_logs(
    eventgrid_sink: EventGridSink,
    eventgrid_settings: EventGridSettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with fast_publisher(eventgrid_settings) as publisher:
        publisher.publish([change()])
        eventgrid_sink.fail()
        with pytest.raises(EventPublishError) as info:
            publisher.publish([change("other")])

    assert "published 1 presence events" in caplog.text
    # The SDK's spurious per-event warnings about request options are dropped.
    assert "is not a known attribute" not in caplog.text
    assert eventgrid_settings.topic_key
    assert eventgrid_settings.topic_key not in caplog.text
    assert eventgrid_settings.topic_key not in str(info.value)


def test_missing_endpoint_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match="EVENTGRID_TOPIC_ENDPOINT"):
        EventGridPublisher(EventGridSettings(topic_endpoint=None, topic_key="k"))


def test_managed_identity_needs_https() -> None:
    with pytest.raises(SettingsError, match="EVENTGRID_TOPIC_KEY"):
        EventGridPublisher(
            EventGridSettings(
                topic_endpoint="http://127.0.0.1:1/api/events", topic_key=None
            )
        )


def test_managed_identity_publisher_builds_without_a_key() -> None:
    publisher = EventGridPublisher(
        EventGridSettings(
            topic_endpoint="https://topic.westeurope-1.eventgrid.azure.net",
            topic_key=None,
        )
    )
    assert publisher.endpoint == (
        "https://topic.westeurope-1.eventgrid.azure.net/api/events"
    )
    publisher.close()


def test_topic_endpoint_keeps_an_explicit_path() -> None:
    assert (
        topic_endpoint_url("http://127.0.0.1:7070/api/events")
        == "http://127.0.0.1:7070/api/events"
    )


def test_wire_events_match_the_published_schema(
    eventgrid_sink: EventGridSink, eventgrid_settings: EventGridSettings
) -> None:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    changes = [
        change("first-time"),
        change(
            "with-previous",
            availability="Offline",
            activity="OffWork",
            previous=Presence("Away", "Away", "0001"),
            sequence_number="0002",
        ),
        change("naive-time", observed_at=datetime(2025, 1, 1, 0, 0)),
    ]
    with fast_publisher(eventgrid_settings) as publisher:
        publisher.publish(changes)

    for event in eventgrid_sink.wait_for_events(len(changes)):
        validator.validate(event)

    # The schema has teeth: a contract break is caught.
    broken = dict(eventgrid_sink.events[0])
    broken["data"] = {k: v for k, v in broken["data"].items() if k != "observedAt"}
    assert not validator.is_valid(broken)
    assert not validator.is_valid({**eventgrid_sink.events[0], "type": "Other"})


def test_the_documented_example_matches_the_schema() -> None:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    events_md = (SCHEMA_PATH.parents[1] / "events.md").read_text(encoding="utf-8")
    example = json.loads(events_md.split("```json\n", 1)[1].split("```", 1)[0])

    jsonschema.Draft202012Validator(schema).validate(example)
    # The example is what the code really produces, not a hand-written guess.
    documented_change = PresenceChange(
        tenant_id=example["data"]["tenantId"],
        user_id=example["data"]["userId"],
        current=Presence("Busy", "InACall", "C00000000000000000042"),
        previous=Presence("Available", "Available"),
        observed_at=datetime(2025, 3, 4, 9, 30, 15, 123456, tzinfo=UTC),
    )
    assert wire_form(to_cloud_event(documented_change)) == example
