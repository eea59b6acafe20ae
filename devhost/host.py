"""The development host: settings, app, HTTP server, queues and timers,
started and stopped together."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devhost.functions import QueueOutput, import_app, index_app
from devhost.host_config import QueueOptions, load_host_config
from devhost.http_server import HttpFunctionServer
from devhost.queues import QueueListener
from devhost.settings import (
    FUNCTION_KEY_SETTING,
    export_to_environ,
    read_settings_file,
)
from devhost.storage import MessageCodec, QueueClients
from devhost.timers import TimerRunner

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HostOptions:
    script_root: Path = Path(".")
    app: str = "function_app:app"
    bind: str = "127.0.0.1"
    port: int = 7071  # 0 lets the OS pick a free port
    # How long a received queue message stays invisible to other receivers
    # while it is processed (not renewed), and so how soon a message cut off
    # by a crash or kill -9 is received again.
    message_lease_seconds: float = 30.0
    # How long a stop waits for queue messages and timer runs in flight.
    shutdown_timeout: float = 10.0


class Host:
    def __init__(
        self,
        options: HostOptions,
        environ: MutableMapping[str, str] | None = None,
    ) -> None:
        self.options = options
        self._environ = os.environ if environ is None else environ
        self._http: HttpFunctionServer | None = None
        self._clients: QueueClients | None = None
        self._listeners: list[QueueListener] = []
        self._timers: list[TimerRunner] = []
        self._keyed_routes: list[str] = []
        self.route_prefix = "api"

    @property
    def base_url(self) -> str:
        assert self._http is not None, "host not started"
        base = f"http://{self.options.bind}:{self._http.port}"
        return f"{base}/{self.route_prefix}" if self.route_prefix else base

    def start(self) -> None:
        """Start serving; OSError if the port is taken (before the app loads)."""
        root = self.options.script_root
        # The app reads its settings from the environment at import time or
        # later, so they are exported before it is imported.
        export_to_environ(read_settings_file(root), self._environ)
        settings: Mapping[str, str] = dict(self._environ)
        config = load_host_config(root)
        self.route_prefix = config.route_prefix
        self._http = HttpFunctionServer(self.options.bind, self.options.port)
        try:
            self._start_functions(settings, config.queues)
        except BaseException:
            self.stop(timeout=0)
            raise
        self._log_function_key_state(settings)

    def _start_functions(
        self, settings: Mapping[str, str], queue_options: QueueOptions
    ) -> None:
        assert self._http is not None
        indexed = index_app(import_app(self.options.app, self.options.script_root))
        self._clients = clients = QueueClients(settings)
        codec = MessageCodec(queue_options.message_encoding)
        # Built before anything starts, so a bad schedule fails the start.
        self._timers = [TimerRunner(timer, settings) for timer in indexed.timers]
        self._listeners = [
            QueueListener(
                function, clients, queue_options, self.options.message_lease_seconds
            )
            for function in indexed.queues
        ]

        def send_outputs(outputs: Mapping[QueueOutput, Any]) -> None:
            clients.send_outputs(outputs, codec)

        self._http.start(
            indexed.http,
            self.route_prefix,
            settings.get(FUNCTION_KEY_SETTING) or None,
            send_outputs,
        )
        self._keyed_routes = [
            function.info.name
            for function in indexed.http
            if function.auth_level != "anonymous"
        ]
        for function in indexed.http:
            logger.info(
                "HTTP function %s: %s /%s/%s (%s)",
                function.info.name,
                ",".join(sorted(function.methods)) or "*",
                self.route_prefix,
                function.route,
                function.auth_level,
            )
        for listener in self._listeners:
            listener.start()
        for timer in self._timers:
            timer.start()

    def _log_function_key_state(self, settings: Mapping[str, str]) -> None:
        if self._keyed_routes and not settings.get(FUNCTION_KEY_SETTING):
            logger.warning(
                "Setting %s is empty: requests to %s will get 401",
                FUNCTION_KEY_SETTING,
                ", ".join(self._keyed_routes),
            )

    def stop(self, timeout: float | None = None) -> bool:
        """Stop taking work, wait up to ``timeout`` for work in flight.

        Returns False when work was cut off; cut-off queue messages are made
        visible again, but their handler threads may still be running, so
        the caller should end the process soon after.
        """
        bound = self.options.shutdown_timeout if timeout is None else timeout
        deadline = time.monotonic() + bound
        if self._http is not None:
            self._http.stop()
            self._http = None
        for listener in self._listeners:
            listener.stop_receiving()
        for timer in self._timers:
            timer.stop()
        clean = True
        for listener in self._listeners:
            if not listener.wait_idle(max(0.0, deadline - time.monotonic())):
                clean = False
                listener.release_in_flight()
            else:
                listener.close()
        for timer in self._timers:
            if not timer.wait_stopped(max(0.0, deadline - time.monotonic())):
                clean = False
                logger.warning("Timer %s still running at shutdown", timer.name)
        if self._clients is not None:
            self._clients.close()
        self._listeners, self._timers = [], []
        return clean
