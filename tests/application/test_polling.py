"""The presence pipeline end to end against Azurite, the Graph simulator and
the Event Grid sink: fan-out, shard polls, change detection and the outbox."""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from azure.data.tables import TableEntity
from azure.storage.queue import QueueClient

from shared import settings as settings_module
from shared.adapters import storage_clients
from shared.adapters.graph_presence import GraphPresenceClient, RetryPolicy
from shared.adapters.shard_leases import LeaseState
from shared.adapters.subscription_table import SubscriptionTable
from shared.application.poll_shard import (
    NOT_FOUND_RECHECK,
    PollOutcome,
    ShardPoller,
)
from shared.domain.commands import Action, Change, SubscriptionCommand
from shared.domain.polling import PollRequest
from shared.domain.subscriptions import SubscriptionState
from shared.domain.versions import VersionClock
from shared.services import Services, get_services, reset_services
from simulators.eventgrid_sink import EventGridSink
from simulators.graph import GraphSimulator
from tests.support.functions_host import (
    http,
    receive,
    response_json,
    run_queue_function,
    user_functions,
)


@pytest.fixture
def pipeline(
    storage_connection: str,
    graph_settings: object,
    eventgrid_settings: object,
) -> Iterator[Services]:
    """The app's services wired to Azurite, the simulator and the sink."""
    reset_services()
    yield get_services()
    reset_services()


@pytest.fixture
def poll_queue(pipeline: Services) -> QueueClient:
    return storage_clients.queue_client(
        pipeline.settings.storage, settings_module.POLL_QUEUE
    )


def register(services: Services, tenant_id: str, users: list[str]) -> None:
    clock = VersionClock()
    for start in range(0, len(users), 1000):
        services.applier.apply(
            SubscriptionCommand(
                command_id=str(uuid.uuid4()),
                tenant_id=tenant_id,
                version=clock.mint()[0],
                changes=tuple(
                    Change(u, Action.REGISTER) for u in users[start : start + 1000]
                ),
            )
        )


def tenant_with_agents(
    simulator: GraphSimulator, services: Services, count: int
) -> tuple[str, list[str]]:
    tenant = simulator.add_tenant(user_count=count)
    users = simulator.user_ids(tenant)
    register(services, tenant, users)
    return tenant, users


def run_cycle(services: Services, poll_queue: QueueClient) -> int:
    """One timer tick: fan out, then let the poll workers drain the queue."""
    services.fan_out.run()
    return run_queue_function("poll_shard", poll_queue)


def presence_rows(services: Services) -> dict[tuple[str, str], str]:
    client = services.presence._client
    return {
        (e["PartitionKey"], e["RowKey"]): str(e.metadata["etag"])
        for e in client.list_entities()
    }


def test_graph_calls_per_cycle_are_the_sum_of_shards(
    pipeline: Services,
    poll_queue: QueueClient,
    graph_simulator: GraphSimulator,
    eventgrid_sink: EventGridSink,
) -> None:
    sizes = [700, 650, 10, 1301]
    tenants = [tenant_with_agents(graph_simulator, pipeline, n)[0] for n in sizes]
    graph_simulator.reset_counters()

    handled = run_cycle(pipeline, poll_queue)

    expected = sum(math.ceil(n / 650) for n in sizes)
    assert handled == expected
    assert graph_simulator.count("presence") == expected
    for tenant, size in zip(tenants, sizes, strict=True):
        assert graph_simulator.count("presence", tenant) == math.ceil(size / 650)
    # The first observation of every agent is a change.
    assert len(eventgrid_sink.wait_for_events(sum(sizes))) == sum(sizes)


def test_a_cycle_without_changes_writes_nothing_and_publishes_nothing(
    pipeline: Services,
    poll_queue: QueueClient,
    graph_simulator: GraphSimulator,
    eventgrid_sink: EventGridSink,
) -> None:
    tenant_with_agents(graph_simulator, pipeline, 120)
    run_cycle(pipeline, poll_queue)
    eventgrid_sink.wait_for_events(120)
    rows_before = presence_rows(pipeline)
    requests_before = len(eventgrid_sink.requests)

    run_cycle(pipeline, poll_queue)

    assert presence_rows(pipeline) == rows_before
    assert len(eventgrid_sink.requests) == requests_before
    assert len(eventgrid_sink.events) == 120


def test_changed_presence_is_published_with_previous_and_current(
    pipeline: Services,
    poll_queue: QueueClient,
    graph_simulator: GraphSimulator,
    eventgrid_sink: EventGridSink,
) -> None:
    tenant, users = tenant_with_agents(graph_simulator, pipeline, 200)
    run_cycle(pipeline, poll_queue)
    first = {
        e["data"]["userId"]: e["data"] for e in eventgrid_sink.wait_for_events(200)
    }
    graph_simulator.set_change_rate(0.1)
    graph_simulator.advance()
    now = graph_simulator.presence_of(tenant, users)
    changed = {
        u
        for u in users
        if (now[u].availability, now[u].activity)
        != (first[u]["availability"], first[u]["activity"])
    }
    assert changed, "the simulator changed nobody's presence"

    run_cycle(pipeline, poll_queue)

    events = eventgrid_sink.wait_for_events(200 + len(changed))[200:]
    assert {e["data"]["userId"] for e in events} == changed
    for event in events:
        data = event["data"]
        user = data["userId"]
        assert (data["availability"], data["activity"]) == (
            now[user].availability,
            now[user].activity,
        )
        assert data["previous"] == {
            "availability": first[user]["availability"],
            "activity": first[user]["activity"],
        }
        assert event["subject"] == f"users/{user}"
        assert event["source"] == f"/tenants/{tenant}"


def test_the_same_poll_message_delivered_twice_publishes_once(
    pipeline: Services,
    poll_queue: QueueClient,
    graph_simulator: GraphSimulator,
    eventgrid_sink: EventGridSink,
) -> None:
    tenant_with_agents(graph_simulator, pipeline, 50)
    pipeline.fan_out.run()
    ((message, raw),) = receive(poll_queue)
    poll = user_functions()["poll_shard"]
    graph_simulator.reset_counters()

    poll(message=message)
    poll(message=message)  # redelivered after, say, a lost delete

    assert graph_simulator.count("presence") == 1
    assert len(eventgrid_sink.wait_for_events(50)) == 50
    assert len({e["id"] for e in eventgrid_sink.events}) == 50
    poll_queue.delete_message(raw)


def test_two_workers_on_one_shard_one_polls_one_skips(
    pipeline: Services,
    poll_queue: QueueClient,
    graph_simulator: GraphSimulator,
    eventgrid_sink: EventGridSink,
) -> None:
    tenant_with_agents(graph_simulator, pipeline, 30)
    graph_simulator.set_latency_ms(300)  # keep the first poll in flight
    pipeline.fan_out.run()
    ((message, _raw),) = receive(poll_queue)
    request = PollRequest.from_message(message.get_body().decode())
    barrier = threading.Barrier(2)
    outcomes: list[PollOutcome] = []

    def worker() -> None:
        reset_instance = Services(pipeline.settings)  # another instance
        barrier.wait()
        outcomes.append(reset_instance.poller.poll(request).outcome)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == sorted([PollOutcome.POLLED, PollOutcome.ALREADY_POLLING])
    assert graph_simulator.count("presence") == 1


def test_a_second_fan_out_skips_shards_still_queued(
    pipeline: Services,
    poll_queue: QueueClient,
    graph_simulator: GraphSimulator,
) -> None:
    tenant_with_agents(graph_simulator, pipeline, 700)

    first = pipeline.fan_out.run()
    second = pipeline.fan_out.run()

    assert (first.enqueued, second.enqueued, second.busy) == (2, 0, 2)
    assert poll_queue.get_queue_properties().approximate_message_count == 2


def test_a_crashed_workers_lease_expires_and_another_polls(
    pipeline: Services,
    poll_queue: QueueClient,
    graph_simulator: GraphSimulator,
    eventgrid_sink: EventGridSink,
) -> None:
    tenant, _users = tenant_with_agents(graph_simulator, pipeline, 20)
    pipeline.fan_out.run()
    ((message, _raw),) = receive(poll_queue)
    request = PollRequest.from_message(message.get_body().decode())
    lease = pipeline.shard_leases.read(tenant, request.shard)
    assert lease is not None
    # A worker claimed the shard and died: its lease ran out a moment ago.
    expired = datetime.now(UTC) - timedelta(seconds=1)
    assert pipeline.shard_leases.take(
        lease, LeaseState.POLLING, request.lease_token, expired
    )

    result = pipeline.poller.poll(request)

    assert result.outcome is PollOutcome.POLLED
    assert len(eventgrid_sink.wait_for_events(20)) == 20


def test_event_grid_down_then_up_delivers_every_change_once(
    pipeline: Services,
    poll_queue: QueueClient,
    graph_simulator: GraphSimulator,
    eventgrid_sink: EventGridSink,
) -> None:
    tenant_with_agents(graph_simulator, pipeline, 80)
    eventgrid_sink.fail()  # until recovered

    run_cycle(pipeline, poll_queue)
    graph_simulator.set_change_rate(0.2)
    graph_simulator.advance()
    run_cycle(pipeline, poll_queue)  # more changes pile up in the outbox
    assert eventgrid_sink.events == []
    eventgrid_sink.recover()

    pipeline.outbox_sweep.run()
    pipeline.outbox_sweep.run()  # nothing left: publishes nothing more

    ids = Counter(e["id"] for e in eventgrid_sink.events)
    assert set(ids.values()) == {1}
    per_user = Counter(e["data"]["userId"] for e in eventgrid_sink.events)
    assert len(per_user) == 80
    assert sum(per_user.values()) > 80  # first sightings plus the changes
    pending = sum(
        len(pipeline.presence.read_shard(lease.tenant_id, lease.number).outbox)
        for tenant in pipeline.tenants.tenant_ids()
        for lease in pipeline.shard_leases.shards(tenant)
    )
    assert pending == 0


def test_retry_after_within_the_bound_is_waited_out_before_the_retry(
    pipeline: Services,
    poll_queue: QueueClient,
    graph_simulator: GraphSimulator,
    eventgrid_sink: EventGridSink,
) -> None:
    tenant, _users = tenant_with_agents(graph_simulator, pipeline, 10)
    graph_simulator.throttle_next(1, retry_after=2, tenant_id=tenant)

    run_cycle(pipeline, poll_queue)

    first, retry = graph_simulator.calls("presence", tenant)
    assert first.status == 429
    assert retry.status == 200
    assert retry.arrived_at - first.arrived_at >= 2.0
    assert len(eventgrid_sink.wait_for_events(10)) == 10


def test_a_429_cools_the_tenant_down_for_every_instance(
    pipeline: Services,
    poll_queue: QueueClient,
    graph_simulator: GraphSimulator,
) -> None:
    throttled, _ = tenant_with_agents(graph_simulator, pipeline, 10)
    other, _ = tenant_with_agents(graph_simulator, pipeline, 10)
    # An instance whose client hands long waits back rather than blocking.
    impatient = ShardPoller(
        pipeline.shard_leases,
        pipeline.presence,
        pipeline.subscriptions,
        pipeline.tenants,
        GraphPresenceClient(
            pipeline.settings.graph, policy=RetryPolicy(max_retry_after_seconds=0.5)
        ),
        pipeline.outbox,
    )
    graph_simulator.throttle_next(1, retry_after=2, tenant_id=throttled)
    pipeline.fan_out.run()
    for message, raw in receive(poll_queue):
        impatient.poll(PollRequest.from_message(message.get_body().decode()))
        poll_queue.delete_message(raw)
    cool_down = pipeline.tenants.cool_down_until(throttled)
    assert cool_down is not None
    graph_simulator.reset_counters()

    # Another instance (fresh services, fresh client) within the 2 seconds.
    second_instance = Services(pipeline.settings)
    second_instance.fan_out.run()
    for message, raw in receive(poll_queue):
        second_instance.poller.poll(
            PollRequest.from_message(message.get_body().decode())
        )
        poll_queue.delete_message(raw)
    assert datetime.now(UTC) < cool_down, "the check ran too late to mean anything"

    assert graph_simulator.count("presence", throttled) == 0
    assert graph_simulator.count("presence", other) == 1

    # Once the cool-down has passed, the tenant is polled again.
    time.sleep(max(0.0, (cool_down - datetime.now(UTC)).total_seconds()) + 0.05)
    run_cycle(second_instance, poll_queue)
    assert graph_simulator.count("presence", throttled) == 1


def test_members_missing_from_the_answer_keep_their_presence(
    pipeline: Services,
    poll_queue: QueueClient,
    graph_simulator: GraphSimulator,
    eventgrid_sink: EventGridSink,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tenant, users = tenant_with_agents(graph_simulator, pipeline, 40)
    run_cycle(pipeline, poll_queue)
    eventgrid_sink.wait_for_events(40)
    before = pipeline.presence.read_shard(tenant, 0).presence
    graph_simulator.omit_ids(users[:5])
    graph_simulator.set_change_rate(1.0)
    graph_simulator.advance()

    run_cycle(pipeline, poll_queue)

    after = pipeline.presence.read_shard(tenant, 0).presence
    for user in users[:5]:
        assert after[user] == before[user]
    assert sum(after[user] != before[user] for user in users[5:]) > 0
    assert "5 members missing" in caplog.text
    published_users = {e["data"]["userId"] for e in eventgrid_sink.events[40:]}
    assert published_users.isdisjoint(users[:5])


def test_the_latest_presence_can_be_read_over_http(
    pipeline: Services,
    poll_queue: QueueClient,
    graph_simulator: GraphSimulator,
    eventgrid_sink: EventGridSink,
) -> None:
    tenant, users = tenant_with_agents(graph_simulator, pipeline, 3)

    def get_presence(user: str):
        return http(
            "presence_item",
            "GET",
            f"/api/tenants/{tenant}/presence/{user}",
            {"tenantId": tenant, "userId": user},
        )

    assert get_presence(users[0]).status_code == 404  # not polled yet
    run_cycle(pipeline, poll_queue)

    response = get_presence(users[0])

    assert response.status_code == 200
    expected = graph_simulator.presence_of(tenant, [users[0]])[users[0]]
    body = response_json(response)
    assert (body["availability"], body["activity"]) == (
        expected.availability,
        expected.activity,
    )
    assert get_presence(str(uuid.uuid4())).status_code == 404


def test_a_user_graph_refuses_is_set_aside_and_the_rest_polled(
    pipeline: Services,
    poll_queue: QueueClient,
    graph_simulator: GraphSimulator,
    eventgrid_sink: EventGridSink,
) -> None:
    tenant, users = tenant_with_agents(graph_simulator, pipeline, 40)
    gone = users[17]
    graph_simulator.remove_users(tenant, [gone])
    graph_simulator.set_missing_users("reject")

    run_cycle(pipeline, poll_queue)

    published = {e["data"]["userId"] for e in eventgrid_sink.wait_for_events(39)}
    assert published == set(users) - {gone}
    stored = pipeline.subscriptions._client.get_entity(tenant, f"sub|{gone}")
    assert "404" in stored["pollProblem"]
    # Told to the API's clients: on the subscription, and why no presence.
    route = {"tenantId": tenant, "userId": gone}
    subscription = http(
        "subscription_item", "GET", f"/api/tenants/{tenant}/subscriptions/{gone}", route
    )
    assert "404" in response_json(subscription)["pollProblem"]["detail"]
    presence = http(
        "presence_item", "GET", f"/api/tenants/{tenant}/presence/{gone}", route
    )
    assert presence.status_code == 404
    assert "cannot be read from Graph" in response_json(presence)["detail"]
    # Set aside: the next cycle makes one call for the shard, not a search.
    graph_simulator.reset_counters()
    run_cycle(pipeline, poll_queue)
    assert graph_simulator.count("presence", tenant) == 1


def test_a_set_aside_user_graph_answers_for_again_loses_its_note(
    pipeline: Services,
    poll_queue: QueueClient,
    graph_simulator: GraphSimulator,
    eventgrid_sink: EventGridSink,
) -> None:
    tenant, users = tenant_with_agents(graph_simulator, pipeline, 5)
    gone = users[2]
    graph_simulator.remove_users(tenant, [gone])
    graph_simulator.set_missing_users("reject")
    run_cycle(pipeline, poll_queue)
    assert "pollProblem" in pipeline.subscriptions._client.get_entity(
        tenant, f"sub|{gone}"
    )
    # The account comes back (restored from the recycle bin), and a day later
    # the poller asks about the user again.
    graph_simulator.add_users(tenant, user_ids=[gone])
    a_day_later = datetime.now(UTC) + NOT_FOUND_RECHECK + timedelta(hours=1)
    poller = ShardPoller(
        pipeline.shard_leases,
        pipeline.presence,
        pipeline.subscriptions,
        pipeline.tenants,
        pipeline.graph,
        pipeline.outbox,
        clock=lambda: a_day_later,
    )
    pipeline.fan_out.run()
    for message, _ in receive(poll_queue):
        poller.poll(PollRequest.from_message(message.get_body().decode()))

    row = pipeline.subscriptions._client.get_entity(tenant, f"sub|{gone}")
    assert "pollProblem" not in row and "pollProblemAt" not in row
    shard = pipeline.presence.read_shard(tenant, 0)
    assert gone not in shard.not_found
    assert gone in shard.presence


def deregister(services: Services, tenant: str, user: str) -> None:
    services.applier.apply(
        SubscriptionCommand(
            str(uuid.uuid4()),
            tenant,
            VersionClock().mint()[0],
            (Change(user, Action.DEREGISTER),),
        )
    )


class _DeregisteredAfterRead(SubscriptionTable):
    """The real table, except that right after reading a row for a poll note
    the agent is deregistered by another instance."""

    def __init__(self, services: Services) -> None:
        super().__init__(services.subscriptions._client)
        self._services = services

    def _read_row(self, tenant_id: str, user_id: str) -> TableEntity | None:
        row = super()._read_row(tenant_id, user_id)
        deregister(self._services, tenant_id, user_id)
        return row


def test_a_poll_note_is_not_put_on_a_subscription_changed_meanwhile(
    pipeline: Services, graph_simulator: GraphSimulator
) -> None:
    tenant, users = tenant_with_agents(graph_simulator, pipeline, 3)
    subscriptions = pipeline.subscriptions
    deregister(pipeline, tenant, users[0])

    # A poll that read the shard before the deregister was applied.
    subscriptions.record_poll_problem(tenant, users[0], 0, "404 from Graph")
    # A note for the wrong shard is not written either.
    subscriptions.record_poll_problem(tenant, users[1], 7, "404 from Graph")
    # The deregister lands between the note's read and its write.
    _DeregisteredAfterRead(pipeline).record_poll_problem(
        tenant, users[2], 0, "404 from Graph"
    )

    for user in users:
        row = subscriptions._client.get_entity(tenant, f"sub|{user}")
        assert "pollProblem" not in row
    for user in (users[0], users[2]):
        stored = subscriptions.get(tenant, user)
        assert stored is not None and stored.state is SubscriptionState.REMOVED
    subscriptions.record_poll_problem(tenant, users[1], 0, "404 from Graph")
    stored = subscriptions.get(tenant, users[1])
    assert stored is not None and stored.poll_problem is not None
    assert stored.poll_problem.detail == "404 from Graph"


def test_a_poll_note_stays_while_the_agent_stays_set_aside(
    pipeline: Services, graph_simulator: GraphSimulator
) -> None:
    tenant, users = tenant_with_agents(graph_simulator, pipeline, 1)
    subscriptions = pipeline.subscriptions
    subscriptions.record_poll_problem(tenant, users[0], 0, "404 from Graph")

    # Registering again changes nothing for the poller: the note stays.
    register(pipeline, tenant, users)
    stored = subscriptions.get(tenant, users[0])
    assert stored is not None and stored.poll_problem is not None
    # A deregister ends the subscription, and the note with it.
    deregister(pipeline, tenant, users[0])
    stored = subscriptions.get(tenant, users[0])
    assert stored is not None and stored.poll_problem is None
