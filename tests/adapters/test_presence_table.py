"""The presence read model and outbox adapter against Azurite."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from shared.adapters.presence_table import PresenceTable
from shared.adapters.storage_errors import ConcurrencyConflictError
from shared.domain.presence import Presence, PresenceChange
from shared.services import Services

TENANT = str(uuid.uuid4())


def change(user: str, availability: str) -> PresenceChange:
    return PresenceChange(
        TENANT, user, Presence(availability, availability), None, datetime.now(UTC)
    )


@pytest.fixture
def presence(services: Services) -> PresenceTable:
    return services.presence


def test_clearing_an_outbox_twice_is_harmless(presence: PresenceTable) -> None:
    first, second = change(str(uuid.uuid4()), "Away"), change(str(uuid.uuid4()), "Busy")
    presence.record_changes(0, [(first, None), (second, None)])
    presence.delete_outbox(TENANT, 0, [first.change_id])

    presence.delete_outbox(TENANT, 0, [first.change_id, second.change_id])

    assert presence.pending_outbox(TENANT, 0) == []


def test_a_stale_presence_write_records_neither_row_nor_outbox(
    presence: PresenceTable,
) -> None:
    user = str(uuid.uuid4())
    presence.record_changes(0, [(change(user, "Away"), None)])
    stale_etag = presence.read_shard(TENANT, 0).etags[user]
    presence.record_changes(0, [(change(user, "Busy"), stale_etag)])
    before = presence.read_shard(TENANT, 0)

    with pytest.raises(ConcurrencyConflictError):
        presence.record_changes(0, [(change(user, "Offline"), stale_etag)])

    after = presence.read_shard(TENANT, 0)
    assert after.presence == before.presence
    assert after.outbox == before.outbox
