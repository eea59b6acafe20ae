"""The Graph simulator, driven by the real clients (msal, requests) over https."""

from __future__ import annotations

import subprocess
import sys
import uuid
from typing import Any

import msal
import pytest
import requests

from simulators.graph import GraphSimulator

PRESENCE = "/communications/getPresencesByUserId"


def _session(simulator: GraphSimulator) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify
    session.verify = simulator.urls.ca_bundle
    return session


def _msal_app(
    simulator: GraphSimulator, tenant_id: str, secret: str | None = None
) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        simulator.client_id,
        client_credential=secret or simulator.client_secret,
        authority=f"{simulator.urls.authority_host}/{tenant_id}",
        http_client=_session(simulator),
        instance_discovery=False,
    )


def _token(simulator: GraphSimulator, tenant_id: str) -> str:
    result = _msal_app(simulator, tenant_id).acquire_token_for_client(
        [f"{simulator.urls.authority_host}/.default"]
    )
    return str(result["access_token"])


def _presence_call(
    simulator: GraphSimulator, body: Any, token: str | None
) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return _session(simulator).post(
        simulator.urls.base_url + PRESENCE, json=body, headers=headers, timeout=10
    )


def test_msal_discovers_the_authority_and_gets_a_token(
    graph_simulator: GraphSimulator, graph_tenant: str
) -> None:
    import jwt

    app = _msal_app(graph_simulator, graph_tenant)
    result = app.acquire_token_for_client(
        [f"{graph_simulator.urls.authority_host}/.default"]
    )

    assert result["token_type"] == "Bearer"
    claims = jwt.decode(result["access_token"], options={"verify_signature": False})
    assert claims["tid"] == graph_tenant
    assert claims["appid"] == graph_simulator.client_id
    assert claims["roles"] == ["Presence.Read.All"]
    assert claims["exp"] > claims["iat"]
    assert graph_simulator.count("discovery", graph_tenant) == 1
    assert graph_simulator.count("token", graph_tenant) == 1


def test_wrong_secret_is_refused_with_an_aadsts_error(
    graph_simulator: GraphSimulator, graph_tenant: str
) -> None:
    app = _msal_app(graph_simulator, graph_tenant, secret="not-the-secret")
    result = app.acquire_token_for_client(
        [f"{graph_simulator.urls.authority_host}/.default"]
    )

    assert "access_token" not in result
    assert result["error"] == "invalid_client"
    assert result["error_description"].startswith("AADSTS7000215")
    assert graph_simulator.counters()["statuses"]["token"] == {"401": 1}


def test_unknown_tenant_fails_discovery(graph_simulator: GraphSimulator) -> None:
    with pytest.raises(ValueError, match="Unable to get authority configuration"):
        _msal_app(graph_simulator, str(uuid.uuid4()))

    assert graph_simulator.counters()["statuses"]["discovery"] == {"400": 1}


def test_presence_without_or_with_a_bad_token_is_401(
    graph_simulator: GraphSimulator, graph_tenant: str
) -> None:
    ids = graph_simulator.user_ids(graph_tenant)[:2]
    missing = _presence_call(graph_simulator, {"ids": ids}, None)
    forged = _presence_call(graph_simulator, {"ids": ids}, "eyJhbGciOiJub25lIn0.e30.")

    for response in (missing, forged):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "InvalidAuthenticationToken"


def test_app_without_the_presence_role_is_403(
    graph_simulator: GraphSimulator, graph_tenant: str
) -> None:
    graph_simulator.register_app(
        "no-role-app", client_secret="s3", roles=["User.Read.All"]
    )
    app = msal.ConfidentialClientApplication(
        "no-role-app",
        client_credential="s3",
        authority=f"{graph_simulator.urls.authority_host}/{graph_tenant}",
        http_client=_session(graph_simulator),
        instance_discovery=False,
    )
    token = app.acquire_token_for_client(
        [f"{graph_simulator.urls.authority_host}/.default"]
    )

    response = _presence_call(
        graph_simulator,
        {"ids": graph_simulator.user_ids(graph_tenant)[:1]},
        token["access_token"],
    )

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "Forbidden"


def test_answers_presence_for_known_users(
    graph_simulator: GraphSimulator, graph_tenant: str
) -> None:
    ids = graph_simulator.user_ids(graph_tenant)

    response = _presence_call(
        graph_simulator, {"ids": ids}, _token(graph_simulator, graph_tenant)
    )

    assert response.status_code == 200
    value = response.json()["value"]
    assert [item["id"] for item in value] == ids
    assert {"availability", "activity", "sequenceNumber", "outOfOfficeSettings"} <= set(
        value[0]
    )
    assert graph_simulator.counters()["ids_requested"][graph_tenant] == 650


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"ids": [str(uuid.uuid4()) for _ in range(651)]}, "651"),
        ({"ids": ["not-a-guid"]}, "not-a-guid"),
        ({"ids": []}, "non-empty"),
        ({"userIds": [str(uuid.uuid4())]}, "ids"),
    ],
)
def test_malformed_requests_are_400(
    graph_simulator: GraphSimulator, graph_tenant: str, body: Any, fragment: str
) -> None:
    response = _presence_call(
        graph_simulator, body, _token(graph_simulator, graph_tenant)
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "BadRequest"
    assert fragment in error["message"]


def test_changes_happen_at_the_set_rate(
    graph_simulator: GraphSimulator, graph_tenant: str
) -> None:
    ids = graph_simulator.user_ids(graph_tenant)
    before = graph_simulator.presence_of(graph_tenant, ids)
    graph_simulator.set_change_rate(0.1)

    graph_simulator.advance(1)

    after = graph_simulator.presence_of(graph_tenant, ids)
    changed = [uid for uid in ids if after[uid] != before[uid]]
    assert len(changed) == 65  # 10 % of 650
    for uid in changed:
        assert (after[uid].availability, after[uid].activity) != (
            before[uid].availability,
            before[uid].activity,
        )
        assert after[uid].sequence_number > before[uid].sequence_number


def test_populations_are_reproducible_with_a_seed(tmp_path: Any) -> None:
    def run(folder: str) -> list[tuple[str, str, str]]:
        simulator = GraphSimulator(tmp_path / folder, seed=42)
        tenant = simulator.add_tenant(user_count=200)
        simulator.set_change_rate(0.25)
        simulator.advance(3)
        current = simulator.presence_of(tenant, simulator.user_ids(tenant))
        return [(uid, p.availability, p.activity) for uid, p in current.items()]

    assert run("a") == run("b")


def test_wall_time_ticks(graph_simulator: GraphSimulator, graph_tenant: str) -> None:
    ids = graph_simulator.user_ids(graph_tenant)
    before = graph_simulator.presence_of(graph_tenant, ids)
    graph_simulator.set_change_rate(0.5, tick_seconds=0.05)

    changed = 0
    # Waits for the condition, bounded, instead of sleeping a guessed time.
    deadline = __import__("time").monotonic() + 5
    while changed == 0 and __import__("time").monotonic() < deadline:
        now = graph_simulator.presence_of(graph_tenant, ids)
        changed = sum(now[uid] != before[uid] for uid in ids)

    assert changed >= 325


def test_throttle_fault_for_one_tenant(graph_simulator: GraphSimulator) -> None:
    throttled = graph_simulator.add_tenant(user_count=1)
    other = graph_simulator.add_tenant(user_count=1)
    graph_simulator.throttle_next(1, retry_after=7, tenant_id=throttled)

    other_reply = _presence_call(
        graph_simulator,
        {"ids": graph_simulator.user_ids(other)},
        _token(graph_simulator, other),
    )
    token = _token(graph_simulator, throttled)
    first = _presence_call(
        graph_simulator, {"ids": graph_simulator.user_ids(throttled)}, token
    )
    second = _presence_call(
        graph_simulator, {"ids": graph_simulator.user_ids(throttled)}, token
    )

    assert other_reply.status_code == 200
    assert first.status_code == 429
    assert first.headers["Retry-After"] == "7"
    assert first.json()["error"]["code"] == "TooManyRequests"
    assert second.status_code == 200
    assert graph_simulator.count("presence", throttled) == 2


def test_unavailable_omitted_and_deleted_users(
    graph_simulator: GraphSimulator, graph_tenant: str
) -> None:
    ids = graph_simulator.user_ids(graph_tenant)[:4]
    token = _token(graph_simulator, graph_tenant)
    graph_simulator.fail_next(1)
    graph_simulator.omit_ids([ids[0]])
    graph_simulator.remove_users(graph_tenant, [ids[1]])

    failed = _presence_call(graph_simulator, {"ids": ids}, token)
    answered = _presence_call(graph_simulator, {"ids": ids}, token)

    assert failed.status_code == 503
    assert failed.json()["error"]["code"] == "ServiceNotAvailable"
    assert [item["id"] for item in answered.json()["value"]] == ids[2:]


def test_invalidated_tokens_get_401_and_new_ones_work(
    graph_simulator: GraphSimulator, graph_tenant: str
) -> None:
    ids = graph_simulator.user_ids(graph_tenant)[:1]
    old = _token(graph_simulator, graph_tenant)
    graph_simulator.invalidate_issued_tokens()

    assert _presence_call(graph_simulator, {"ids": ids}, old).status_code == 401
    new = _token(graph_simulator, graph_tenant)
    assert _presence_call(graph_simulator, {"ids": ids}, new).status_code == 200


def test_rate_limit_of_graph_is_enforced(tmp_path: Any) -> None:
    with GraphSimulator(tmp_path, rate_limit=3) as simulator:
        tenant = simulator.add_tenant(user_count=1)
        token = _token(simulator, tenant)
        statuses = [
            _presence_call(
                simulator, {"ids": simulator.user_ids(tenant)}, token
            ).status_code
            for _ in range(4)
        ]
        assert statuses == [200, 200, 200, 429]


def test_control_api_over_https(graph_simulator: GraphSimulator) -> None:
    session = _session(graph_simulator)
    control = graph_simulator.urls.control_url

    created = session.post(
        f"{control}/tenants", json={"user_count": 3}, timeout=10
    ).json()
    tenant = created["tenant_id"]
    assert session.post(f"{control}/change-rate", json={"fraction": 1.0}, timeout=10).ok
    tick = session.post(f"{control}/tick", json={"count": 1}, timeout=10).json()
    assert session.post(
        f"{control}/faults/throttle", json={"count": 1, "retry_after": 3}, timeout=10
    ).ok
    throttled = _presence_call(
        graph_simulator, {"ids": created["user_ids"]}, _token(graph_simulator, tenant)
    )
    counters = session.get(f"{control}/counters", timeout=10).json()
    reset = session.post(f"{control}/counters/reset", json={}, timeout=10)

    assert tick["changed"] >= 3
    assert throttled.status_code == 429
    assert counters["calls"]["presence"][tenant] == 1
    assert reset.ok and graph_simulator.count("presence") == 0
    bad = session.post(
        f"{control}/faults/unavailable", json={"count": 1, "status": 404}, timeout=10
    )
    assert bad.status_code == 400


def test_runs_as_a_process_and_prints_its_urls(tmp_path: Any) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulators.graph",
            "--port",
            "0",
            "--ca-dir",
            str(tmp_path),
            "--tenant",
            "7d6f3c2a-1b4e-4c9a-8f00-0a1b2c3d4e5f",
            "--users",
            "2",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        fields = dict(part.split("=", 1) for part in line.split()[1:])
        session = requests.Session()
        session.trust_env = False
        session.verify = fields["ca_bundle"]
        health = session.get(fields["control_url"] + "/health", timeout=10).json()
        assert health["tenants"] == ["7d6f3c2a-1b4e-4c9a-8f00-0a1b2c3d4e5f"]
        assert fields["base_url"].startswith("https://127.0.0.1:")
    finally:
        process.terminate()
        process.wait(timeout=10)
