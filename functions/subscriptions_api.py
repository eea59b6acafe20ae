"""HTTP API for registering and deregistering agents, and reading their
subscriptions (route prefix ``/api`` from host.json)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import azure.functions as func

from functions.http_responses import api_errors, json_response
from shared.api import problems, requests
from shared.application.accept_commands import (
    CommandRequest,
    IdempotencyKeyReusedError,
    PreconditionFailedError,
)
from shared.domain.commands import Action, Change, SubscriptionCommand
from shared.domain.subscriptions import Subscription
from shared.services import get_services

logger = logging.getLogger(__name__)

bp = func.Blueprint()

# Every method is routed here so that an unsupported one gets a problem+json
# 405 from us rather than a bare 404 from the host.
_ALL_METHODS = ["GET", "PUT", "POST", "DELETE", "PATCH"]


@bp.function_name("subscription_item")
@bp.route(
    route="tenants/{tenantId}/subscriptions/{userId}",
    methods=_ALL_METHODS,
    auth_level=func.AuthLevel.FUNCTION,
)
@api_errors
def subscription_item(req: func.HttpRequest) -> func.HttpResponse:
    if req.method not in ("GET", "PUT", "DELETE"):
        raise problems.method_not_allowed(req.method, ["GET", "PUT", "DELETE"])
    tenant_id = requests.guid(req.route_params.get("tenantId", ""), "tenantId")
    user_id = requests.guid(req.route_params.get("userId", ""), "userId")
    requests.reject_query_params(req.params, set())
    if req.method == "GET":
        return _get_subscription(tenant_id, user_id)
    requests.no_body(req.get_body())
    action = Action.REGISTER if req.method == "PUT" else Action.DEREGISTER
    return _accept(
        req,
        tenant_id,
        (Change(user_id, action),),
        b"",  # no body: the method and path are the whole request
        if_match=requests.if_match(req.headers.get("If-Match")),
        location=_item_location(tenant_id, user_id),
        describe=lambda command: {
            "commandId": command.command_id,
            "tenantId": tenant_id,
            "userId": user_id,
            "action": action.value,
            "version": command.version,
        },
    )


@bp.function_name("subscription_batch")
@bp.route(
    route="tenants/{tenantId}/subscriptions/batch",
    methods=_ALL_METHODS,
    auth_level=func.AuthLevel.FUNCTION,
)
@api_errors
def subscription_batch(req: func.HttpRequest) -> func.HttpResponse:
    if req.method != "POST":
        raise problems.method_not_allowed(req.method, ["POST"])
    tenant_id = requests.guid(req.route_params.get("tenantId", ""), "tenantId")
    requests.reject_query_params(req.params, set())
    if (req.headers.get("If-Match") or "").strip():
        raise problems.invalid_field(
            "If-Match", "If-Match is supported on single PUT and DELETE only"
        )
    payload = requests.json_body(req.get_body(), req.headers.get("Content-Type"))
    changes = requests.batch_changes(payload)
    # The same batch re-serialised (spacing, key order) is the same request.
    body = requests.canonical_json(payload)

    def describe(command: SubscriptionCommand) -> dict[str, Any]:
        return {
            "commandId": command.command_id,
            "tenantId": tenant_id,
            "action": "batch",
            "version": command.version,
            "register": sum(c.action is Action.REGISTER for c in changes),
            "deregister": sum(c.action is Action.DEREGISTER for c in changes),
        }

    return _accept(
        req,
        tenant_id,
        changes,
        body,
        if_match=None,
        location=_list_location(tenant_id),
        describe=describe,
    )


@bp.function_name("subscription_list")
@bp.route(
    route="tenants/{tenantId}/subscriptions",
    methods=_ALL_METHODS,
    auth_level=func.AuthLevel.FUNCTION,
)
@api_errors
def subscription_list(req: func.HttpRequest) -> func.HttpResponse:
    if req.method != "GET":
        raise problems.method_not_allowed(req.method, ["GET"])
    tenant_id = requests.guid(req.route_params.get("tenantId", ""), "tenantId")
    query = requests.list_query(req.params)
    page = get_services().subscriptions.list_page(
        tenant_id, query.state, query.limit, query.continuation
    )
    return json_response(
        {
            "items": [_subscription_body(s) for s in page.items],
            "continuationToken": requests.encode_continuation(page.continuation),
        }
    )


def _get_subscription(tenant_id: str, user_id: str) -> func.HttpResponse:
    subscription = get_services().subscriptions.get(tenant_id, user_id)
    if subscription is None:
        raise problems.not_found(
            f"user {user_id} was never registered for tenant {tenant_id}"
        )
    return json_response(
        _subscription_body(subscription),
        headers={"ETag": f'"{subscription.version}"'},
    )


def _accept(
    req: func.HttpRequest,
    tenant_id: str,
    changes: tuple[Change, ...],
    canonical_body: bytes,
    if_match: str | None,
    location: str,
    describe: Any,
) -> func.HttpResponse:
    key = requests.idempotency_key(req.headers.get("Idempotency-Key"))
    command_request = CommandRequest(
        tenant_id=tenant_id,
        changes=changes,
        fingerprint=requests.fingerprint(
            req.method, location, canonical_body, if_match
        ),
        if_match=if_match,
        idempotency_key=key,
        request_id=requests.request_id(req.headers.get("x-request-id")),
    )
    try:
        acceptance = get_services().acceptor.accept(command_request, describe)
    except PreconditionFailedError as error:
        raise problems.precondition_failed(str(error)) from None
    except IdempotencyKeyReusedError as error:
        raise problems.idempotency_key_reused(str(error)) from None
    headers = {"Location": location}
    if acceptance.replayed:
        headers["Idempotent-Replayed"] = "true"
    return json_response(acceptance.body, status=202, headers=headers)


def _subscription_body(subscription: Subscription) -> dict[str, Any]:
    body: dict[str, Any] = {
        "tenantId": subscription.tenant_id,
        "userId": subscription.user_id,
        "state": subscription.state.value,
        "version": subscription.version,
        "updatedAt": _utc(subscription.updated_at),
    }
    if subscription.poll_problem is not None:
        body["pollProblem"] = {
            "detail": subscription.poll_problem.detail,
            "notedAt": _utc(subscription.poll_problem.noted_at),
        }
    return body


def _utc(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _item_location(tenant_id: str, user_id: str) -> str:
    return f"/api/tenants/{tenant_id}/subscriptions/{user_id}"


def _list_location(tenant_id: str) -> str:
    return f"/api/tenants/{tenant_id}/subscriptions"
