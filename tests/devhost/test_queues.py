"""Queue triggers against a real Azurite: delete after success, retry after
visibilityTimeout, poison after maxDequeueCount, real message metadata."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import requests
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueClient

from devhost.host import Host
from tests.devhost.conftest import TEST_HOST_JSON, read_records, wait_for
from tests.devhost.sample_app import ECHO_QUEUE, WORK_QUEUE

MAX_DEQUEUE_COUNT = TEST_HOST_JSON["extensions"]["queues"]["maxDequeueCount"]


def enqueue(connection: str, body: str) -> None:
    client = QueueClient.from_connection_string(connection, WORK_QUEUE)
    with contextlib.suppress(ResourceExistsError):
        client.create_queue()
    client.send_message(base64.b64encode(body.encode()).decode())


def peek_all(connection: str, name: str) -> list[str]:
    client = QueueClient.from_connection_string(connection, name)
    try:
        return [message.content for message in client.peek_messages(max_messages=32)]
    except ResourceNotFoundError:
        return []  # the host has not created the queue yet


def message_count(connection: str, name: str) -> int:
    client = QueueClient.from_connection_string(connection, name)
    return client.get_queue_properties().approximate_message_count or 0


def events(record_dir: Path, body: str, event: str) -> list[dict]:
    return [
        line
        for line in read_records(record_dir, "queue")
        if line["body"] == body and line["event"] == event
    ]


def test_message_is_processed_once_and_deleted(
    start_host: Callable[..., Host], storage_connection: str, record_dir: Path
) -> None:
    start_host()
    before = time.time()
    enqueue(storage_connection, "hello")
    done = wait_for(
        lambda: events(record_dir, "hello", "done"), 15, "the message to be processed"
    )
    wait_for(
        lambda: message_count(storage_connection, WORK_QUEUE) == 0,
        10,
        "the message to be deleted",
    )
    [started] = events(record_dir, "hello", "start")
    assert started["dequeue_count"] == 1
    assert started["id"] == done[0]["id"]
    assert started["pop_receipt"]
    inserted = started["inserted"]
    assert inserted is not None
    assert abs(datetime.fromisoformat(inserted).timestamp() - before) < 5


def test_failing_message_is_retried_after_visibility_timeout_then_poisoned(
    start_host: Callable[..., Host], storage_connection: str, record_dir: Path
) -> None:
    start_host()
    body = "fail:poison-me"
    enqueue(storage_connection, body)
    poison = f"{WORK_QUEUE}-poison"
    poisoned = wait_for(
        lambda: peek_all(storage_connection, poison), 30, "the poison message"
    )
    attempts = events(record_dir, body, "start")
    # Real dequeue counts, one attempt per dequeue, up to maxDequeueCount.
    assert [attempt["dequeue_count"] for attempt in attempts] == list(
        range(1, MAX_DEQUEUE_COUNT + 1)
    )
    assert len({attempt["id"] for attempt in attempts}) == 1
    # visibilityTimeout (1 s) passes between a failure and the retry.
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(attempts)]
    assert all(gap >= 0.9 for gap in gaps), gaps
    # Body intact: exactly the stored (base64) text the producer sent.
    assert poisoned == [base64.b64encode(body.encode()).decode()]
    assert message_count(storage_connection, WORK_QUEUE) == 0


def test_good_messages_are_not_held_up_by_a_failing_one(
    start_host: Callable[..., Host], storage_connection: str, record_dir: Path
) -> None:
    start_host()
    enqueue(storage_connection, "fail:noisy")
    for number in range(10):
        enqueue(storage_connection, f"ok-{number}")
    wait_for(
        lambda: all(events(record_dir, f"ok-{n}", "done") for n in range(10)),
        15,
        "all good messages",
    )
    for number in range(10):
        assert len(events(record_dir, f"ok-{number}", "done")) == 1


def test_message_that_exceeded_max_dequeue_count_is_poisoned_unrun(
    start_host: Callable[..., Host], storage_connection: str, record_dir: Path
) -> None:
    """A message dequeued too often without finishing (crashed hosts) goes
    to the poison queue without another run."""
    enqueue(storage_connection, "crashed-often")
    client = QueueClient.from_connection_string(storage_connection, WORK_QUEUE)
    for _ in range(MAX_DEQUEUE_COUNT):
        [message] = list(client.receive_messages(visibility_timeout=1))
        client.update_message(message, visibility_timeout=0)
    start_host()
    wait_for(
        lambda: peek_all(storage_connection, f"{WORK_QUEUE}-poison"),
        15,
        "the poison message",
    )
    assert events(record_dir, "crashed-often", "start") == []


def test_queue_output_binding_sends_the_value(
    start_host: Callable[..., Host], storage_connection: str
) -> None:
    host = start_host()
    response = requests.post(f"{host.base_url}/enqueue", data=b"echo me", timeout=10)
    assert response.status_code == 202
    assert peek_all(storage_connection, ECHO_QUEUE) == [
        base64.b64encode(b"echo me").decode()
    ]


def test_message_encoding_none_passes_text_as_is(
    start_host: Callable[..., Host],
    storage_connection: str,
    record_dir: Path,
    app_dir: Path,
) -> None:
    host_json = json.loads((app_dir / "host.json").read_text())
    host_json["extensions"]["queues"]["messageEncoding"] = "none"
    (app_dir / "host.json").write_text(json.dumps(host_json))
    start_host()
    client = QueueClient.from_connection_string(storage_connection, WORK_QUEUE)
    client.send_message("plain text")
    wait_for(lambda: events(record_dir, "plain text", "done"), 15, "the message")
