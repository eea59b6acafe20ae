"""Versions that totally order the commands for one subscription.

A version is minted by whichever instance accepts a command, with no
coordination: the UTC time of acceptance to the microsecond, then a random
tiebreaker. It sorts as a plain string, so comparisons are string comparisons
in Python and in Table Storage alike.

Clock-skew assumption: instances keep UTC within a few milliseconds (Azure
hosts are NTP-disciplined). Two calls for one agent sent further apart than
that skew are ordered as sent; calls closer together are ordered by the
tiebreaker, which is arbitrary but the same everywhere. Clients that need
strict ordering send ``If-Match`` with the version they last saw.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

_FORMAT = "%Y%m%dT%H%M%S.%fZ"
VERSION_PATTERN = re.compile(r"^\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{8}$")


class InvalidVersionError(ValueError):
    """A string that is not a version."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


class VersionClock:
    """Mints versions that never go backwards within this process, even if the
    wall clock steps back (an NTP correction must not reorder one client's
    calls that the same instance accepted)."""

    def __init__(self, now: Callable[[], datetime] = _utc_now) -> None:
        self._now = now
        self._last = datetime.min.replace(tzinfo=UTC)
        self._lock = threading.Lock()

    def mint(self) -> tuple[str, datetime]:
        """A new version and the instant it stands for."""
        with self._lock:
            instant = self._now()
            if instant <= self._last:
                instant = self._last + timedelta(microseconds=1)
            self._last = instant
        return f"{instant.strftime(_FORMAT)}-{secrets.token_hex(4)}", instant


def parse_version(value: str) -> str:
    if not VERSION_PATTERN.match(value):
        raise InvalidVersionError(f"not a version: {value!r}")
    return value


def version_time(version: str) -> datetime:
    """The acceptance instant a version stands for."""
    return datetime.strptime(parse_version(version)[:23], _FORMAT).replace(tzinfo=UTC)
