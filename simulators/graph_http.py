"""The https server around :class:`GraphService`: a threaded HTTP/1.1 server
on loopback with keep-alive, so pooled clients reuse connections."""

from __future__ import annotations

import json
import logging
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from simulators.graph_control import handle_control
from simulators.graph_service import GraphService, Reply
from simulators.tls import LOOPBACK_HOST

logger = logging.getLogger(__name__)

# Bodies above this are refused outright: 650 GUIDs take about 26 kB.
_MAX_BODY_BYTES = 1_000_000


class _GraphServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    service: GraphService

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients dropping connections (timeouts, pool shutdown) are routine
        # here; a traceback on stderr for each would drown real problems.
        error = sys.exc_info()[1]
        logger.debug("connection from %s ended: %r", client_address, error)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _GraphServer

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY_BYTES:
            self._send(
                Reply(413, {"error": {"code": "RequestTooLarge", "message": ""}})
            )
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        path = urlsplit(self.path).path
        service = self.server.service
        headers = {key: value for key, value in self.headers.items()}
        reply = handle_control(service, method, path, body) or service.handle(
            method, path, _CaseInsensitive(headers), body
        )
        if reply is None:
            reply = Reply(
                404,
                {"error": {"code": "ResourceNotFound", "message": f"No route {path}"}},
            )
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        payload = json.dumps(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)


class _CaseInsensitive(dict[str, str]):
    """Header lookup ignoring case, as HTTP wants."""

    def __init__(self, headers: dict[str, str]) -> None:
        super().__init__({key.lower(): value for key, value in headers.items()})

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


def make_server(
    service: GraphService, context: ssl.SSLContext, port: int = 0
) -> ThreadingHTTPServer:
    """Binds 127.0.0.1:port (0: any free port) with TLS. The TLS handshake runs
    in each connection's thread, so one slow client cannot block accepting."""
    server = _GraphServer((LOOPBACK_HOST, port), _Handler)
    server.service = service
    server.socket = context.wrap_socket(
        server.socket, server_side=True, do_handshake_on_connect=False
    )
    return server
