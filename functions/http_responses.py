"""Turn API results and problems into Functions HTTP responses."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any

import azure.functions as func

from shared.adapters.storage_errors import StorageError
from shared.api import problems
from shared.api.problems import PROBLEM_CONTENT_TYPE, Problem

logger = logging.getLogger(__name__)

Handler = Callable[[func.HttpRequest], func.HttpResponse]


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body),
        status_code=status,
        headers=headers or {},
        mimetype="application/json",
    )


def problem_response(problem: Problem, instance: str | None) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(problem.to_dict(instance)),
        status_code=problem.status,
        headers=problem.headers,
        mimetype=PROBLEM_CONTENT_TYPE,
    )


def request_path(request: func.HttpRequest) -> str:
    # The URL may carry the function key in ?code=: keep only the path.
    return "/" + request.url.split("://", 1)[-1].split("/", 1)[-1].split("?", 1)[0]


def api_errors(handler: Handler) -> Handler:
    """Maps problems to their 4xx answer and storage failures to 503, so every
    error leaves the handler as problem+json."""

    # The host passes arguments by binding name: the parameter must be "req",
    # the name the handler declares.
    @functools.wraps(handler)
    def wrapper(req: func.HttpRequest) -> func.HttpResponse:
        request = req
        path = request_path(request)
        try:
            return handler(request)
        except Problem as problem:
            logger.info(
                "%s %s rejected: %s %s",
                request.method,
                path,
                problem.status,
                problem.detail,
            )
            return problem_response(problem, path)
        except StorageError as error:
            logger.warning(
                "%s %s: storage unavailable: %s", request.method, path, error
            )
            return problem_response(
                problems.service_unavailable(
                    "storage is unavailable; the call may not have been "
                    "accepted: retry it, with the same Idempotency-Key to be safe"
                ),
                path,
            )

    return wrapper
