from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.domain.presence import (
    Presence,
    PresenceChange,
    StoredPresence,
    detect_change,
    is_newer,
)

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
TENANT, USER = "t", "u"


def test_a_first_observation_is_a_change_without_previous() -> None:
    change = detect_change(TENANT, USER, Presence("Available", "Available"), T0, None)

    assert change is not None
    assert change.previous is None


def test_the_same_availability_and_activity_is_no_change() -> None:
    stored = StoredPresence(Presence("Busy", "InACall", "0001"), T0)

    change = detect_change(
        TENANT, USER, Presence("Busy", "InACall", "0002"), T0 + timedelta(1), stored
    )

    assert change is None


def test_an_older_sequence_number_never_replaces_a_newer_one() -> None:
    stored = StoredPresence(Presence("Busy", "InACall", "0005"), T0)
    late = Presence("Available", "Available", "0004")

    assert not is_newer(late, T0 + timedelta(minutes=5), stored)
    assert detect_change(TENANT, USER, late, T0 + timedelta(minutes=5), stored) is None


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("C9", "C10"),  # as text "C9" sorts after "C10"
        ("C319191255625145", "C319191255625146"),
        ("99", "100"),
        ("0004", "0005"),
    ],
)
def test_sequence_numbers_are_ordered_by_their_digits(older: str, newer: str) -> None:
    stored = StoredPresence(Presence("Busy", "InACall", older), T0)
    # Observed earlier by the clock: the sequence number alone must decide.
    earlier = T0 - timedelta(minutes=1)

    assert is_newer(Presence("Away", "Away", newer), earlier, stored)
    stored_newer = StoredPresence(Presence("Busy", "InACall", newer), T0)
    assert not is_newer(
        Presence("Away", "Away", older), T0 + timedelta(1), stored_newer
    )


def test_sequence_numbers_that_cannot_be_ordered_leave_it_to_the_time() -> None:
    stored = StoredPresence(Presence("Busy", "InACall", "A17"), T0)

    assert is_newer(Presence("Away", "Away", "B3"), T0 + timedelta(seconds=1), stored)
    assert not is_newer(
        Presence("Away", "Away", "B3"), T0 - timedelta(seconds=1), stored
    )


def test_without_sequence_numbers_the_observation_time_decides() -> None:
    stored = StoredPresence(Presence("Busy", "InACall"), T0)

    assert not is_newer(Presence("Away", "Away"), T0 - timedelta(seconds=1), stored)
    assert is_newer(Presence("Away", "Away"), T0 + timedelta(seconds=1), stored)


def test_unknown_values_are_kept_as_they_come() -> None:
    observed = Presence("SomethingGraphAddedLater", "AlsoNew")

    change = detect_change(TENANT, USER, observed, T0, None)

    assert change is not None
    assert change.current == observed


def test_the_change_id_is_the_same_for_the_same_change() -> None:
    def make() -> PresenceChange:
        return PresenceChange(TENANT, USER, Presence("Away", "Away", "9"), None, T0)

    assert make().change_id == make().change_id
    other = PresenceChange(TENANT, USER, Presence("Away", "Away", "10"), None, T0)
    assert other.change_id != make().change_id
