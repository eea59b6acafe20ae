"""The Event Grid sink: wire checks, fault injection, control API, and the
program, over real HTTP."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import pytest
import requests

from shared.adapters.eventgrid_publisher import EventGridPublisher, EventPublishError
from shared.domain.presence import Presence, PresenceChange
from shared.settings import EventGridSettings
from simulators.eventgrid_sink import MAX_REQUEST_BYTES, EventGridSink, describe_event

REPO_ROOT = Path(__file__).resolve().parents[2]
BATCH = "application/cloudevents-batch+json; charset=utf-8"


def cloud_event(event_id: str = "e-1", **overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id,
        "source": "/tenants/t-1",
        "type": "Presence.Changed",
        "time": "2025-03-04T09:30:15.123456Z",
        "data": {"availability": "Away"},
    }
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not None}


def post(
    sink: EventGridSink,
    body: Any,
    *,
    key: str | None = None,
    content_type: str = BATCH,
    query: str = "?api-version=2018-01-01",
) -> requests.Response:
    headers = {"Content-Type": content_type}
    if key is not None:
        headers["aeg-sas-key"] = key
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(
        sink.topic_endpoint + query, data=data, headers=headers, timeout=10
    )


def test_accepts_a_batch_and_records_it(eventgrid_sink: EventGridSink) -> None:
    batch = [cloud_event("a"), cloud_event("b")]
    response = post(eventgrid_sink, batch, key=eventgrid_sink.key)

    assert response.status_code == 200
    assert eventgrid_sink.wait_for_events(2) == batch
    [request] = eventgrid_sink.requests
    assert (request.api_version, request.event_count, request.status) == (
        "2018-01-01",
        2,
        200,
    )


def test_accepts_a_single_structured_event(eventgrid_sink: EventGridSink) -> None:
    response = post(
        eventgrid_sink,
        cloud_event("single"),
        key=eventgrid_sink.key,
        content_type="application/cloudevents+json; charset=utf-8",
    )
    assert response.status_code == 200
    assert [e["id"] for e in eventgrid_sink.events] == ["single"]


@pytest.mark.parametrize("key", [None, "wrong"])
def test_rejects_a_missing_or_wrong_key(
    eventgrid_sink: EventGridSink, key: str | None
) -> None:
    response = post(eventgrid_sink, [cloud_event()], key=key)

    assert response.status_code == 401
    assert eventgrid_sink.key not in response.text
    assert eventgrid_sink.events == []


@pytest.mark.parametrize(
    ("body", "content_type", "query"),
    [
        ([cloud_event()], "application/json", "?api-version=2018-01-01"),
        ([cloud_event()], BATCH, ""),
        (b"not json", BATCH, "?api-version=2018-01-01"),
        ([], BATCH, "?api-version=2018-01-01"),
        ({"not": "an array"}, BATCH, "?api-version=2018-01-01"),
        ([cloud_event(id=None)], BATCH, "?api-version=2018-01-01"),
        ([cloud_event(source="")], BATCH, "?api-version=2018-01-01"),
        ([cloud_event(type=None)], BATCH, "?api-version=2018-01-01"),
        ([cloud_event(specversion="0.3")], BATCH, "?api-version=2018-01-01"),
        ([cloud_event(time="yesterday")], BATCH, "?api-version=2018-01-01"),
        ([cloud_event("ok"), "not an object"], BATCH, "?api-version=2018-01-01"),
    ],
    ids=[
        "plain-json-content-type",
        "no-api-version",
        "not-json",
        "empty-batch",
        "object-not-array",
        "no-id",
        "empty-source",
        "no-type",
        "wrong-specversion",
        "bad-time",
        "one-bad-event-in-batch",
    ],
)
def test_rejects_malformed_requests(
    eventgrid_sink: EventGridSink, body: Any, content_type: str, query: str
) -> None:
    response = post(
        eventgrid_sink,
        body,
        key=eventgrid_sink.key,
        content_type=content_type,
        query=query,
    )

    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "BadRequest"
    assert eventgrid_sink.events == []


def test_rejects_a_request_over_one_megabyte(eventgrid_sink: EventGridSink) -> None:
    padding = "x" * (MAX_REQUEST_BYTES // 2)
    batch = [cloud_event("a", data=padding), cloud_event("b", data=padding)]
    response = post(eventgrid_sink, batch, key=eventgrid_sink.key)

    assert response.status_code == 413
    assert eventgrid_sink.events == []


def test_unknown_path_is_not_found(eventgrid_sink: EventGridSink) -> None:
    response = requests.post(
        eventgrid_sink.base_url + "/api/other?api-version=2018-01-01",
        json=[cloud_event()],
        headers={"aeg-sas-key": eventgrid_sink.key},
        timeout=10,
    )
    assert response.status_code == 404


def test_fails_the_next_n_requests_then_recovers_by_itself(
    eventgrid_sink: EventGridSink,
) -> None:
    eventgrid_sink.fail(count=2, status=503)
    statuses = [
        post(eventgrid_sink, [cloud_event(str(n))], key=eventgrid_sink.key).status_code
        for n in range(3)
    ]

    assert statuses == [503, 503, 200]
    assert [e["id"] for e in eventgrid_sink.events] == ["2"]


def test_fails_until_recovered(eventgrid_sink: EventGridSink) -> None:
    eventgrid_sink.fail()
    for n in range(3):
        response = post(eventgrid_sink, [cloud_event(str(n))], key=eventgrid_sink.key)
        assert response.status_code == 500
    eventgrid_sink.recover()

    assert post(eventgrid_sink, [cloud_event("x")], key=eventgrid_sink.key).ok
    assert [e["id"] for e in eventgrid_sink.events] == ["x"]


def test_hold_keeps_requests_unanswered_until_recovered(
    eventgrid_sink: EventGridSink,
) -> None:
    eventgrid_sink.hold()
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(
            eventgrid_sink.topic_endpoint + "?api-version=2018-01-01",
            json=[cloud_event()],
            headers={"aeg-sas-key": eventgrid_sink.key, "Content-Type": BATCH},
            timeout=(5, 0.3),
        )
    eventgrid_sink.recover()
    # The held request completes after release: a timed-out publish may still
    # have been delivered, which is why delivery is at least once.
    assert [e["id"] for e in eventgrid_sink.wait_for_events(1)] == ["e-1"]


def test_wait_for_events_times_out_with_what_arrived(
    eventgrid_sink: EventGridSink,
) -> None:
    post(eventgrid_sink, [cloud_event()], key=eventgrid_sink.key)
    with pytest.raises(TimeoutError, match="1 of 2"):
        eventgrid_sink.wait_for_events(2, timeout=0.2)


def test_records_concurrent_publishes(eventgrid_sink: EventGridSink) -> None:
    def publish(n: int) -> None:
        post(
            eventgrid_sink,
            [cloud_event(f"{n}-a"), cloud_event(f"{n}-b")],
            key=eventgrid_sink.key,
        ).raise_for_status()

    threads = [threading.Thread(target=publish, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    ids = {e["id"] for e in eventgrid_sink.wait_for_events(32)}
    assert ids == {f"{n}-{x}" for n in range(16) for x in "ab"}
    assert len(eventgrid_sink.requests) == 16


def test_http_control_api(eventgrid_sink: EventGridSink) -> None:
    control = eventgrid_sink.base_url + "/_sink/"

    def call(action: str, body: dict[str, Any] | None = None) -> Any:
        response = requests.post(control + action, json=body or {}, timeout=10)
        response.raise_for_status()
        return response.json()

    call("fail", {"count": 1})
    assert (
        post(eventgrid_sink, [cloud_event("a")], key=eventgrid_sink.key).status_code
        == 500
    )
    assert post(eventgrid_sink, [cloud_event("b")], key=eventgrid_sink.key).ok

    call("fail", {"after": 1, "status": 502})  # until recovered
    assert post(eventgrid_sink, [cloud_event("c")], key=eventgrid_sink.key).ok
    assert (
        post(eventgrid_sink, [cloud_event("d")], key=eventgrid_sink.key).status_code
        == 502
    )
    call("recover")
    assert post(eventgrid_sink, [cloud_event("e")], key=eventgrid_sink.key).ok

    events = requests.get(control + "events", timeout=10).json()["events"]
    assert [e["id"] for e in events] == ["b", "c", "e"]
    seen = requests.get(control + "requests", timeout=10).json()["requests"]
    assert [r["status"] for r in seen] == [500, 200, 200, 502, 200]

    call("reset")
    assert requests.get(control + "events", timeout=10).json() == {"events": []}
    assert requests.post(control + "explode", timeout=10).status_code == 404


def test_describe_event_reads_like_a_log_line() -> None:
    line = describe_event(
        {
            "id": "3f2a",
            "data": {
                "tenantId": "t-1",
                "userId": "u-1",
                "availability": "Available",
                "activity": "Available",
                "previous": {"availability": "Away", "activity": "Away"},
                "sequenceNumber": None,
                "observedAt": "2025-03-04T09:30:15.000000Z",
            },
        }
    )
    assert line == (
        "event 3f2a tenant t-1 user u-1: Available/Available (was Away/Away) "
        "at 2025-03-04T09:30:15.000000Z"
    )


@pytest.fixture
def sink_process() -> Iterator[tuple[subprocess.Popen[str], queue.Queue[str]]]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulators.eventgrid_sink",
            "--port",
            "0",
            "--key",
            "program-key",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True).start()
    try:
        yield process, lines
    finally:
        process.terminate()
        process.wait(timeout=10)


def _pump(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))


def _next_line(lines: queue.Queue[str], timeout: float = 15.0) -> str:
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"no output within {timeout}s") from None


def test_program_prints_its_endpoint_and_each_event(
    sink_process: tuple[subprocess.Popen[str], queue.Queue[str]],
) -> None:
    _, lines = sink_process
    first = _next_line(lines)
    assert "topic endpoint http://127.0.0.1:" in first
    endpoint = first.rsplit(" ", 1)[1]
    assert endpoint.endswith("/api/events")

    change = PresenceChange(
        tenant_id="t-9",
        user_id="u-9",
        current=Presence("Available", "Available"),
        previous=Presence("Away", "Away"),
        observed_at=datetime(2025, 3, 4, 9, 30, tzinfo=UTC),
    )
    settings = EventGridSettings(topic_endpoint=endpoint, topic_key="program-key")
    with EventGridPublisher(settings, retry_total=0) as publisher:
        publisher.publish([change])
    assert _next_line(lines) == (
        f"event {change.change_id} tenant t-9 user u-9: Available/Available "
        "(was Away/Away) at 2025-03-04T09:30:00.000000Z"
    )

    wrong = EventGridSettings(topic_endpoint=endpoint, topic_key="nope")
    with (
        EventGridPublisher(wrong, retry_total=0) as publisher,
        pytest.raises(EventPublishError),
    ):
        publisher.publish([change])
    # The sink records a request before answering it, so no waiting is needed.
    base = endpoint.removesuffix("/api/events")
    seen = requests.get(base + "/_sink/requests", timeout=10).json()["requests"]
    assert [r["status"] for r in seen] == [200, 401]
