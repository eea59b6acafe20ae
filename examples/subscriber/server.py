"""An Event Grid webhook for ``Presence.Changed`` events, on the standard
library's http.server.

    python -m examples.subscriber.server --port 8080

What it shows:

* the CloudEvents 1.0 abuse-protection handshake Event Grid performs for a
  subscription with the CloudEvents delivery schema: an ``OPTIONS`` request
  with ``WebHook-Request-Origin``, answered with ``WebHook-Allowed-Origin``;
* the Event Grid-schema handshake, for completeness: a
  ``Microsoft.EventGrid.SubscriptionValidationEvent`` whose ``validationCode``
  is echoed back as ``{"validationResponse": ...}``;
* delivery of one event (``application/cloudevents+json``) or of a batch
  (``application/cloudevents-batch+json``, when batching is enabled), with
  duplicates and stale events dropped (see presence_view.py).

``GET /presence`` returns what the subscriber currently knows.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from examples.subscriber.presence_view import MalformedEventError, PresenceView

logger = logging.getLogger(__name__)

# The origin Event Grid announces in its validation request.
EVENT_GRID_ORIGIN = "eventgrid.azure.net"
VALIDATION_EVENT_TYPE = "Microsoft.EventGrid.SubscriptionValidationEvent"
_SINGLE = "application/cloudevents+json"
_BATCH = "application/cloudevents-batch+json"
_EVENT_GRID_SCHEMA = "application/json"


class SubscriberServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        port: int = 0,
        *,
        view: PresenceView | None = None,
        allowed_origins: Iterable[str] = (EVENT_GRID_ORIGIN,),
    ) -> None:
        super().__init__(("127.0.0.1", port), _SubscriberHandler)
        self.view = view or PresenceView()
        self.allowed_origins = frozenset(origin.lower() for origin in allowed_origins)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/api/presence-events"


class _SubscriberHandler(BaseHTTPRequestHandler):
    server: SubscriberServer
    protocol_version = "HTTP/1.1"

    def do_OPTIONS(self) -> None:
        origin = self.headers.get("WebHook-Request-Origin")
        if not origin:
            self._reply(400, {"error": "WebHook-Request-Origin is required"})
            return
        if origin.lower() not in self.server.allowed_origins:
            # Not answering with WebHook-Allowed-Origin refuses the subscription.
            self._reply(403, {"error": f"origin {origin} is not allowed"})
            return
        self._reply(
            200,
            None,
            {
                "WebHook-Allowed-Origin": origin,
                # No rate limit asked of Event Grid.
                "WebHook-Allowed-Rate": "*",
                "Allow": "POST, OPTIONS",
            },
        )

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/presence":
            self._reply(200, self.server.view.snapshot())
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        media_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        try:
            payload = json.loads(body)
        except ValueError:
            self._reply(400, {"error": "body is not JSON"})
            return
        if media_type == _EVENT_GRID_SCHEMA:
            self._event_grid_schema(payload)
        elif media_type == _SINGLE:
            self._deliver([payload])
        elif media_type == _BATCH and isinstance(payload, list):
            self._deliver(payload)
        else:
            self._reply(400, {"error": f"unexpected content type {media_type!r}"})

    def _event_grid_schema(self, payload: Any) -> None:
        # Only the validation handshake is handled in the Event Grid schema;
        # presence events are expected in the CloudEvents schema.
        events = payload if isinstance(payload, list) else []
        for event in events:
            if isinstance(event, dict) and event.get("eventType") == (
                VALIDATION_EVENT_TYPE
            ):
                code = (event.get("data") or {}).get("validationCode")
                if isinstance(code, str) and code:
                    logger.info("answered Event Grid subscription validation")
                    self._reply(200, {"validationResponse": code})
                    return
        self._reply(400, {"error": "subscribe with the CloudEvents 1.0 schema"})

    def _deliver(self, events: list[Any]) -> None:
        counts: dict[str, int] = {}
        try:
            for event in events:
                if not isinstance(event, dict):
                    raise MalformedEventError("an event must be a JSON object")
                outcome = self.server.view.apply(event)
                counts[outcome.value] = counts.get(outcome.value, 0) + 1
                logger.info("event %s: %s", event.get("id"), outcome.value)
        except MalformedEventError as error:
            # 400: Event Grid does not retry it (it dead-letters, if enabled).
            self._reply(400, {"error": str(error)})
            return
        self._reply(200, counts)

    def _reply(
        self, status: int, payload: Any, headers: dict[str, str] | None = None
    ) -> None:
        body = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s %s", self.address_string(), format % args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Presence.Changed webhook")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    server = SubscriberServer(args.port)
    print(f"subscriber listening: {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
