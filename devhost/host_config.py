"""The parts of host.json the development host honours."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

HOST_JSON = "host.json"

# "hh:mm:ss", "hh:mm:ss.fff" or "d.hh:mm:ss": the .NET TimeSpan forms that
# host.json uses.
_TIMESPAN = re.compile(
    r"^(?:(?P<days>\d+)\.)?(?P<hours>\d+):(?P<minutes>\d+):(?P<seconds>\d+(?:\.\d+)?)$"
)


class HostConfigError(ValueError):
    """host.json is malformed."""


def parse_timespan(text: str) -> float:
    """Seconds in a .NET TimeSpan string such as ``00:00:30``."""
    match = _TIMESPAN.match(text.strip())
    if match is None:
        raise HostConfigError(f"not a timespan (expected hh:mm:ss): {text!r}")
    return (
        int(match.group("days") or 0) * 86400
        + int(match.group("hours")) * 3600
        + int(match.group("minutes")) * 60
        + float(match.group("seconds"))
    )


@dataclass(frozen=True)
class QueueOptions:
    """``extensions.queues``, with the Functions host's documented defaults."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    max_polling_interval: float = 60.0
    visibility_timeout: float = 0.0
    max_dequeue_count: int = 5
    message_encoding: str = "base64"


@dataclass(frozen=True)
class HostConfig:
    route_prefix: str = "api"
    queues: QueueOptions = field(default_factory=QueueOptions)


def load_host_config(script_root: Path) -> HostConfig:
    path = script_root / HOST_JSON
    if not path.is_file():
        logger.warning("No %s in %s: using defaults", HOST_JSON, script_root)
        return HostConfig()
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise HostConfigError(f"{path} is not valid JSON: {error}") from error
    extensions = document.get("extensions") or {}
    http = extensions.get("http") or {}
    route_prefix = str(http.get("routePrefix", "api")).strip("/")
    return HostConfig(
        route_prefix=route_prefix,
        queues=_queue_options(extensions.get("queues") or {}),
    )


def _queue_options(section: dict[str, Any]) -> QueueOptions:
    batch_size = int(section.get("batchSize", 16))
    if not 1 <= batch_size <= 32:
        raise HostConfigError("extensions.queues.batchSize must be 1..32")
    # The host's default threshold is half the batch size.
    threshold = int(section.get("newBatchThreshold", batch_size // 2))
    encoding = str(section.get("messageEncoding", "base64")).lower()
    if encoding not in ("base64", "none"):
        raise HostConfigError(
            "extensions.queues.messageEncoding must be 'base64' or 'none'"
        )
    return QueueOptions(
        batch_size=batch_size,
        new_batch_threshold=max(0, threshold),
        max_polling_interval=parse_timespan(
            section.get("maxPollingInterval", "00:01:00")
        ),
        visibility_timeout=parse_timespan(section.get("visibilityTimeout", "00:00:00")),
        max_dequeue_count=max(1, int(section.get("maxDequeueCount", 5))),
        message_encoding=encoding,
    )
