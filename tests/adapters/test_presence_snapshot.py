"""The snapshot's text form: what is encoded decodes to the same snapshot."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.adapters import presence_snapshot
from shared.adapters.presence_snapshot import Snapshot, SnapshotFormatError
from shared.domain.presence import Presence, PresenceChange, StoredPresence

TENANT = "7a0c5d1e-0000-4000-8000-000000000001"
NOW = datetime(2026, 12, 3, 12, 0, 0, 123456, tzinfo=UTC)


def sample() -> Snapshot:
    return Snapshot(
        presence={
            "u1": StoredPresence(Presence("Available", "Available", "C1"), NOW),
            "u2": StoredPresence(Presence("Busy", "InAMeeting"), NOW),
            "u3": StoredPresence(
                Presence("SomethingNew", "NewActivity"), NOW + timedelta(seconds=1)
            ),
        },
        outbox=[
            PresenceChange(TENANT, "u2", Presence("Busy", "InAMeeting"), None, NOW),
            PresenceChange(
                TENANT,
                "u1",
                Presence("Available", "Available", "C1"),
                Presence("Away", "Away", "C0"),
                NOW,
            ),
        ],
        not_found={"u4": NOW - timedelta(hours=1)},
    )


def test_round_trip_keeps_everything() -> None:
    text = presence_snapshot.encode(sample())
    assert presence_snapshot.decode(TENANT, text) == sample()


def test_repeated_words_and_times_are_stored_once() -> None:
    text = presence_snapshot.encode(sample())
    assert text.count("InAMeeting") == 1
    assert text.count(NOW.isoformat()) == 1


def test_parts_stay_under_the_property_limit_and_join_back() -> None:
    text = "x" * (presence_snapshot.PART_CHARS * 2 + 5)
    parts = presence_snapshot.to_parts(text)
    assert sorted(parts) == ["s00", "s01", "s02"]
    assert all(len(p) <= presence_snapshot.PART_CHARS for p in parts.values())
    entity = {"PartitionKey": "p", "RowKey": "snapshot", "other": 1, **parts}
    assert presence_snapshot.from_parts(entity) == text


@pytest.mark.parametrize("text", ["not json", '{"v": 99}', '{"v": 1, "w": []}'])
def test_an_unreadable_snapshot_names_the_problem(text: str) -> None:
    with pytest.raises(SnapshotFormatError, match="snapshot"):
        presence_snapshot.decode(TENANT, text)
