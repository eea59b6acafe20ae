"""HTTP API for reading the latest presence the service observed."""

from __future__ import annotations

import logging
from datetime import timedelta

import azure.functions as func

from functions.http_responses import api_errors, json_response
from shared.api import problems, requests
from shared.application.poll_shard import NOT_FOUND_RECHECK
from shared.domain.subscriptions import SubscriptionState
from shared.services import get_services

logger = logging.getLogger(__name__)

bp = func.Blueprint()


@bp.function_name("presence_item")
@bp.route(
    route="tenants/{tenantId}/presence/{userId}",
    methods=["GET", "PUT", "POST", "DELETE", "PATCH"],
    auth_level=func.AuthLevel.FUNCTION,
)
@api_errors
def presence_item(req: func.HttpRequest) -> func.HttpResponse:
    """200 with the latest presence of an active agent; 404 when the agent is
    not actively subscribed or has not been polled yet."""
    if req.method != "GET":
        raise problems.method_not_allowed(req.method, ["GET"])
    tenant_id = requests.guid(req.route_params.get("tenantId", ""), "tenantId")
    user_id = requests.guid(req.route_params.get("userId", ""), "userId")
    requests.reject_query_params(req.params, set())
    services = get_services()
    subscription = services.subscriptions.get(tenant_id, user_id)
    if (
        subscription is None
        or subscription.state is not SubscriptionState.ACTIVE
        or subscription.shard is None
    ):
        raise problems.not_found(
            f"user {user_id} has no active subscription in tenant {tenant_id}"
        )
    stored = services.presence.get(tenant_id, subscription.shard, user_id)
    if stored is None:
        problem = subscription.poll_problem
        raise problems.not_found(
            f"presence of user {user_id} was not observed yet"
            if problem is None
            else f"presence of user {user_id} cannot be read from Graph "
            f"(noted {problem.noted_at:%Y-%m-%dT%H:%M:%SZ}, asked again after "
            f"{NOT_FOUND_RECHECK / timedelta(hours=1):g} hours): {problem.detail}"
        )
    return json_response(
        {
            "tenantId": tenant_id,
            "userId": user_id,
            "availability": stored.presence.availability,
            "activity": stored.presence.activity,
            "sequenceNumber": stored.presence.sequence_number,
            "observedAt": stored.observed_at.isoformat().replace("+00:00", "Z"),
        }
    )
