"""A local stand-in for an Azure Event Grid topic (CloudEvents input schema).

It speaks the publish side of the real wire protocol, so the real
``azure-eventgrid`` client can publish to it: ``POST`` of a JSON array of
CloudEvents (``application/cloudevents-batch+json``; a single
``application/cloudevents+json`` event is accepted too) to
``/api/events?api-version=...`` with the topic key in the ``aeg-sas-key``
header. That path is the one every Event Grid topic endpoint uses, so the
setting to use is::

    EVENTGRID_TOPIC_ENDPOINT=http://127.0.0.1:<port>/api/events
    EVENTGRID_TOPIC_KEY=<the --key given to the sink>

Answers as Event Grid does: 200 accepted, 401 wrong or missing key, 400 bad
content type or an event without the required CloudEvents attributes, 413 over
the 1 MB request limit. For outbox tests it can fail on request (500 for the
next N publish requests, or until recovered) or hold requests unanswered (to
exercise client timeouts).

Control, in-process through ``EventGridSink`` or over HTTP (loopback only, no
key; a development tool):

    POST /_sink/fail      {"count": N}  next N publishes fail (omit/null: until
                          recovered); optional "status" (default 500) and
                          "after" (publishes let through first, default 0)
    POST /_sink/hold      hold publish requests unanswered until recovered
    POST /_sink/recover   stop failing and release held requests
    POST /_sink/reset     recover, and forget received events and requests
    GET  /_sink/events    {"events": [...]} every accepted event, as received
    GET  /_sink/requests  {"requests": [...]} every publish request seen

Run: ``python -m simulators.eventgrid_sink --port 7070 --key devkey``.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
TOPIC_PATH = "/api/events"
CONTROL_PREFIX = "/_sink/"
# Event Grid's publish limit per request.
MAX_REQUEST_BYTES = 1024 * 1024
# Bodies beyond this are not even read: the connection is closed instead.
_MAX_READ_BYTES = 16 * MAX_REQUEST_BYTES

BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
SINGLE_CONTENT_TYPE = "application/cloudevents+json"
_REQUIRED_ATTRIBUTES = ("id", "source", "specversion", "type")
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$",
    re.IGNORECASE,
)

Event = dict[str, Any]


@dataclass(frozen=True)
class ReceivedRequest:
    """One publish request as the sink saw it, whatever it answered."""

    path: str
    api_version: str | None
    content_type: str
    body_bytes: int
    event_count: int
    status: int


class _RejectedError(Exception):
    def __init__(self, status: HTTPStatus, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class EventGridSink:
    """The sink's server and state. Thread-safe; usable as a context manager."""

    def __init__(
        self,
        key: str,
        *,
        port: int = 0,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        if not key:
            raise ValueError("the sink needs a topic key")
        self._key = key
        self._port = port
        self._on_event = on_event
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._events: list[Event] = []
        self._requests: list[ReceivedRequest] = []
        self._passes_left = 0  # requests still let through before failing
        self._failures_left: int | None = 0  # None: fail until recovered
        self._failure_status = HTTPStatus.INTERNAL_SERVER_ERROR
        self._released = threading.Event()
        self._released.set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> EventGridSink:
        server = ThreadingHTTPServer((HOST, self._port), _handler_for(self))
        server.daemon_threads = True
        # Held requests must not keep stop() waiting for their threads.
        server.block_on_close = False
        self._server = server
        # A short poll interval keeps stop() (and so each test) quick.
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="eventgrid-sink",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> EventGridSink:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the sink is not running")
        return int(self._server.server_address[1])

    @property
    def key(self) -> str:
        """What to put in EVENTGRID_TOPIC_KEY."""
        return self._key

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def topic_endpoint(self) -> str:
        """What to put in EVENTGRID_TOPIC_ENDPOINT."""
        return self.base_url + TOPIC_PATH

    # -- fault injection -----------------------------------------------------

    def fail(self, count: int | None = None, status: int = 500, after: int = 0) -> None:
        """Let ``after`` publish requests through, then answer the next
        ``count`` with ``status`` (all of them until recover() when count is
        None). A failed request records no event."""
        if (count is not None and count < 0) or after < 0:
            raise ValueError("count and after must not be negative")
        with self._lock:
            self._passes_left = after
            self._failures_left = count
            self._failure_status = HTTPStatus(status)

    def hold(self) -> None:
        """Leave publish requests unanswered until recover() (or stop())."""
        self._released.clear()

    def recover(self) -> None:
        with self._lock:
            self._passes_left = 0
            self._failures_left = 0
        self._released.set()

    def reset(self) -> None:
        self.recover()
        with self._lock:
            self._events.clear()
            self._requests.clear()

    # -- observations --------------------------------------------------------

    @property
    def events(self) -> list[Event]:
        with self._lock:
            return list(self._events)

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._requests)

    def wait_for_events(self, count: int, timeout: float = 10.0) -> list[Event]:
        """At least ``count`` events, waiting up to ``timeout`` seconds for
        them; raises TimeoutError with what did arrive otherwise."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._events) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{len(self._events)} of {count} events arrived "
                        f"within {timeout}s"
                    )
                self._changed.wait(remaining)
            return list(self._events)

    # -- request handling (called from server threads) -------------------------

    def _accept(self, path: str, query: str, headers: Any, body: bytes) -> int:
        """Handle one publish request; returns the event count on success."""
        content_type = headers.get("Content-Type", "")
        api_version = _single(parse_qs(query).get("api-version"))
        status = HTTPStatus.OK
        events: list[Event] = []
        try:
            self._released.wait()
            self._check_key(headers.get("aeg-sas-key"))
            self._take_injected_failure()
            if not api_version:
                raise _RejectedError(
                    HTTPStatus.BAD_REQUEST,
                    "BadRequest",
                    "the api-version query parameter is required",
                )
            if len(body) > MAX_REQUEST_BYTES:
                raise _RejectedError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    "RequestEntityTooLarge",
                    f"request of {len(body)} bytes exceeds {MAX_REQUEST_BYTES}",
                )
            events = _parse_events(content_type, body)
        except _RejectedError as rejection:
            status = rejection.status
            raise
        finally:
            self._record_request(
                ReceivedRequest(
                    path=path,
                    api_version=api_version,
                    content_type=content_type,
                    body_bytes=len(body),
                    event_count=len(events),
                    status=int(status),
                )
            )
        with self._changed:
            self._events.extend(events)
            self._changed.notify_all()
        if self._on_event is not None:
            for event in events:
                self._on_event(event)
        return len(events)

    def _check_key(self, offered: str | None) -> None:
        # Constant-time comparison; the key itself never reaches a message.
        if offered is None or not hmac.compare_digest(
            offered.encode(), self._key.encode()
        ):
            raise _RejectedError(
                HTTPStatus.UNAUTHORIZED,
                "Unauthorized",
                "missing or wrong aeg-sas-key",
            )

    def _take_injected_failure(self) -> None:
        with self._lock:
            if self._failures_left == 0:
                return
            if self._passes_left > 0:
                self._passes_left -= 1
                return
            if self._failures_left is not None:
                self._failures_left -= 1
            status = self._failure_status
        raise _RejectedError(status, "InjectedFailure", "failure injected by sink")

    def _record_request(self, request: ReceivedRequest) -> None:
        with self._changed:
            self._requests.append(request)
            self._changed.notify_all()

    def _control(self, method: str, action: str, body: bytes) -> tuple[int, Any]:
        if method == "GET" and action == "events":
            return 200, {"events": self.events}
        if method == "GET" and action == "requests":
            return 200, {"requests": [asdict(r) for r in self.requests]}
        if method != "POST":
            return 404, {"error": f"no control action {method} {action}"}
        options = json.loads(body) if body.strip() else {}
        if not isinstance(options, dict):
            return 400, {"error": "the body must be a JSON object"}
        if action == "fail":
            self.fail(
                options.get("count"),
                int(options.get("status", 500)),
                int(options.get("after", 0)),
            )
        elif action == "hold":
            self.hold()
        elif action == "recover":
            self.recover()
        elif action == "reset":
            self.reset()
        else:
            return 404, {"error": f"no control action {action}"}
        return 200, {"ok": True}


def _single(values: list[str] | None) -> str | None:
    return values[0] if values else None


def _parse_events(content_type: str, body: bytes) -> list[Event]:
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type not in (BATCH_CONTENT_TYPE, SINGLE_CONTENT_TYPE):
        raise _RejectedError(
            HTTPStatus.BAD_REQUEST,
            "BadRequest",
            f"content type {content_type!r} is not {BATCH_CONTENT_TYPE} or "
            f"{SINGLE_CONTENT_TYPE}",
        )
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _RejectedError(
            HTTPStatus.BAD_REQUEST, "BadRequest", f"body is not JSON: {error}"
        ) from error
    if media_type == SINGLE_CONTENT_TYPE:
        payload = [payload]
    if not isinstance(payload, list) or not payload:
        raise _RejectedError(
            HTTPStatus.BAD_REQUEST,
            "BadRequest",
            "a batch must be a non-empty JSON array of events",
        )
    for index, event in enumerate(payload):
        problem = _cloud_event_problem(event)
        if problem:
            raise _RejectedError(
                HTTPStatus.BAD_REQUEST, "BadRequest", f"event {index}: {problem}"
            )
    return payload


def _cloud_event_problem(event: Any) -> str | None:
    if not isinstance(event, dict):
        return "not a JSON object"
    for name in _REQUIRED_ATTRIBUTES:
        value = event.get(name)
        if not isinstance(value, str) or not value:
            return f"required attribute {name!r} is missing or empty"
    if event["specversion"] != "1.0":
        return f"specversion {event['specversion']!r} is not 1.0"
    moment = event.get("time")
    if moment is not None and (
        not isinstance(moment, str) or not _RFC3339.match(moment)
    ):
        return f"time {moment!r} is not an RFC 3339 timestamp"
    if "data" in event and "data_base64" in event:
        return "data and data_base64 are mutually exclusive"
    return None


def _handler_for(sink: EventGridSink) -> type[BaseHTTPRequestHandler]:
    class Handler(_SinkRequestHandler):
        pass

    Handler.sink = sink
    return Handler


class _SinkRequestHandler(BaseHTTPRequestHandler):
    sink: EventGridSink
    protocol_version = "HTTP/1.1"
    server_version = "EventGridSink/1.0"

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        body = self._read_body()
        if body is None:
            return
        if url.path.startswith(CONTROL_PREFIX):
            try:
                status, payload = self.sink._control(
                    method, url.path[len(CONTROL_PREFIX) :], body
                )
            except (ValueError, TypeError) as error:
                status, payload = 400, {"error": str(error)}
            self._reply(status, payload)
            return
        if method != "POST" or url.path.rstrip("/") != TOPIC_PATH:
            self._reply(404, _error_body("NotFound", f"no topic at {url.path}"))
            return
        try:
            self.sink._accept(url.path, url.query, self.headers, body)
        except _RejectedError as rejection:
            self._reply(
                int(rejection.status), _error_body(rejection.code, rejection.message)
            )
            return
        self._reply(200, None)

    def _read_body(self) -> bytes | None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_READ_BYTES:
            # Not worth reading: answer and drop the connection instead.
            self.close_connection = True
            self._reply(413, _error_body("RequestEntityTooLarge", "far too large"))
            return None
        return self.rfile.read(length)

    def _reply(self, status: int, payload: Any) -> None:
        body = b"" if payload is None else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up first (a held request it timed out on); the
            # request was still handled, as a real topic would have done.
            logger.debug("client left before the %d answer", status)
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        # Access lines go to logging (debug), not stderr; the request line
        # holds no key (it travels in a header).
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s %s", self.address_string(), format % args)


def _error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def describe_event(event: Event) -> str:
    """One readable line for a Presence.Changed event (or any CloudEvent)."""
    data = event.get("data")
    head = f"event {event.get('id')}"
    if not isinstance(data, dict) or "availability" not in data:
        return f"{head} {event.get('type')} from {event.get('source')}"
    line = (
        f"{head} tenant {data.get('tenantId')} user {data.get('userId')}: "
        f"{data.get('availability')}/{data.get('activity')}"
    )
    previous = data.get("previous")
    if isinstance(previous, dict):
        line += f" (was {previous.get('availability')}/{previous.get('activity')})"
    else:
        line += " (first seen)"
    if data.get("sequenceNumber") is not None:
        line += f" seq {data['sequenceNumber']}"
    return f"{line} at {data.get('observedAt')}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Local Event Grid topic stand-in (CloudEvents input)."
    )
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--key", required=True, help="the topic key to require")
    args = parser.parse_args(argv)

    def print_event(event: Event) -> None:
        print(describe_event(event), flush=True)

    sink = EventGridSink(args.key, port=args.port, on_event=print_event).start()
    print(
        f"Event Grid sink listening: topic endpoint {sink.topic_endpoint}", flush=True
    )
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        sink.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
