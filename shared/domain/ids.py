"""Identifiers of tenants and users: Microsoft Entra object ids (GUIDs)."""

from __future__ import annotations

import uuid


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
    if not isinstance(value, str) or len(value) != 36:
        raise InvalidIdError(field, value)
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidIdError(field, value) from None
