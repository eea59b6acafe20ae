"""A small function app the devhost tests serve: HTTP per auth level,
a queue function that fails on request, and one that takes its time.

Each queue invocation appends a JSON line to ``$SAMPLE_RECORD_DIR/queue.jsonl``
so tests can see what the function saw.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

WORK_QUEUE = "devhost-work"
ECHO_QUEUE = "devhost-echo"


def record(kind: str, **fields: object) -> None:
    path = Path(os.environ["SAMPLE_RECORD_DIR"]) / f"{kind}.jsonl"
    with path.open("a", encoding="utf-8") as file:
        file.write(json.dumps(fields) + "\n")


def _echo(req: func.HttpRequest, function: str) -> func.HttpResponse:
    payload = {
        "function": function,
        "method": req.method,
        "route": dict(req.route_params),
        "query": dict(req.params),
        "header": req.headers.get("x-sample"),
        "body": req.get_body().decode(),
    }
    return func.HttpResponse(
        json.dumps(payload),
        status_code=200,
        mimetype="application/json",
        headers={"X-Sample-Reply": "yes"},
    )


@app.route(
    route="tenants/{tenantId}/items/{itemId}",
    methods=["GET", "PUT"],
    auth_level=func.AuthLevel.ANONYMOUS,
)
def item(req: func.HttpRequest) -> func.HttpResponse:
    return _echo(req, "item")


@app.route(
    route="tenants/{tenantId}/items/batch",
    methods=["POST"],
    auth_level=func.AuthLevel.ANONYMOUS,
)
def item_batch(req: func.HttpRequest) -> func.HttpResponse:
    return _echo(req, "item_batch")


@app.route(
    route="things/{id:guid}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS
)
def thing(req: func.HttpRequest) -> func.HttpResponse:
    return _echo(req, "thing")


@app.route(route="secret", methods=["GET"])  # app default: FUNCTION
def secret(req: func.HttpRequest) -> func.HttpResponse:
    return _echo(req, "secret")


@app.route(route="admin-only", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
def admin_only(req: func.HttpRequest) -> func.HttpResponse:
    return _echo(req, "admin_only")


@app.route(route="teapot", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def teapot(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(b"short and stout", status_code=418)


@app.route(route="boom", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("boom on purpose")


@app.route(route="enqueue", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@app.queue_output(
    arg_name="out", queue_name=ECHO_QUEUE, connection="AzureWebJobsStorage"
)
def enqueue(req: func.HttpRequest, out: func.Out[str]) -> func.HttpResponse:
    out.set(req.get_body().decode())
    return func.HttpResponse(status_code=202)


@app.queue_trigger(
    arg_name="msg", queue_name=WORK_QUEUE, connection="AzureWebJobsStorage"
)
def work(msg: func.QueueMessage) -> None:
    """Body ``fail:<tag>`` raises, ``sleep:<seconds>:<tag>`` takes its time,
    anything else succeeds."""
    body = msg.get_body().decode()
    record(
        "queue",
        event="start",
        body=body,
        id=msg.id,
        dequeue_count=msg.dequeue_count,
        inserted=msg.insertion_time.isoformat() if msg.insertion_time else None,
        pop_receipt=msg.pop_receipt,
        at=time.time(),
    )
    if body.startswith("fail:"):
        raise RuntimeError(f"failing on request: {body}")
    if body.startswith("sleep:"):
        time.sleep(float(body.split(":")[1]))
    record("queue", event="done", body=body, id=msg.id, at=time.time())
