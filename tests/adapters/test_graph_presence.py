"""The Graph presence client against the simulator over real https."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from shared.adapters.graph_presence import (
    GraphPresenceClient,
    GraphRequestError,
    GraphThrottledError,
    GraphUnavailableError,
    RetryPolicy,
    missing_ids,
)
from shared.settings import GraphSettings
from simulators.graph import GraphSimulator

FAST = RetryPolicy(backoff_base_seconds=0.05, backoff_max_seconds=0.2)


@pytest.fixture
def client(graph_settings: GraphSettings) -> Iterator[GraphPresenceClient]:
    with GraphPresenceClient(graph_settings, policy=FAST) as presence_client:
        yield presence_client


def test_650_users_in_one_call(
    client: GraphPresenceClient, graph_simulator: GraphSimulator, graph_tenant: str
) -> None:
    ids = graph_simulator.user_ids(graph_tenant)
    expected = graph_simulator.presence_of(graph_tenant, ids)

    observed = client.get_presences(graph_tenant, ids)

    assert graph_simulator.count("presence", graph_tenant) == 1
    assert [item.user_id for item in observed] == ids
    for item in observed:
        assert item.presence.availability == expected[item.user_id].availability
        assert item.presence.sequence_number == expected[item.user_id].sequence_number


def test_more_than_650_ids_is_refused_before_calling(
    client: GraphPresenceClient, graph_simulator: GraphSimulator, graph_tenant: str
) -> None:
    with pytest.raises(ValueError, match="650"):
        client.get_presences(graph_tenant, graph_simulator.user_ids(graph_tenant) * 2)
    assert graph_simulator.count("presence") == 0


def test_token_is_reused_across_calls(
    client: GraphPresenceClient, graph_simulator: GraphSimulator, graph_tenant: str
) -> None:
    ids = graph_simulator.user_ids(graph_tenant)[:10]
    for _ in range(3):
        client.get_presences(graph_tenant, ids)

    assert graph_simulator.count("token", graph_tenant) == 1
    assert graph_simulator.count("presence", graph_tenant) == 3


def test_missing_users_are_derivable(
    client: GraphPresenceClient, graph_simulator: GraphSimulator, graph_tenant: str
) -> None:
    ids = graph_simulator.user_ids(graph_tenant)[:5]
    graph_simulator.remove_users(graph_tenant, [ids[0]])
    graph_simulator.omit_ids([ids[1]])

    observed = client.get_presences(graph_tenant, ids)

    assert missing_ids(ids, observed) == {ids[0], ids[1]}


def test_401_refreshes_the_token_once_and_succeeds(
    client: GraphPresenceClient, graph_simulator: GraphSimulator, graph_tenant: str
) -> None:
    ids = graph_simulator.user_ids(graph_tenant)[:3]
    client.get_presences(graph_tenant, ids)
    graph_simulator.invalidate_issued_tokens()

    observed = client.get_presences(graph_tenant, ids)

    assert len(observed) == 3
    assert graph_simulator.count("token", graph_tenant) == 2
    statuses = [call.status for call in graph_simulator.calls("presence", graph_tenant)]
    assert statuses == [200, 401, 200]


def test_429_waits_the_retry_after_before_retrying(
    client: GraphPresenceClient, graph_simulator: GraphSimulator, graph_tenant: str
) -> None:
    graph_simulator.throttle_next(1, retry_after=2, tenant_id=graph_tenant)

    client.get_presences(graph_tenant, graph_simulator.user_ids(graph_tenant)[:3])

    first, second = graph_simulator.calls("presence", graph_tenant)
    assert (first.status, second.status) == (429, 200)
    assert second.arrived_at - first.arrived_at >= 2.0


def test_retry_after_above_the_bound_is_handed_to_the_caller(
    client: GraphPresenceClient, graph_simulator: GraphSimulator, graph_tenant: str
) -> None:
    graph_simulator.throttle_next(1, retry_after=60, tenant_id=graph_tenant)
    ids = graph_simulator.user_ids(graph_tenant)[:3]

    with pytest.raises(GraphThrottledError) as raised:
        client.get_presences(graph_tenant, ids)
    assert raised.value.retry_after == 60
    assert raised.value.tenant_id == graph_tenant

    # The tenant's cool-down holds other calls from this process back too.
    with pytest.raises(GraphThrottledError):
        client.get_presences(graph_tenant, ids)
    assert graph_simulator.count("presence", graph_tenant) == 1


def test_503_twice_then_ok(
    client: GraphPresenceClient, graph_simulator: GraphSimulator, graph_tenant: str
) -> None:
    graph_simulator.fail_next(2, tenant_id=graph_tenant)

    observed = client.get_presences(
        graph_tenant, graph_simulator.user_ids(graph_tenant)[:3]
    )

    assert len(observed) == 3
    calls = graph_simulator.calls("presence", graph_tenant)
    assert [call.status for call in calls] == [503, 503, 200]
    # Back-off: at least half the first step between the first two calls.
    assert calls[1].arrived_at - calls[0].arrived_at >= FAST.backoff_base_seconds / 2


def test_503_forever_gives_up_after_bounded_retries(
    client: GraphPresenceClient, graph_simulator: GraphSimulator, graph_tenant: str
) -> None:
    graph_simulator.fail_next(100, tenant_id=graph_tenant)

    with pytest.raises(GraphUnavailableError) as raised:
        client.get_presences(graph_tenant, graph_simulator.user_ids(graph_tenant)[:3])

    assert raised.value.status == 503
    assert (
        graph_simulator.count("presence", graph_tenant)
        == FAST.max_unavailable_retries + 1
    )


def test_bad_request_is_a_request_error_without_token(
    client: GraphPresenceClient, graph_simulator: GraphSimulator, graph_tenant: str
) -> None:
    with pytest.raises(GraphRequestError) as raised:
        client.get_presences(graph_tenant, ["not-a-guid"])

    assert raised.value.status == 400
    assert raised.value.code == "BadRequest"
    assert "Bearer" not in str(raised.value) and "eyJ" not in str(raised.value)


def test_budget_holds_calls_per_tenant(
    graph_settings: GraphSettings, graph_simulator: GraphSimulator, graph_tenant: str
) -> None:
    policy = dataclasses.replace(
        FAST, budget_calls=2, budget_window_seconds=60, budget_max_wait_seconds=1
    )
    ids = graph_simulator.user_ids(graph_tenant)[:1]
    with GraphPresenceClient(graph_settings, policy=policy) as limited:
        limited.get_presences(graph_tenant, ids)
        limited.get_presences(graph_tenant, ids)
        with pytest.raises(GraphThrottledError):
            limited.get_presences(graph_tenant, ids)

    assert graph_simulator.count("presence", graph_tenant) == 2


def test_certificate_credential(
    graph_settings: GraphSettings,
    graph_simulator: GraphSimulator,
    graph_tenant: str,
    tmp_path: Path,
) -> None:
    # A self-contained key pair and certificate, as an app registration holds.
    issued = trustme.CA(key_type=trustme.KeyType.RSA).issue_cert(
        "presence-client.example", key_type=trustme.KeyType.RSA
    )
    pem_path = tmp_path / "client.pem"
    pem_path.write_bytes(
        issued.private_key_pem.bytes() + issued.cert_chain_pems[0].bytes()
    )
    graph_simulator.register_app(
        "cert-app", certificate_pem=issued.cert_chain_pems[0].bytes()
    )
    settings = dataclasses.replace(
        graph_settings,
        client_id="cert-app",
        client_secret=None,
        client_certificate_path=str(pem_path),
    )

    with GraphPresenceClient(settings, policy=FAST) as cert_client:
        observed = cert_client.get_presences(
            graph_tenant, graph_simulator.user_ids(graph_tenant)[:2]
        )

    assert len(observed) == 2
    assert graph_simulator.counters()["statuses"]["token"] == {"200": 1}
