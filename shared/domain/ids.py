"""Identifiers of tenants and users: Microsoft Entra object ids (GUIDs)."""

from __future__ import annotations

import re
import uuid

# The 8-4-4-4-12 hex form only: uuid.UUID alone also takes "urn:..." and
# oddly placed hyphens, which would make one id reachable by many spellings.
_GUID = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)


class InvalidIdError(ValueError):
    """A value that should be a GUID is not; ``field`` names where it came from."""

    def __init__(self, field: str, value: object) -> None:
        super().__init__(f"{field} must be a GUID, got {value!r}")
        self.field = field


def parse_guid(value: object, field: str) -> str:
    """The canonical (lower-case, hyphenated) form of a GUID string.

    Entra ids are case-insensitive; storing one canonical form makes the same
    agent the same row whatever case a client sends.
    """
    if not isinstance(value, str) or not _GUID.match(value):
        raise InvalidIdError(field, value)
    return str(uuid.UUID(value))
