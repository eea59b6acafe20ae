"""Call the indexed functions of ``function_app`` directly, the way the
Functions host would: HTTP functions with ``func.HttpRequest`` objects, queue
functions with ``QueueMessage`` objects read from the real (Azurite) queue,
each by its binding name. Used by the tests and the benchmarks."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import Any

import azure.functions as func
from azure.functions.queue import QueueMessage
from azure.storage.queue import QueueClient


@cache
def user_functions() -> dict[str, Callable[..., Any]]:
    import function_app

    app = function_app.app
    # get_functions() keeps state and refuses a second call unless reset.
    app.functions_bindings = {}
    return {
        str(f.get_function_name()): f.get_user_function() for f in app.get_functions()
    }


def http(
    function_name: str,
    method: str,
    url: str,
    route_params: dict[str, str],
    body: bytes | dict[str, Any] | list[Any] | None = None,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> func.HttpResponse:
    if isinstance(body, dict | list):
        raw = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json", **(headers or {})}
    else:
        raw = body or b""
    request = func.HttpRequest(
        method=method,
        url=f"http://localhost:7071{url}",
        headers=headers or {},
        params=params or {},
        route_params=route_params,
        body=raw,
    )
    # By binding name, as the host calls it.
    response: func.HttpResponse = user_functions()[function_name](req=request)
    return response


def response_json(response: func.HttpResponse) -> Any:
    return json.loads(response.get_body())


def receive(
    queue: QueueClient, limit: int = 32, visibility_timeout: int = 30
) -> list[tuple[QueueMessage, Any]]:
    """Receive up to ``limit`` messages as the host would hand them over:
    base64-decoded (host.json messageEncoding), with their dequeue count.
    Each comes with the raw SDK message, needed to delete it."""
    received = queue.receive_messages(
        max_messages=limit,
        messages_per_page=min(32, limit),
        visibility_timeout=visibility_timeout,
    )
    pairs = []
    for message in received:
        content = message.content
        raw = content if isinstance(content, bytes) else base64.b64decode(content)
        pairs.append(
            (
                QueueMessage(
                    id=message.id,
                    body=raw,
                    pop_receipt=message.pop_receipt,
                    dequeue_count=message.dequeue_count,
                    insertion_time=message.inserted_on or datetime.now(UTC),
                ),
                message,
            )
        )
    return pairs


def run_queue_function(function_name: str, queue: QueueClient) -> int:
    """Hand every message on the queue to the function, deleting each one the
    function returned from without error (the host's rule); returns how many
    were handled. Exceptions propagate: callers test failure paths directly."""
    handled = 0
    while batch := receive(queue):
        for message, raw in batch:
            user_functions()[function_name](message=message)
            queue.delete_message(raw)
            handled += 1
    return handled
