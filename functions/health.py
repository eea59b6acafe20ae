"""Health probe for load balancers and operators."""

from __future__ import annotations

import logging

import azure.functions as func

from functions.http_responses import json_response
from shared.adapters.storage_errors import StorageError
from shared.services import get_services

logger = logging.getLogger(__name__)

bp = func.Blueprint()


@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """200 when table and queue storage answer, 503 otherwise."""
    try:
        services = get_services()
        services.subscriptions.ping()
        services.command_queue.ping()
    except StorageError as error:
        logger.warning("health check failed: %s", error)
        return json_response(
            {"status": "unhealthy", "detail": "storage is not answering"}, status=503
        )
    return json_response({"status": "healthy"})
