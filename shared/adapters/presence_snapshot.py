"""The compact text form of one shard's presence snapshot.

A shard's read model (the latest presence of each member), its outbox of
changes not yet published and its set-aside members are one JSON document,
so that a poll reads one row and writes at most one row. The document is
kept small because a table entity holds at most 1 MiB: values that repeat
across members (availability and activity words, the observation time that
one poll gives all its members) are written once in a word list and referred
to by index. The document is then cut into string properties of at most
``PART_CHARS`` characters (a string property holds at most 64 KiB, UTF-16).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.domain.presence import Presence, PresenceChange, StoredPresence

FORMAT_VERSION = 1
# Characters per string property: 60,000 bytes in UTF-16, under the 64 KiB cap.
PART_CHARS = 30_000
PART_PREFIX = "s"


class SnapshotFormatError(ValueError):
    """A stored snapshot this code cannot read."""


@dataclass
class Snapshot:
    """One shard's presence, outbox and set-aside members."""

    presence: dict[str, StoredPresence] = field(default_factory=dict)
    outbox: list[PresenceChange] = field(default_factory=list)
    # Members Graph refused as unknown, and when: left out of polls a while.
    not_found: dict[str, datetime] = field(default_factory=dict)


class _Words:
    """Interns repeated strings: each is stored once, referred to by index."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self._index: dict[str, int] = {}

    def __call__(self, word: str) -> int:
        index = self._index.get(word)
        if index is None:
            index = self._index[word] = len(self.items)
            self.items.append(word)
        return index


def encode(snapshot: Snapshot) -> str:
    """The snapshot as compact JSON (its tenant is the row's partition)."""
    words = _Words()

    def time_word(moment: datetime) -> int:
        return words(moment.isoformat())

    def presence_fields(presence: Presence) -> list[Any]:
        return [
            words(presence.availability),
            words(presence.activity),
            presence.sequence_number,
        ]

    document = {
        "v": FORMAT_VERSION,
        "p": {
            user: [*presence_fields(stored.presence), time_word(stored.observed_at)]
            for user, stored in snapshot.presence.items()
        },
        "o": [
            [
                change.user_id,
                *presence_fields(change.current),
                time_word(change.observed_at),
                None if change.previous is None else presence_fields(change.previous),
            ]
            for change in snapshot.outbox
        ],
        "n": {user: time_word(when) for user, when in snapshot.not_found.items()},
    }
    document["w"] = words.items
    return json.dumps(document, separators=(",", ":"))


def decode(tenant_id: str, text: str) -> Snapshot:
    try:
        document = json.loads(text)
        if document.get("v") != FORMAT_VERSION:
            raise SnapshotFormatError(f"unknown snapshot version {document.get('v')}")
        words: list[str] = document["w"]
        times = _TimeCache(words)

        def presence_of(fields: list[Any]) -> Presence:
            return Presence(words[fields[0]], words[fields[1]], fields[2])

        return Snapshot(
            presence={
                user: StoredPresence(presence_of(fields), times[fields[3]])
                for user, fields in document["p"].items()
            },
            outbox=[
                PresenceChange(
                    tenant_id=tenant_id,
                    user_id=item[0],
                    current=presence_of(item[1:4]),
                    previous=None if item[5] is None else presence_of(item[5]),
                    observed_at=times[item[4]],
                )
                for item in document["o"]
            ],
            not_found={user: times[index] for user, index in document["n"].items()},
        )
    except (ValueError, KeyError, IndexError, TypeError) as error:
        if isinstance(error, SnapshotFormatError):
            raise
        raise SnapshotFormatError(f"unreadable presence snapshot: {error}") from error


class _TimeCache:
    """Parses each distinct time word once: a poll stamps all its members
    with one time, so a snapshot holds few distinct times."""

    def __init__(self, words: list[str]) -> None:
        self._words = words
        self._parsed: dict[int, datetime] = {}

    def __getitem__(self, index: int) -> datetime:
        parsed = self._parsed.get(index)
        if parsed is None:
            parsed = self._parsed[index] = datetime.fromisoformat(self._words[index])
        return parsed


def to_parts(text: str) -> dict[str, str]:
    """The document cut into ``s00``, ``s01``... string properties."""
    return {
        f"{PART_PREFIX}{number:02d}": text[start : start + PART_CHARS]
        for number, start in enumerate(range(0, max(len(text), 1), PART_CHARS))
    }


def from_parts(entity: Mapping[str, Any]) -> str:
    names: Iterable[str] = sorted(
        name
        for name in entity
        if name.startswith(PART_PREFIX) and name[len(PART_PREFIX) :].isdigit()
    )
    return "".join(str(entity[name]) for name in names)
