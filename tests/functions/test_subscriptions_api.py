"""The HTTP API, called through the indexed functions against real Azurite."""

from __future__ import annotations

import uuid

import pytest
from azure.storage.queue import QueueClient

from shared.services import Services
from tests.support.functions_host import http, response_json, run_queue_function

TENANT = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"


def new_id() -> str:
    return str(uuid.uuid4())


def item_path(user_id: str, tenant_id: str = TENANT) -> str:
    return f"/api/tenants/{tenant_id}/subscriptions/{user_id}"


def put(user_id: str, headers: dict[str, str] | None = None, tenant_id: str = TENANT):
    return http(
        "subscription_item",
        "PUT",
        item_path(user_id, tenant_id),
        {"tenantId": tenant_id, "userId": user_id},
        headers=headers,
    )


def delete(user_id: str, headers: dict[str, str] | None = None):
    return http(
        "subscription_item",
        "DELETE",
        item_path(user_id),
        {"tenantId": TENANT, "userId": user_id},
        headers=headers,
    )


def get(user_id: str):
    return http(
        "subscription_item",
        "GET",
        item_path(user_id),
        {"tenantId": TENANT, "userId": user_id},
    )


def batch(body, headers: dict[str, str] | None = None):
    return http(
        "subscription_batch",
        "POST",
        f"/api/tenants/{TENANT}/subscriptions/batch",
        {"tenantId": TENANT},
        body=body,
        headers=headers,
    )


def list_page(params: dict[str, str]):
    return http(
        "subscription_list",
        "GET",
        f"/api/tenants/{TENANT}/subscriptions",
        {"tenantId": TENANT},
        params=params,
    )


def apply_all(command_queue: QueueClient) -> int:
    return run_queue_function("apply_subscription_command", command_queue)


def queued(command_queue: QueueClient) -> int:
    return int(command_queue.get_queue_properties().approximate_message_count or 0)


def test_register_is_accepted_then_applied(command_queue: QueueClient) -> None:
    user = new_id()

    response = put(user)

    assert response.status_code == 202
    body = response_json(response)
    assert body["tenantId"] == TENANT
    assert body["userId"] == user
    assert body["action"] == "register"
    uuid.UUID(body["commandId"])
    assert response.headers["Location"] == item_path(user)
    assert queued(command_queue) == 1

    assert apply_all(command_queue) == 1

    stored = get(user)
    assert stored.status_code == 200
    assert response_json(stored) == {
        "tenantId": TENANT,
        "userId": user,
        "state": "active",
        "version": body["version"],
        "updatedAt": response_json(stored)["updatedAt"],
    }
    assert stored.headers["ETag"] == f'"{body["version"]}"'


def test_deregister_leaves_a_removed_subscription(command_queue: QueueClient) -> None:
    user = new_id()
    put(user)
    response = delete(user)
    assert response.status_code == 202
    assert response_json(response)["action"] == "deregister"

    apply_all(command_queue)

    body = response_json(get(user))
    assert body["state"] == "removed"
    assert body["version"] == response_json(response)["version"]


def test_unknown_subscription_is_404_problem(services: Services) -> None:
    response = get(new_id())

    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert response_json(response)["status"] == 404


def test_ids_are_stored_in_canonical_lower_case(command_queue: QueueClient) -> None:
    user = new_id()
    response = put(user.upper())
    assert response.status_code == 202
    apply_all(command_queue)

    assert response_json(get(user))["userId"] == user


def test_batch_registers_and_deregisters(command_queue: QueueClient) -> None:
    keep, drop = [new_id() for _ in range(30)], [new_id() for _ in range(5)]
    batch({"register": keep + drop})
    apply_all(command_queue)

    response = batch({"register": [], "deregister": drop})

    assert response.status_code == 202
    body = response_json(response)
    assert (body["register"], body["deregister"], body["action"]) == (0, 5, "batch")
    assert response.headers["Location"] == f"/api/tenants/{TENANT}/subscriptions"
    apply_all(command_queue)
    assert {response_json(get(u))["state"] for u in keep} == {"active"}
    assert {response_json(get(u))["state"] for u in drop} == {"removed"}


def test_list_pages_through_active_subscriptions(command_queue: QueueClient) -> None:
    users = [new_id() for _ in range(25)]
    batch({"register": users})
    batch({"deregister": users[:5]})
    apply_all(command_queue)

    seen: list[str] = []
    token = None
    pages = 0
    while True:
        params = {"state": "active", "limit": "7"}
        if token:
            params["continuationToken"] = token
        response = list_page(params)
        assert response.status_code == 200
        body = response_json(response)
        assert len(body["items"]) <= 7
        seen += [item["userId"] for item in body["items"]]
        assert {item["state"] for item in body["items"]} <= {"active"}
        pages += 1
        token = body["continuationToken"]
        if not token:
            break

    assert sorted(seen) == sorted(users[5:])
    assert pages >= 3


def test_idempotency_key_replays_the_same_response(command_queue: QueueClient) -> None:
    user = new_id()
    headers = {"Idempotency-Key": "retry-after-timeout-1"}

    first = put(user, headers)
    second = put(user, headers)

    assert first.status_code == second.status_code == 202
    assert response_json(first) == response_json(second)
    assert second.headers["Idempotent-Replayed"] == "true"
    assert queued(command_queue) == 1


def test_idempotency_key_with_another_request_is_422(
    command_queue: QueueClient,
) -> None:
    headers = {"Idempotency-Key": "reused"}
    put(new_id(), headers)

    response = put(new_id(), headers)

    assert response.status_code == 422
    assert response_json(response)["field"] == "Idempotency-Key"
    assert queued(command_queue) == 1


def test_idempotency_key_is_scoped_to_the_tenant(command_queue: QueueClient) -> None:
    user = new_id()
    headers = {"Idempotency-Key": "same-key"}

    first = put(user, headers)
    other = put(user, headers, tenant_id=new_id())

    assert other.status_code == 202
    assert response_json(other)["commandId"] != response_json(first)["commandId"]


def test_if_match_with_the_stored_version_is_accepted(
    command_queue: QueueClient,
) -> None:
    user = new_id()
    version = response_json(put(user))["version"]
    apply_all(command_queue)

    response = delete(user, {"If-Match": f'"{version}"'})

    assert response.status_code == 202
    apply_all(command_queue)
    assert response_json(get(user))["state"] == "removed"


def test_if_match_with_a_stale_version_is_412_and_enqueues_nothing(
    command_queue: QueueClient,
) -> None:
    user = new_id()
    stale = response_json(put(user))["version"]
    put(user)
    apply_all(command_queue)

    response = delete(user, {"If-Match": f'"{stale}"'})

    assert response.status_code == 412
    assert response_json(response)["field"] == "If-Match"
    assert queued(command_queue) == 0
    assert response_json(get(user))["state"] == "active"


def test_if_match_is_checked_again_when_the_command_is_applied(
    command_queue: QueueClient,
) -> None:
    """Between the API's If-Match check and the apply step another change can
    land; the apply step checks the expected version again and skips."""
    user = new_id()
    version = response_json(put(user))["version"]
    apply_all(command_queue)
    unconditional = put(user)  # accepted, not applied yet

    conditional = delete(user, {"If-Match": f'"{version}"'})
    assert conditional.status_code == 202
    apply_all(command_queue)

    stored = response_json(get(user))
    assert stored["state"] == "active"
    assert stored["version"] == response_json(unconditional)["version"]


BAD_BATCHES = [
    (b"{not json", "body", 400),
    (b'["a list"]', "body", 400),
    ({"register": "not-a-list"}, "register", 400),
    ({"register": ["not-a-guid"]}, "register[0]", 400),
    ({"register": [1]}, "register[0]", 400),
    ({"register": [], "deregister": []}, "register", 400),
    ({"register": [str(uuid.UUID(int=1))], "extra": True}, "extra", 400),
    ({"register": [str(uuid.UUID(int=i)) for i in range(1001)]}, "register", 400),
    (
        {"register": [str(uuid.UUID(int=7))], "deregister": [str(uuid.UUID(int=7))]},
        "deregister",
        400,
    ),
    ({"register": [str(uuid.UUID(int=7)), str(uuid.UUID(int=7))]}, "register[1]", 400),
    (b"x" * (256 * 1024 + 1), "body", 413),
]


@pytest.mark.parametrize(("body", "field", "status"), BAD_BATCHES)
def test_bad_batch_is_rejected_and_nothing_enqueued(
    command_queue: QueueClient, body, field: str, status: int
) -> None:
    headers = {"Content-Type": "application/json"}

    response = batch(body, headers)

    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    problem = response_json(response)
    assert problem["status"] == status
    assert problem["field"] == field
    assert field.split("[")[0] in problem["detail"] or status == 413
    assert {"type", "title", "detail"} <= set(problem)
    assert queued(command_queue) == 0


def test_batch_with_another_content_type_is_415(command_queue: QueueClient) -> None:
    response = batch(b"register=x", {"Content-Type": "text/plain"})

    assert response.status_code == 415
    assert queued(command_queue) == 0


@pytest.mark.parametrize(
    ("function_name", "method", "route_params", "field", "status"),
    [
        (
            "subscription_item",
            "PUT",
            {"tenantId": "nope", "userId": TENANT},
            "tenantId",
            400,
        ),
        (
            "subscription_item",
            "PUT",
            {"tenantId": TENANT, "userId": "x" * 36},
            "userId",
            400,
        ),
        (
            "subscription_item",
            "DELETE",
            {"tenantId": TENANT, "userId": "1"},
            "userId",
            400,
        ),
        (
            "subscription_item",
            "PATCH",
            {"tenantId": TENANT, "userId": TENANT},
            "method",
            405,
        ),
        (
            "subscription_item",
            "POST",
            {"tenantId": TENANT, "userId": TENANT},
            "method",
            405,
        ),
        ("subscription_batch", "GET", {"tenantId": TENANT}, "method", 405),
        ("subscription_batch", "PUT", {"tenantId": TENANT}, "method", 405),
        ("subscription_list", "POST", {"tenantId": TENANT}, "method", 405),
        ("subscription_list", "GET", {"tenantId": "not-a-tenant"}, "tenantId", 400),
    ],
)
def test_bad_call_is_rejected_and_nothing_enqueued(
    command_queue: QueueClient,
    function_name: str,
    method: str,
    route_params: dict[str, str],
    field: str,
    status: int,
) -> None:
    response = http(function_name, method, "/api/x", route_params)

    assert response.status_code == status
    assert response_json(response)["field"] == field
    if status == 405:
        assert response.headers["Allow"]
    assert queued(command_queue) == 0


@pytest.mark.parametrize(
    ("headers", "body", "field"),
    [
        ({"If-Match": "not-quoted"}, None, "If-Match"),
        ({"If-Match": '"20260101T000000.000000Z-zz"'}, None, "If-Match"),
        ({"If-Match": 'W/"x"'}, None, "If-Match"),
        ({"Idempotency-Key": "k" * 256}, None, "Idempotency-Key"),
        ({}, b'{"unexpected": "body"}', "body"),
    ],
)
def test_bad_single_call_headers_are_rejected(
    command_queue: QueueClient, headers: dict[str, str], body: bytes | None, field: str
) -> None:
    user = new_id()

    response = http(
        "subscription_item",
        "PUT",
        item_path(user),
        {"tenantId": TENANT, "userId": user},
        body=body,
        headers=headers,
    )

    assert response.status_code == 400
    assert response_json(response)["field"] == field
    assert queued(command_queue) == 0


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"state": "gone"}, "state"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"continuationToken": "%%%"}, "continuationToken"),
        ({"sort": "name"}, "sort"),
    ],
)
def test_bad_list_query_is_400(
    services: Services, params: dict[str, str], field: str
) -> None:
    response = list_page(params)

    assert response.status_code == 400
    assert response_json(response)["field"] == field


def test_a_full_batch_with_an_idempotency_key_is_accepted_and_replayed(
    command_queue: QueueClient,
) -> None:
    users = [new_id() for _ in range(1000)]
    headers = {"Idempotency-Key": "onboarding-1000"}

    first = batch({"register": users}, headers)
    again = batch({"register": users}, headers)

    assert first.status_code == again.status_code == 202
    assert response_json(again) == response_json(first)
    assert queued(command_queue) == 1
