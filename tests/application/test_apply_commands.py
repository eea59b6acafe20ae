"""The apply step against real Azurite: duplicates, races and reordering."""

from __future__ import annotations

import itertools
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from bench.common import RequestCounter
from devtools.azurite import AzuriteEndpoints
from shared.adapters.storage_errors import ConcurrencyConflictError
from shared.adapters.subscription_table import ApplyWrite, SubscriptionTable
from shared.application.apply_commands import CommandApplier
from shared.domain.commands import Action, Change, SubscriptionCommand
from shared.domain.shards import SHARD_CAPACITY
from shared.domain.subscriptions import Subscription, SubscriptionState
from shared.domain.versions import VersionClock
from shared.services import Services

TENANT = "0f8fad5b-d9cb-469f-a165-70867728950e"


class Minter:
    """Versions one second apart, in minting order, like commands accepted by
    different instances over time."""

    def __init__(self) -> None:
        start = datetime(2026, 1, 1, tzinfo=UTC)
        ticks = itertools.count()
        self._clock = VersionClock(lambda: start + timedelta(seconds=next(ticks)))

    def command(self, *changes: tuple[str, Action], expected: str | None = None):
        return SubscriptionCommand(
            command_id=str(uuid.uuid4()),
            tenant_id=TENANT,
            version=self._clock.mint()[0],
            changes=tuple(Change(user, action) for user, action in changes),
            expected_version=expected,
        )


@pytest.fixture
def minter() -> Minter:
    return Minter()


@pytest.fixture
def table(services: Services) -> SubscriptionTable:
    return services.subscriptions


def stored_row(table: SubscriptionTable, user_id: str) -> Subscription:
    row = table.get(TENANT, user_id)
    assert row is not None, f"no subscription row for {user_id}"
    return row


def events_by_command(table: SubscriptionTable) -> Counter[str]:
    return Counter(event.command_id for event in table.events(TENANT))


def all_rows(services: Services) -> list[dict]:
    client = services.subscriptions._client
    return sorted(
        (dict(e) | {"etag": e.metadata["etag"]} for e in client.list_entities()),
        key=lambda e: (e["PartitionKey"], e["RowKey"]),
    )


def test_a_message_applied_twice_in_turn_appends_one_event(
    table: SubscriptionTable, minter: Minter
) -> None:
    user = str(uuid.uuid4())
    command = minter.command((user, Action.REGISTER))
    applier = CommandApplier(table)

    first = applier.apply(command)
    second = applier.apply(command)

    assert (first.applied, second.applied) == (1, 0)
    assert events_by_command(table) == {command.command_id: 1}
    assert stored_row(table, user).state is SubscriptionState.ACTIVE


def test_a_message_applied_twice_at_once_appends_one_event(
    table: SubscriptionTable, minter: Minter
) -> None:
    users = [str(uuid.uuid4()) for _ in range(40)]
    command = minter.command(*((u, Action.REGISTER) for u in users))
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def deliver() -> None:
        try:
            barrier.wait()
            CommandApplier(table).apply(command)
        except BaseException as error:  # surfaced by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert events_by_command(table) == {command.command_id: len(users)}
    assert {stored_row(table, u).state for u in users} == {SubscriptionState.ACTIVE}


def test_concurrent_conflicting_commands_end_at_the_highest_version(
    table: SubscriptionTable, minter: Minter
) -> None:
    user = str(uuid.uuid4())
    actions = [Action.REGISTER, Action.DEREGISTER] * 6
    commands = [minter.command((user, action)) for action in actions]
    barrier = threading.Barrier(len(commands))
    results = {}

    def deliver(command: SubscriptionCommand) -> None:
        barrier.wait()
        results[command.command_id] = CommandApplier(table).apply(command)

    threads = [threading.Thread(target=deliver, args=(c,)) for c in commands]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    newest = max(commands, key=lambda c: c.version)
    stored = stored_row(table, user)
    assert stored.version == newest.version
    assert stored.state is SubscriptionState.REMOVED  # the last action
    events = events_by_command(table)
    assert set(events.values()) == {1}, "no command may append two events"
    assert events[newest.command_id] == 1
    applied = {cid for cid, result in results.items() if result.applied}
    assert applied == set(events), "every applied command is in the log, once"


@pytest.mark.parametrize(
    "order", list(itertools.permutations(range(3))), ids=lambda o: "-".join(map(str, o))
)
def test_every_order_of_register_deregister_register_ends_the_same(
    table: SubscriptionTable, minter: Minter, order: tuple[int, ...]
) -> None:
    user = str(uuid.uuid4())
    commands = [
        minter.command((user, Action.REGISTER)),
        minter.command((user, Action.DEREGISTER)),
        minter.command((user, Action.REGISTER)),
    ]
    applier = CommandApplier(table)

    for index in order:
        applier.apply(commands[index])

    stored = stored_row(table, user)
    assert stored.state is SubscriptionState.ACTIVE
    assert stored.version == commands[2].version
    shard_members = _members_by_shard(table)
    assert sum(m.count(user) for m in shard_members.values()) == 1


def test_a_late_older_register_cannot_bring_back_a_deregistered_agent(
    table: SubscriptionTable, minter: Minter
) -> None:
    user = str(uuid.uuid4())
    register = minter.command((user, Action.REGISTER))
    deregister = minter.command((user, Action.DEREGISTER))
    applier = CommandApplier(table)

    applier.apply(deregister)
    late = applier.apply(register)

    assert late.applied == 0
    stored = stored_row(table, user)
    assert stored.state is SubscriptionState.REMOVED
    assert stored.version == deregister.version
    assert _members_by_shard(table) == {}


def test_a_conflicting_write_leaves_the_table_unchanged(
    services: Services, table: SubscriptionTable, minter: Minter
) -> None:
    from shared.domain.subscriptions import decide, evolve

    user = str(uuid.uuid4())
    CommandApplier(table).apply(minter.command((user, Action.REGISTER)))
    stale_snapshot = table.read_for_apply(TENANT, [user])
    CommandApplier(table).apply(minter.command((user, Action.DEREGISTER)))
    before = all_rows(services)

    late = minter.command((user, Action.DEREGISTER))
    stored = stale_snapshot.subscriptions[user]
    event = decide(stored.subscription, late.changes[0], late)
    assert not isinstance(event, str)
    write = ApplyWrite(
        subscriptions=[(evolve(event, None), stored.etag)],
        events=[event],
        shards=[],
    )
    with pytest.raises(ConcurrencyConflictError) as conflict:
        table.commit(TENANT, write)

    assert conflict.value.partition_key == TENANT
    assert conflict.value.row_key == f"sub|{user}"
    assert all_rows(services) == before


def test_registrations_fill_shards_of_at_most_650(
    table: SubscriptionTable, minter: Minter
) -> None:
    users = [str(uuid.uuid4()) for _ in range(1000)]
    applier = CommandApplier(table)

    applier.apply(minter.command(*((u, Action.REGISTER) for u in users)))

    shards = _members_by_shard(table)
    assert sorted(len(m) for m in shards.values()) == [350, SHARD_CAPACITY]
    assert sorted(itertools.chain(*shards.values())) == sorted(users)
    assert {stored_row(table, u).shard for u in users} == set(shards)


def test_a_deregister_frees_a_slot_the_next_register_fills(
    table: SubscriptionTable, minter: Minter
) -> None:
    users = [str(uuid.uuid4()) for _ in range(SHARD_CAPACITY + 1)]
    applier = CommandApplier(table)
    applier.apply(minter.command(*((u, Action.REGISTER) for u in users)))
    leaving = users[10]
    first_shard = stored_row(table, leaving).shard
    assert first_shard is not None

    applier.apply(minter.command((leaving, Action.DEREGISTER)))
    newcomer = str(uuid.uuid4())
    applier.apply(minter.command((newcomer, Action.REGISTER)))

    shards = _members_by_shard(table)
    assert leaving not in shards[first_shard]
    assert newcomer in shards[first_shard]
    assert len(shards[first_shard]) == SHARD_CAPACITY
    assert len(shards) == 2


def test_concurrent_registers_in_one_tenant_never_overfill_a_shard(
    table: SubscriptionTable, minter: Minter
) -> None:
    # Fill shard 0 up to a few free slots, then race more registers than fit.
    users = [str(uuid.uuid4()) for _ in range(SHARD_CAPACITY - 3)]
    CommandApplier(table).apply(minter.command(*((u, Action.REGISTER) for u in users)))
    racers = [minter.command((str(uuid.uuid4()), Action.REGISTER)) for _ in range(8)]
    barrier = threading.Barrier(len(racers))

    def deliver(command: SubscriptionCommand) -> None:
        barrier.wait()
        CommandApplier(table).apply(command)

    threads = [threading.Thread(target=deliver, args=(c,)) for c in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    shards = _members_by_shard(table)
    assert max(len(m) for m in shards.values()) <= SHARD_CAPACITY
    members = list(itertools.chain(*shards.values()))
    assert len(members) == len(set(members)) == len(users) + len(racers)


def test_a_stale_if_match_command_is_skipped_at_apply(
    table: SubscriptionTable, minter: Minter
) -> None:
    user = str(uuid.uuid4())
    applier = CommandApplier(table)
    first = minter.command((user, Action.REGISTER))
    applier.apply(first)
    applier.apply(minter.command((user, Action.REGISTER)))

    result = applier.apply(
        minter.command((user, Action.DEREGISTER), expected=first.version)
    )

    assert result.applied == 0
    assert stored_row(table, user).state is SubscriptionState.ACTIVE


def _members_by_shard(table: SubscriptionTable) -> dict[int, list[str]]:
    snapshot = table.read_for_apply(TENANT, [])
    table.load_shards(TENANT, range(snapshot.shard_count), snapshot)
    return {n: s.members for n, s in snapshot.shards.items() if s.members}


def test_a_large_batch_reads_a_small_tenant_once(
    services: Services, table: SubscriptionTable, minter: Minter
) -> None:
    users = [str(uuid.uuid4()) for _ in range(200)]

    result = CommandApplier(table).apply(
        minter.command(*((u, Action.REGISTER) for u in users))
    )

    assert result.applied == 200
    assert result.conflicts == 0
    assert {stored_row(table, u).state for u in users} == {SubscriptionState.ACTIVE}


class TableReadEarlier(SubscriptionTable):
    """The real table, except that its up-front read of the tenant returns
    rows read earlier: what an instance sees when another one writes between
    its read and its transaction."""

    def __init__(self, table: SubscriptionTable, earlier: dict) -> None:
        super().__init__(table._client)
        self._earlier = earlier

    def read_small_tenant(self, tenant_id: str, limit: int) -> dict | None:
        return self._earlier


def test_rows_read_up_front_that_went_stale_are_read_again(
    table: SubscriptionTable, minter: Minter
) -> None:
    users = [str(uuid.uuid4()) for _ in range(60)]
    CommandApplier(table).apply(minter.command(*((u, Action.REGISTER) for u in users)))
    earlier = table.read_small_tenant(TENANT, 1000)
    assert earlier is not None and len(earlier) == 60
    CommandApplier(table).apply(minter.command((users[0], Action.DEREGISTER)))
    latest = minter.command(*((u, Action.DEREGISTER) for u in users))

    result = CommandApplier(TableReadEarlier(table, earlier)).apply(latest)

    assert result.conflicts >= 1
    assert result.applied == 60
    assert {stored_row(table, u).version for u in users} == {latest.version}
    assert events_by_command(table)[latest.command_id] == 60
    assert _members_by_shard(table) == {}


@pytest.fixture
def requests_sent(azurite: AzuriteEndpoints) -> Iterator[RequestCounter]:
    """Every storage request from here on, counted at the transport."""
    counter = RequestCounter(azurite)
    counter.install()
    yield counter
    counter.uninstall()


def test_a_new_tenants_first_register_lists_it_with_one_write(
    services: Services, minter: Minter, requests_sent: RequestCounter
) -> None:
    command = minter.command((str(uuid.uuid4()), Action.REGISTER))
    before = requests_sent.snapshot()

    services.applier.apply(command)

    assert requests_sent.since(before) == {
        "table.read.subscriptions": 1,
        "table.write.tenants": 1,
        "table.transaction.subscriptions": 1,
    }
    assert TENANT in set(services.tenants.tenant_ids())
    assert services.shard_leases.shard_count(TENANT) == 1


def test_a_register_that_opens_a_shard_costs_one_read_and_one_transaction(
    services: Services, minter: Minter, requests_sent: RequestCounter
) -> None:
    full = [(str(uuid.uuid4()), Action.REGISTER) for _ in range(SHARD_CAPACITY)]
    services.applier.apply(minter.command(*full))
    newcomer = str(uuid.uuid4())
    before = requests_sent.snapshot()

    services.applier.apply(minter.command((newcomer, Action.REGISTER)))

    assert requests_sent.since(before) == {
        "table.read.subscriptions": 1,
        "table.transaction.subscriptions": 1,
    }
    assert stored_row(services.subscriptions, newcomer).shard == 1
    assert services.shard_leases.shard_count(TENANT) == 2


def test_two_appliers_opening_a_shard_at_once_open_it_once(
    services: Services, minter: Minter
) -> None:
    full = [(str(uuid.uuid4()), Action.REGISTER) for _ in range(SHARD_CAPACITY)]
    services.applier.apply(minter.command(*full))
    newcomers = [str(uuid.uuid4()) for _ in range(2)]
    commands = [minter.command((user, Action.REGISTER)) for user in newcomers]
    barrier = threading.Barrier(2)

    def apply(command: SubscriptionCommand) -> None:
        barrier.wait()
        services.applier.apply(command)

    threads = [threading.Thread(target=apply, args=(c,)) for c in commands]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert services.shard_leases.shard_count(TENANT) == 2
    assert sorted(_members_by_shard(services.subscriptions)[1]) == sorted(newcomers)
