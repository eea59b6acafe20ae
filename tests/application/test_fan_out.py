"""The poll fan-out against Azurite: which shards get a poll message."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from azure.storage.queue import QueueClient

from shared import settings as settings_module
from shared.adapters import storage_clients
from shared.adapters.shard_leases import LeaseState, ShardLease, ShardLeases
from shared.application.fan_out import PollFanOut
from shared.domain.commands import Action, Change, SubscriptionCommand
from shared.domain.polling import PollRequest
from shared.domain.versions import VersionClock
from shared.services import Services
from tests.support.functions_host import receive


@pytest.fixture
def poll_queue(services: Services) -> QueueClient:
    return storage_clients.queue_client(
        services.settings.storage, settings_module.POLL_QUEUE
    )


def register(services: Services, tenant_id: str, count: int) -> None:
    users = [str(uuid.uuid4()) for _ in range(count)]
    clock = VersionClock()
    for start in range(0, count, 1000):
        services.applier.apply(
            SubscriptionCommand(
                str(uuid.uuid4()),
                tenant_id,
                clock.mint()[0],
                tuple(Change(u, Action.REGISTER) for u in users[start : start + 1000]),
            )
        )


def polls(poll_queue: QueueClient) -> list[PollRequest]:
    return [
        PollRequest.from_message(message.get_body().decode())
        for message, _ in receive(poll_queue)
    ]


def test_the_tenant_row_counts_the_shards_opened(services: Services) -> None:
    tenant = str(uuid.uuid4())
    assert services.shard_leases.shard_count(tenant) == 0

    register(services, tenant, 1400)  # three shards

    assert services.shard_leases.shard_count(tenant) == 3
    assert tenant in set(services.tenants.tenant_ids())


def test_every_shard_of_every_tenant_gets_one_message(
    services: Services, poll_queue: QueueClient
) -> None:
    sizes = {str(uuid.uuid4()): n for n in (1, 650, 651, 2000)}
    for tenant, size in sizes.items():
        register(services, tenant, size)

    result = services.fan_out.run()

    sent = polls(poll_queue)
    expected = {(t, s) for t, n in sizes.items() for s in range(-(-n // 650))}
    assert {(p.tenant_id, p.shard) for p in sent} == expected
    assert len(sent) == result.enqueued == len(expected)
    for request in sent:
        lease = services.shard_leases.lease(request.tenant_id, request.shard)
        assert lease is not None
        assert (lease.state, lease.token) == (LeaseState.QUEUED, request.lease_token)


def test_a_tenant_listed_without_shards_gets_no_messages(
    services: Services, poll_queue: QueueClient
) -> None:
    # As after an apply step that listed the tenant and then lost its write.
    services.tenants.ensure(str(uuid.uuid4()))

    result = services.fan_out.run()

    assert polls(poll_queue) == []
    assert result.enqueued == 0


def test_a_tenant_cooling_down_gets_no_messages(
    services: Services, poll_queue: QueueClient
) -> None:
    cooling, other = str(uuid.uuid4()), str(uuid.uuid4())
    register(services, cooling, 10)
    register(services, other, 10)
    services.tenants.cool_down(cooling, datetime.now(UTC) + timedelta(minutes=5))

    result = services.fan_out.run()

    assert [p.tenant_id for p in polls(poll_queue)] == [other]
    assert result.cooling == 1


class _RowChangesAfterRead(ShardLeases):
    """Changes one shard row after the fan-out read it: the race with the
    apply step that the one-transaction lease taking must survive."""

    def __init__(self, services: Services, tenant: str) -> None:
        super().__init__(services.shard_leases._client)
        self._services, self._tenant, self._done = services, tenant, False

    def of_tenant(self, tenant_id: str) -> list[ShardLease]:
        leases = super().of_tenant(tenant_id)
        if not self._done:
            self._done = True
            register(self._services, self._tenant, 1)  # touches the open shard
        return leases


def test_a_shard_row_changed_after_the_read_is_still_fanned_out(
    services: Services, poll_queue: QueueClient
) -> None:
    tenant = str(uuid.uuid4())
    register(services, tenant, 660)  # shard 1 has room: the next register goes there
    fan_out = PollFanOut(
        services.tenants,
        _RowChangesAfterRead(services, tenant),
        services.poll_queue,
    )

    result = fan_out.run()

    assert sorted(p.shard for p in polls(poll_queue)) == [0, 1]
    assert result.busy == 0
