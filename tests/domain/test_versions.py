from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.domain.versions import (
    InvalidVersionError,
    VersionClock,
    parse_version,
    version_time,
)


def test_versions_sort_in_the_order_they_were_minted() -> None:
    clock = VersionClock()

    versions = [clock.mint()[0] for _ in range(1000)]

    assert versions == sorted(versions)
    assert len(set(versions)) == 1000


def test_a_clock_stepping_back_does_not_reorder_versions() -> None:
    readings = iter(
        [
            datetime(2026, 1, 1, 12, 0, 1, tzinfo=UTC),
            datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC),  # NTP stepped back
        ]
    )
    clock = VersionClock(lambda: next(readings))

    first, _ = clock.mint()
    second, instant = clock.mint()

    assert second > first
    assert instant == datetime(2026, 1, 1, 12, 0, 1, tzinfo=UTC) + timedelta(
        microseconds=1
    )


def test_version_time_reads_back_the_instant() -> None:
    moment = datetime(2026, 12, 3, 15, 51, 48, 123456, tzinfo=UTC)
    version, _ = VersionClock(lambda: moment).mint()

    assert version.startswith("20261203T155148.123456Z-")
    assert version_time(version) == moment


@pytest.mark.parametrize(
    "text", ["", "2026", "20261203T155148.123456Z", "20261203T155148.123456Z-XYZ12345"]
)
def test_malformed_versions_are_rejected(text: str) -> None:
    with pytest.raises(InvalidVersionError):
        parse_version(text)
