"""HTTP triggers behind a loopback HTTP server.

Requests under ``/<routePrefix>/`` are routed to the function whose route
template matches best; FUNCTION and ADMIN level routes need the function key
(header ``x-functions-key`` or query parameter ``code``).
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import azure.functions as func

from devhost.functions import HttpFunction, QueueOutput, invoke
from devhost.routing import MethodNotAllowed, Route, RouteTable, RouteTemplate

logger = logging.getLogger(__name__)

KEY_HEADER = "x-functions-key"
KEY_QUERY_PARAMETER = "code"
KEYED_AUTH_LEVELS = frozenset({"function", "admin"})

_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})

OutputSender = Callable[[Mapping[QueueOutput, Any]], None]


class HttpFunctionServer:
    """Binds at construction (so a busy port fails early); serves on start."""

    def __init__(self, host: str, port: int) -> None:
        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._server.dispatcher = None  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(
        self,
        functions: list[HttpFunction],
        route_prefix: str,
        function_key: str | None,
        send_outputs: OutputSender,
    ) -> None:
        self._server.dispatcher = _Dispatcher(  # type: ignore[attr-defined]
            functions, route_prefix, function_key, send_outputs
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="http-server", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()


class _Dispatcher:
    def __init__(
        self,
        functions: list[HttpFunction],
        route_prefix: str,
        function_key: str | None,
        send_outputs: OutputSender,
    ) -> None:
        self.prefix = [part.lower() for part in route_prefix.split("/") if part]
        self.routes: RouteTable[HttpFunction] = RouteTable(
            Route(RouteTemplate.parse(function.route), function.methods, function)
            for function in functions
        )
        self.function_key = function_key
        self.send_outputs = send_outputs

    def key_accepted(
        self, headers: Mapping[str, str], query: Mapping[str, str]
    ) -> bool:
        presented = headers.get(KEY_HEADER) or query.get(KEY_QUERY_PARAMETER)
        if not self.function_key or not presented:
            return False
        return hmac.compare_digest(presented.encode(), self.function_key.encode())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections
    server_version = "devhost"

    def _handle(self) -> None:
        started = time.monotonic()
        status = self._respond()
        # Path only: the query string may carry the function key.
        logger.info(
            "%s %s -> %d (%.0f ms)",
            self.command,
            urlsplit(self.path).path,
            status,
            (time.monotonic() - started) * 1000,
        )

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle

    def log_message(self, format: str, *args: Any) -> None:
        # The default writes the request line (with its query) to stderr.
        pass

    def _respond(self) -> int:
        dispatcher: _Dispatcher = self.server.dispatcher  # type: ignore[attr-defined]
        body = self._read_body()
        url = urlsplit(self.path)
        segments = [unquote(part) for part in url.path.split("/") if part]
        prefix_length = len(dispatcher.prefix)
        if [part.lower() for part in segments[:prefix_length]] != dispatcher.prefix:
            return self._send_plain(HTTPStatus.NOT_FOUND)
        resolved = dispatcher.routes.resolve(self.command, segments[prefix_length:])
        if resolved is None:
            return self._send_plain(HTTPStatus.NOT_FOUND)
        if isinstance(resolved, MethodNotAllowed):
            allow = {"Allow": ", ".join(sorted(resolved.allowed))}
            return self._send_plain(HTTPStatus.METHOD_NOT_ALLOWED, allow)
        function = resolved.route.target
        query: dict[str, str] = {}
        for name, value in parse_qsl(url.query, keep_blank_values=True):
            query.setdefault(name, value)
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            name = name.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        if function.auth_level in KEYED_AUTH_LEVELS and not dispatcher.key_accepted(
            headers, query
        ):
            return self._send_plain(HTTPStatus.UNAUTHORIZED)
        request = func.HttpRequest(
            method=self.command,
            url=f"http://{self.headers.get('Host', 'localhost')}{self.path}",
            headers=headers,
            params=query,
            route_params=resolved.params,
            body=body,
        )
        try:
            invocation = invoke(function.info, request)
            dispatcher.send_outputs(invocation.outputs)
            response = _as_response(invocation.result)
        except Exception:
            logger.exception("HTTP function %s failed", function.info.name)
            return self._send_plain(HTTPStatus.INTERNAL_SERVER_ERROR)
        return self._send_response(response)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked_body()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked_body(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            size = int(self.rfile.readline().split(b";", 1)[0].strip(), 16)
            if size == 0:
                # Skip optional trailers up to the blank line ending the body.
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()  # the CRLF after each chunk

    def _send_plain(
        self, status: HTTPStatus, headers: Mapping[str, str] | None = None
    ) -> int:
        response = func.HttpResponse(
            status.phrase, status_code=status, headers=dict(headers or {})
        )
        return self._send_response(response)

    def _send_response(self, response: func.HttpResponse) -> int:
        body = response.get_body() or b""
        self.send_response(response.status_code)
        header_names = set()
        for name, value in response.headers.items():
            if name.lower() in _FRAMING_HEADERS:
                continue  # we frame the body ourselves
            header_names.add(name.lower())
            self.send_header(name, value)
        if "content-type" not in header_names:
            self.send_header("Content-Type", _content_type(response))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return response.status_code


def _content_type(response: func.HttpResponse) -> str:
    mimetype = response.mimetype or "text/plain"
    if mimetype.startswith("text/") or mimetype.endswith("json"):
        return f"{mimetype}; charset={response.charset or 'utf-8'}"
    return mimetype


def _as_response(result: Any) -> func.HttpResponse:
    if isinstance(result, func.HttpResponse):
        return result
    if isinstance(result, str | bytes):
        return func.HttpResponse(result)
    raise TypeError(f"HTTP function returned {type(result).__name__}, not HttpResponse")
