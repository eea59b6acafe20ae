"""Idempotency-Key records against Azurite: kept for the retention period,
then reusable and purged."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from azure.functions.timer import TimerRequest

from devtools.indexed_functions import user_functions
from shared import settings as settings_module
from shared.adapters.idempotency_table import IdempotencyRecord, IdempotencyTable
from shared.services import Services, get_services, reset_services

RETENTION = timedelta(hours=24)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def table(services: Services, clock: Clock) -> IdempotencyTable:
    client = services.idempotency._client
    return IdempotencyTable(client, retention=RETENTION, clock=clock)


def record(fingerprint: str) -> IdempotencyRecord:
    return IdempotencyRecord(fingerprint, "{}", '{"commandId": "x"}', enqueued=True)


def test_a_live_record_is_kept_and_not_replaced(
    table: IdempotencyTable, clock: Clock
) -> None:
    tenant = str(uuid.uuid4())
    assert table.create(tenant, "key", record("first"))
    clock.now += RETENTION - timedelta(seconds=1)

    assert not table.create(tenant, "key", record("second"))
    stored = table.get(tenant, "key")
    assert stored is not None and stored.fingerprint == "first"


def test_an_expired_record_counts_as_absent_and_the_key_can_be_used_again(
    table: IdempotencyTable, clock: Clock
) -> None:
    tenant = str(uuid.uuid4())
    table.create(tenant, "key", record("first"))
    clock.now += RETENTION

    assert table.get(tenant, "key") is None
    assert table.create(tenant, "key", record("second"))
    stored = table.get(tenant, "key")
    assert stored is not None and stored.fingerprint == "second"
    # The reused key is live again for a full period.
    clock.now += RETENTION - timedelta(seconds=1)
    assert not table.create(tenant, "key", record("third"))


def test_of_two_reusing_an_expired_key_at_once_only_one_wins(
    table: IdempotencyTable, clock: Clock
) -> None:
    tenant = str(uuid.uuid4())
    table.create(tenant, "key", record("old"))
    clock.now += RETENTION
    # Both read the expired record before either replaces it.
    stale = table._read(tenant, "key")
    assert table.create(tenant, "key", record("winner"))
    read, reads = table._read, iter([stale])
    # The loser's first read is the stale one; later reads are real.
    table._read = lambda *args: next(reads, None) or read(*args)  # type: ignore[method-assign]

    assert not table.create(tenant, "key", record("loser"))
    del table._read
    stored = table.get(tenant, "key")
    assert stored is not None and stored.fingerprint == "winner"


def test_the_purge_deletes_expired_records_only(
    table: IdempotencyTable, clock: Clock
) -> None:
    tenant = str(uuid.uuid4())
    table.create(tenant, "old-1", record("a"))
    table.create(tenant, "old-2", record("b"))
    clock.now += timedelta(hours=20)
    table.create(tenant, "recent", record("c"))
    clock.now += timedelta(hours=5)  # the first two are 25 h old, the last 5 h

    assert table.purge_expired() == 2

    assert table._read(tenant, "old-1") is None
    assert table._read(tenant, "old-2") is None
    assert table.get(tenant, "recent") is not None
    assert table.purge_expired() == 0


def test_the_daily_timer_purges_with_the_configured_retention(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDEMPOTENCY_RETENTION_HOURS", "0.0001")  # 0.36 s
    settings_module.get_settings.cache_clear()
    reset_services()
    tenant = str(uuid.uuid4())
    idempotency = get_services().idempotency
    idempotency.create(tenant, "key", record("a"))
    created = datetime.now(UTC)

    def expired() -> bool:
        return datetime.now(UTC) - created > timedelta(hours=0.0001)

    while not expired():  # waits for the condition, checked every 10 ms
        time.sleep(0.01)
    user_functions()["purge_idempotency_records"](timer=TimerRequest(past_due=False))

    assert idempotency._read(tenant, "key") is None


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan"])
def test_a_bad_retention_setting_is_named(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("IDEMPOTENCY_RETENTION_HOURS", value)
    monkeypatch.setenv(settings_module.STORAGE_CONNECTION, "UseDevelopmentStorage=true")

    with pytest.raises(settings_module.SettingsError, match="IDEMPOTENCY_RETENTION"):
        settings_module.Settings.from_environ()


def test_a_purge_between_the_read_and_the_replace_makes_create_try_again(
    table: IdempotencyTable, clock: Clock
) -> None:
    tenant = str(uuid.uuid4())
    table.create(tenant, "key", record("old"))
    clock.now += RETENTION
    read = table._read

    def read_then_purged(tenant_id: str, key: str) -> object:
        entity = read(tenant_id, key)
        table.purge_expired()  # the daily timer, at this very moment
        return entity

    table._read = read_then_purged  # type: ignore[method-assign]

    assert table.create(tenant, "key", record("new"))
    del table._read
    stored = table.get(tenant, "key")
    assert stored is not None and stored.fingerprint == "new"


class _ReusedBeforeDelete:
    """The table client, except that just before its first delete the key is
    used again by another instance (its expired record replaced)."""

    def __init__(self, client: object, reuse: Callable[[], object]) -> None:
        self._client = client
        self._reuse: Callable[[], object] | None = reuse

    def __getattr__(self, name: str) -> object:
        return getattr(self._client, name)

    def delete_entity(self, *args: object, **kwargs: object) -> None:
        if self._reuse is not None:
            reuse, self._reuse = self._reuse, None
            reuse()
        self._client.delete_entity(*args, **kwargs)  # type: ignore[attr-defined]


def test_a_key_reused_while_the_purge_runs_survives_it(
    table: IdempotencyTable, clock: Clock
) -> None:
    tenant = str(uuid.uuid4())
    table.create(tenant, "key", record("old"))
    clock.now += RETENTION
    purger = IdempotencyTable(
        _ReusedBeforeDelete(  # type: ignore[arg-type]
            table._client, lambda: table.create(tenant, "key", record("new"))
        ),
        retention=RETENTION,
        clock=clock,
    )

    assert purger.purge_expired() == 0

    stored = table.get(tenant, "key")
    assert stored is not None and stored.fingerprint == "new"
