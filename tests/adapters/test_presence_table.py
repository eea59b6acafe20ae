"""The presence snapshot adapter against Azurite."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from shared.adapters.presence_table import (
    OUTBOX_CAPACITY,
    PresenceTable,
    ShardPresence,
)
from shared.adapters.storage_errors import ConcurrencyConflictError
from shared.domain.presence import Presence, PresenceChange
from shared.services import Services

TENANT = str(uuid.uuid4())


def change(
    user: str, availability: str, previous: Presence | None = None
) -> PresenceChange:
    return PresenceChange(
        TENANT, user, Presence(availability, availability), previous, datetime.now(UTC)
    )


@pytest.fixture
def presence(services: Services) -> PresenceTable:
    return services.presence


def test_a_shard_never_polled_reads_as_empty(presence: PresenceTable) -> None:
    stored = presence.read_shard(TENANT, 7)
    assert (stored.presence, stored.outbox, stored.etag) == ({}, [], None)


def test_recorded_changes_are_read_back_in_presence_and_outbox(
    presence: PresenceTable,
) -> None:
    users = [str(uuid.uuid4()) for _ in range(3)]
    first = [change(u, "Available") for u in users]
    written = presence.record(presence.read_shard(TENANT, 0), first, set(users))
    second = change(users[0], "Busy", previous=first[0].current)

    presence.record(written, [second], set(users))

    stored = presence.read_shard(TENANT, 0)
    assert stored.outbox == [*first, second]
    assert stored.presence[users[0]].presence == Presence("Busy", "Busy")
    assert stored.presence[users[1]].presence == Presence("Available", "Available")
    assert presence.get(TENANT, 0, users[0]) == stored.presence[users[0]]


def test_a_stale_write_records_neither_presence_nor_outbox(
    presence: PresenceTable,
) -> None:
    user = str(uuid.uuid4())
    stale = presence.record(
        presence.read_shard(TENANT, 1), [change(user, "Away")], {user}
    )
    presence.record(stale, [change(user, "Busy")], {user})
    before = presence.read_shard(TENANT, 1)

    with pytest.raises(ConcurrencyConflictError):
        presence.record(stale, [change(user, "Offline")], {user})

    after = presence.read_shard(TENANT, 1)
    assert after.presence == before.presence
    assert after.outbox == before.outbox
    assert after.etag == before.etag


def test_two_first_writers_of_a_shard_one_wins(presence: PresenceTable) -> None:
    user = str(uuid.uuid4())
    empty = presence.read_shard(TENANT, 2)
    presence.record(empty, [change(user, "Away")], {user})

    with pytest.raises(ConcurrencyConflictError):
        presence.record(empty, [change(user, "Busy")], {user})

    assert presence.read_shard(TENANT, 2).outbox[0].current.availability == "Away"


def test_clearing_published_changes_twice_is_harmless(presence: PresenceTable) -> None:
    first, second = change(str(uuid.uuid4()), "Away"), change(str(uuid.uuid4()), "Busy")
    members = {first.user_id, second.user_id}
    stored = presence.record(presence.read_shard(TENANT, 3), [first, second], members)

    cleared = presence.clear_published(stored, {first.change_id})
    assert cleared is not None
    assert presence.clear_published(cleared, {first.change_id}) == cleared
    # A clear from an out-of-date read is refused, not applied blindly.
    assert presence.clear_published(stored, {second.change_id}) is None

    again = presence.clear_published(
        presence.read_shard(TENANT, 3), {first.change_id, second.change_id}
    )
    assert again is not None
    assert presence.read_shard(TENANT, 3).outbox == []
    assert set(presence.read_shard(TENANT, 3).presence) == members


def test_presence_of_users_no_longer_members_is_dropped(
    presence: PresenceTable,
) -> None:
    leaving, staying = str(uuid.uuid4()), str(uuid.uuid4())
    stored = presence.record(
        presence.read_shard(TENANT, 4),
        [change(leaving, "Away"), change(staying, "Away")],
        {leaving, staying},
    )

    after = presence.record(stored, [], {staying}, {staying: datetime.now(UTC)})

    assert set(after.presence) == {staying}
    assert set(presence.read_shard(TENANT, 4).not_found) == {staying}


def test_a_full_shard_with_a_full_outbox_fits_in_one_row(
    presence: PresenceTable,
) -> None:
    members = [str(uuid.uuid4()) for _ in range(650)]
    start = datetime.now(UTC)
    changes = [
        PresenceChange(
            TENANT,
            members[i % 650],
            Presence("BeRightBack", "InAConferenceCall", f"C{i:030d}"),
            Presence("Available", "Available", f"B{i:030d}"),
            start + timedelta(seconds=i),  # every change its own time
        )
        for i in range(OUTBOX_CAPACITY)
    ]
    stored: ShardPresence = presence.read_shard(TENANT, 5)

    presence.record(stored, changes, set(members))

    read = presence.read_shard(TENANT, 5)
    assert read.outbox == changes
    assert read.outbox_room == 0


def test_more_changes_than_the_outbox_holds_are_refused(
    presence: PresenceTable,
) -> None:
    users = [str(uuid.uuid4()) for _ in range(OUTBOX_CAPACITY + 1)]
    with pytest.raises(ValueError, match="outbox"):
        presence.record(
            presence.read_shard(TENANT, 6),
            [change(u, "Away") for u in users],
            set(users),
        )
    assert presence.read_shard(TENANT, 6).etag is None
