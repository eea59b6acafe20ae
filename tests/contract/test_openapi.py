"""docs/openapi.yaml is kept true to the code.

1. It is a valid OpenAPI 3.1 document, and its examples match its schemas.
2. The (path, method) pairs it declares are the ones the function app serves,
   read from the HTTP trigger bindings the Functions host receives; methods a
   handler answers with 405 are not served, and are the ones each path item
   lists under ``x-methods-not-allowed``.
3. Real calls through the handlers, against Azurite, for every documented
   status: each answer's status is documented for its operation, and its body,
   media type and headers match what the document says for that status.
"""

from __future__ import annotations

import json
import re
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import azure.functions as func
import pytest
import yaml
from azure.storage.queue import QueueClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from devtools.azurite import DEV_ACCOUNT, DEV_KEY
from shared import settings as settings_module
from shared.adapters import storage_clients
from shared.services import Services, get_services, reset_services
from simulators.graph import GraphSimulator
from tests.support.functions_host import http, run_queue_function

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "docs" / "openapi.yaml"
DOC_URI = "urn:presence-service:openapi"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
# Answered by the Functions host before a handler runs, so no handler call can
# produce them: a missing or wrong function key.
HOST_STATUSES = {"401"}

TENANT = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
ITEM = "/api/tenants/{tenantId}/subscriptions/{userId}"
BATCH = "/api/tenants/{tenantId}/subscriptions/batch"
LIST = "/api/tenants/{tenantId}/subscriptions"
PRESENCE = "/api/tenants/{tenantId}/presence/{userId}"
HEALTH = "/api/health"


# ---- the document ---------------------------------------------------------


@cache
def document() -> dict[str, Any]:
    loaded = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


@cache
def registry() -> Registry:
    resource = Resource.from_contents(document(), default_specification=DRAFT202012)
    return Registry().with_resource(DOC_URI, resource)


def escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def node_at(pointer: str) -> Any:
    node: Any = document()
    for token in pointer.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        node = node[int(token)] if isinstance(node, list) else node[token]
    return node


def resolve(pointer: str) -> str:
    """The pointer of the object at ``pointer``, following a whole-object
    $ref (responses, parameters, headers)."""
    seen = set()
    while isinstance(node_at(pointer), dict) and "$ref" in node_at(pointer):
        reference = node_at(pointer)["$ref"]
        assert reference.startswith("#/"), reference
        assert pointer not in seen, f"$ref cycle at {pointer}"
        seen.add(pointer)
        pointer = reference[1:]
    return pointer


def schema_errors(schema_pointer: str, instance: Any) -> list[str]:
    """Errors of ``instance`` against the schema at ``schema_pointer``, with
    $refs resolved within the document and formats (uuid, date-time)
    checked."""
    validator = Draft202012Validator(
        {"$ref": f"{DOC_URI}#{quote(schema_pointer, safe='/~')}"},
        registry=registry(),
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in validator.iter_errors(instance)
    ]


def operation_pointer(path: str, method: str) -> str:
    return f"/paths/{escape(path)}/{method.lower()}"


def documented_operations() -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, item in document()["paths"].items()
        for method in METHODS
        if method in item
    }


def walk(node: Any, pointer: str = "") -> Iterator[tuple[str, Any]]:
    yield pointer, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{pointer}/{escape(str(key))}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{pointer}/{index}")


# ---- what the function app serves ------------------------------------------


@dataclass(frozen=True)
class Route:
    function_name: str
    path: str
    methods: tuple[str, ...]
    auth_level: str


@cache
def http_routes() -> tuple[Route, ...]:
    """The HTTP routes as the host sees them: the trigger bindings the worker
    reports at indexing, under host.json's route prefix."""
    import function_app

    host = json.loads((ROOT / "host.json").read_text(encoding="utf-8"))
    prefix = host.get("extensions", {}).get("http", {}).get("routePrefix", "api")
    app = function_app.app
    # get_functions() keeps state and refuses a second call unless reset
    # (tests/support/functions_host.py indexes the same way).
    app.functions_bindings = {}
    routes = []
    for function in app.get_functions():
        for raw in function.get_raw_bindings():
            binding = json.loads(raw)
            if binding["type"] != "httpTrigger":
                continue
            # {name:constraint} and {name?} are both {name} in OpenAPI.
            route = re.sub(r"\{(\w+)[^}]*\}", r"{\1}", binding["route"])
            routes.append(
                Route(
                    function_name=str(function.get_function_name()),
                    path="/" + "/".join(part for part in (prefix, route) if part),
                    methods=tuple(m.upper() for m in binding["methods"]),
                    auth_level=binding["authLevel"].upper(),
                )
            )
    return tuple(routes)


def call(
    path: str,
    method: str,
    route_params: dict[str, str],
    body: bytes | dict[str, Any] | list[Any] | None = None,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> func.HttpResponse:
    """Calls the function serving ``path`` as the host would route it."""
    (route,) = [r for r in http_routes() if r.path == path]
    url = path
    for name, value in route_params.items():
        url = url.replace("{" + name + "}", value)
    return http(route.function_name, method, url, route_params, body, headers, params)


# ---- checking an answer against the document -------------------------------


def problems_with(path: str, method: str, response: func.HttpResponse) -> list[str]:
    """Where ``response`` departs from what the document says ``method path``
    answers."""
    responses = f"{operation_pointer(path, method)}/responses"
    status = str(response.status_code)
    if status not in node_at(responses):
        return [f"{status} is not documented for {method.upper()} {path}"]
    return departures(resolve(f"{responses}/{status}"), response)


def departures(documented: str, response: func.HttpResponse) -> list[str]:
    """Where ``response`` departs from the Response object at ``documented``:
    media type, body schema, required and undocumented headers."""
    found = []
    content = node_at(documented).get("content", {})
    body = response.get_body()
    if not content:
        if body:
            found.append(
                f"{response.status_code} is documented without a body, got {body!r}"
            )
    elif response.mimetype not in content:
        found.append(
            f"{response.status_code} answered {response.mimetype}, "
            f"documented {sorted(content)}"
        )
    else:
        media = f"{documented}/content/{escape(response.mimetype)}/schema"
        found += schema_errors(media, json.loads(body))
    headers = {name.lower(): value for name, value in response.headers.items()}
    headers.pop("content-type", None)
    declared = node_at(documented).get("headers", {})
    for name in declared:
        header = resolve(f"{documented}/headers/{escape(name)}")
        value = headers.pop(name.lower(), None)
        if value is None:
            if node_at(header).get("required"):
                found.append(f"required header {name} is missing")
            continue
        found += [f"{name}: {e}" for e in schema_errors(f"{header}/schema", value)]
    found += [f"header {name} is not documented" for name in headers]
    return found


# ---- 1. the document is valid ----------------------------------------------


def test_document_is_valid_openapi_3_1() -> None:
    assert str(document()["openapi"]).startswith("3.1.")
    validate(document(), cls=OpenAPIV31SpecValidator)


def test_every_schema_in_the_document_is_a_valid_json_schema() -> None:
    for pointer, node in walk(document()):
        if pointer.endswith("/schema") or re.fullmatch(
            r"/components/schemas/[^/]+", pointer
        ):
            Draft202012Validator.check_schema(node)


def test_examples_match_their_schemas() -> None:
    checked = 0
    for pointer, node in walk(document()):
        if not isinstance(node, dict):
            continue
        if "schema" in node and "example" in node:
            assert schema_errors(f"{pointer}/schema", node["example"]) == [], pointer
            checked += 1
        if "schema" in node and isinstance(node.get("examples"), dict):
            for name, example in node["examples"].items():
                errors = schema_errors(f"{pointer}/schema", example["value"])
                assert errors == [], f"{pointer}/examples/{name}"
                checked += 1
        if "type" in node and isinstance(node.get("examples"), list):
            for index, example in enumerate(node["examples"]):
                assert schema_errors(pointer, example) == [], f"{pointer}/{index}"
                checked += 1
    assert checked >= 15


def test_the_problem_types_are_the_ones_the_code_raises() -> None:
    source = (ROOT / "shared" / "api" / "problems.py").read_text(encoding="utf-8")
    # Every problem is built as Problem(<status>, "<slug>", ...).
    slugs = re.findall(r'Problem\(\s*\d{3},\s*"([a-z-]+)"', source)
    assert len(slugs) == source.count("return Problem(")
    types = {f"/problems/{slug}" for slug in slugs}
    assert types == set(node_at("/components/schemas/ProblemType/enum"))
    guide = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert [t for t in sorted(types) if f"`{t}`" not in guide] == []


# ---- 2. the documented operations are the served ones -----------------------


def valid_route_params(path: str) -> dict[str, str]:
    return {
        name: TENANT if name == "tenantId" else str(uuid.uuid4())
        for name in re.findall(r"\{(\w+)\}", path)
    }


def test_documented_operations_are_the_served_ones(
    command_queue: QueueClient,
) -> None:
    served: set[tuple[str, str]] = set()
    not_allowed: dict[str, set[str]] = {}
    for route in http_routes():
        for method in route.methods:
            response = call(route.path, method, valid_route_params(route.path))
            if response.status_code != 405:
                served.add((route.path, method.lower()))
                continue
            not_allowed.setdefault(route.path, set()).add(method)
            answer = resolve("/components/responses/MethodNotAllowed")
            assert departures(answer, response) == [], (route.path, method)
            allowed = {m.strip() for m in response.headers["Allow"].split(",")}
            documented = {
                m.upper() for p, m in documented_operations() if p == route.path
            }
            assert allowed == documented, route.path

    assert served == documented_operations()
    assert not_allowed == {
        path: set(item["x-methods-not-allowed"])
        for path, item in document()["paths"].items()
        if item.get("x-methods-not-allowed")
    }


def test_security_matches_each_route_auth_level() -> None:
    schemes = node_at("/components/securitySchemes")
    assert {(s["type"], s["in"], s["name"]) for s in schemes.values()} == {
        ("apiKey", "header", "x-functions-key"),
        ("apiKey", "query", "code"),
    }
    assert sorted(document()["security"], key=str) == sorted(
        [{name: []} for name in schemes], key=str
    )
    for route in http_routes():
        for method in route.methods:
            if (route.path, method.lower()) not in documented_operations():
                continue
            operation = node_at(operation_pointer(route.path, method))
            security = operation.get("security", document()["security"])
            responses = set(operation["responses"])
            if route.auth_level == "ANONYMOUS":
                assert security == [], (route.path, method)
                assert "401" not in responses, (route.path, method)
            else:
                assert security == document()["security"], (route.path, method)
                assert "401" in responses, (route.path, method)


# ---- 3. real answers match the document ------------------------------------


@dataclass
class Context:
    command_queue: QueueClient
    monkeypatch: pytest.MonkeyPatch

    def apply_all(self) -> None:
        run_queue_function("apply_subscription_command", self.command_queue)

    def storage_down(self) -> None:
        """Points the app at a port nothing listens on."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        base = f"http://127.0.0.1:{port}/{DEV_ACCOUNT}"
        self.monkeypatch.setenv(
            settings_module.STORAGE_CONNECTION,
            f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};"
            f"AccountKey={DEV_KEY};QueueEndpoint={base};TableEndpoint={base};",
        )
        settings_module.get_settings.cache_clear()
        reset_services()


def item(
    method: str,
    user: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    params: dict[str, str] | None = None,
    tenant: str = TENANT,
) -> func.HttpResponse:
    return call(
        ITEM,
        method,
        {"tenantId": tenant, "userId": user},
        body=body,
        headers=headers,
        params=params,
    )


def batch(
    body: bytes | dict[str, Any] | list[Any], headers: dict[str, str] | None = None
) -> func.HttpResponse:
    return call(BATCH, "POST", {"tenantId": TENANT}, body=body, headers=headers)


def listing(params: dict[str, str], tenant: str = TENANT) -> func.HttpResponse:
    return call(LIST, "GET", {"tenantId": tenant}, params=params)


def new_id() -> str:
    return str(uuid.uuid4())


def version_of(response: func.HttpResponse) -> str:
    assert response.status_code == 202, response.get_body()
    version: str = json.loads(response.get_body())["version"]
    return version


def with_poll_problem(user: str) -> str:
    """As the poller leaves it when Graph refuses the user (in shard 0, the
    first agent's)."""
    get_services().subscriptions.record_poll_problem(
        TENANT, user, 0, "Graph answered 404 ItemNotFoundError"
    )
    return user


def registered(ctx: Context, user: str) -> str:
    version = version_of(item("PUT", user))
    ctx.apply_all()
    return version


def replayed_put(ctx: Context) -> func.HttpResponse:
    user, key = new_id(), {"Idempotency-Key": "contract-replay"}
    first = item("PUT", user, key)
    second = item("PUT", user, key)
    assert second.get_body() == first.get_body()
    assert second.headers["Idempotent-Replayed"] == "true"
    return second


def reused_key(ctx: Context, method: str) -> func.HttpResponse:
    key = {"Idempotency-Key": "contract-reused"}
    version_of(item(method, new_id(), key))
    return item(method, new_id(), key)


def stale_if_match(ctx: Context) -> func.HttpResponse:
    user = new_id()
    stale = version_of(item("PUT", user))
    item("PUT", user)
    ctx.apply_all()
    return item("DELETE", user, {"If-Match": f'"{stale}"'})


def current_if_match(ctx: Context) -> func.HttpResponse:
    user = new_id()
    version = registered(ctx, user)
    return item("DELETE", user, {"If-Match": f'"{version}"'})


def removed(ctx: Context) -> func.HttpResponse:
    user = new_id()
    registered(ctx, user)
    item("DELETE", user)
    ctx.apply_all()
    response = item("GET", user)
    assert json.loads(response.get_body())["state"] == "removed"
    return response


def replayed_batch(ctx: Context) -> func.HttpResponse:
    body = {"register": [new_id(), new_id()], "deregister": [new_id()]}
    key = {"Idempotency-Key": "contract-batch"}
    first = batch(body, key)
    second = batch(body, key)
    assert second.get_body() == first.get_body()
    return second


def first_page(ctx: Context) -> func.HttpResponse:
    batch({"register": [new_id(), new_id(), new_id()]})
    ctx.apply_all()
    response = listing({"limit": "2", "state": "active"})
    assert json.loads(response.get_body())["continuationToken"]
    return response


def last_page(ctx: Context) -> func.HttpResponse:
    batch({"register": [new_id(), new_id()], "deregister": [new_id()]})
    ctx.apply_all()
    token = json.loads(listing({"limit": "2"}).get_body())["continuationToken"]
    response = listing({"limit": "2", "continuationToken": token})
    assert json.loads(response.get_body())["continuationToken"] is None
    return response


def storage_down(
    then: Callable[[], func.HttpResponse],
) -> Callable[[Context], func.HttpResponse]:
    def scenario(ctx: Context) -> func.HttpResponse:
        ctx.storage_down()
        return then()

    return scenario


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    method: str
    status: int
    run: Callable[[Context], func.HttpResponse]


U = str(uuid.UUID(int=7))
BIG = b'{"register": ["' + b"x" * (256 * 1024) + b'"]}'

SCENARIOS = [
    # PUT /subscriptions/{userId}
    Scenario("register", ITEM, "put", 202, lambda c: item("PUT", new_id())),
    Scenario("register-upper-case", ITEM, "put", 202, lambda c: item("PUT", U.upper())),
    Scenario("register-replayed", ITEM, "put", 202, replayed_put),
    Scenario("register-bad-user", ITEM, "put", 400, lambda c: item("PUT", "bob")),
    Scenario(
        "register-bad-tenant", ITEM, "put", 400, lambda c: item("PUT", U, tenant="t")
    ),
    Scenario(
        "register-query", ITEM, "put", 400, lambda c: item("PUT", U, params={"a": "1"})
    ),
    Scenario("register-body", ITEM, "put", 400, lambda c: item("PUT", U, body=b"{}")),
    Scenario(
        "register-weak-if-match",
        ITEM,
        "put",
        400,
        lambda c: item("PUT", U, {"If-Match": 'W/"x"'}),
    ),
    Scenario(
        "register-long-key",
        ITEM,
        "put",
        400,
        lambda c: item("PUT", U, {"Idempotency-Key": "k" * 256}),
    ),
    Scenario(
        "register-if-match-unknown",
        ITEM,
        "put",
        412,
        lambda c: item("PUT", new_id(), {"If-Match": "*"}),
    ),
    Scenario("register-key-reused", ITEM, "put", 422, lambda c: reused_key(c, "PUT")),
    Scenario(
        "register-storage-down",
        ITEM,
        "put",
        503,
        storage_down(lambda: item("PUT", U)),
    ),
    # DELETE /subscriptions/{userId}
    Scenario("deregister", ITEM, "delete", 202, lambda c: item("DELETE", new_id())),
    Scenario("deregister-if-match", ITEM, "delete", 202, current_if_match),
    Scenario("deregister-bad-user", ITEM, "delete", 400, lambda c: item("DELETE", "1")),
    Scenario(
        "deregister-bad-if-match",
        ITEM,
        "delete",
        400,
        lambda c: item("DELETE", U, {"If-Match": "not-quoted"}),
    ),
    Scenario("deregister-stale", ITEM, "delete", 412, stale_if_match),
    Scenario(
        "deregister-key-reused", ITEM, "delete", 422, lambda c: reused_key(c, "DELETE")
    ),
    Scenario(
        "deregister-storage-down",
        ITEM,
        "delete",
        503,
        storage_down(lambda: item("DELETE", U)),
    ),
    # GET /subscriptions/{userId}
    Scenario(
        "get-active",
        ITEM,
        "get",
        200,
        lambda c: (registered(c, U), item("GET", U))[1],
    ),
    Scenario(
        "get-with-poll-problem",
        ITEM,
        "get",
        200,
        lambda c: (registered(c, U), with_poll_problem(U), item("GET", U))[2],
    ),
    Scenario("get-removed", ITEM, "get", 200, removed),
    Scenario("get-bad-tenant", ITEM, "get", 400, lambda c: item("GET", U, tenant="x")),
    Scenario(
        "get-query", ITEM, "get", 400, lambda c: item("GET", U, params={"state": "a"})
    ),
    Scenario("get-unknown", ITEM, "get", 404, lambda c: item("GET", new_id())),
    Scenario(
        "get-storage-down", ITEM, "get", 503, storage_down(lambda: item("GET", U))
    ),
    # POST /subscriptions/batch
    Scenario(
        "batch",
        BATCH,
        "post",
        202,
        lambda c: batch({"register": [new_id()], "deregister": [new_id()]}),
    ),
    Scenario(
        "batch-without-content-type",
        BATCH,
        "post",
        202,
        lambda c: batch(json.dumps({"deregister": [U]}).encode()),
    ),
    Scenario("batch-replayed", BATCH, "post", 202, replayed_batch),
    Scenario(
        "batch-bad-id", BATCH, "post", 400, lambda c: batch({"register": ["nope"]})
    ),
    Scenario(
        "batch-extra-field",
        BATCH,
        "post",
        400,
        lambda c: batch({"register": [U], "extra": 1}),
    ),
    Scenario("batch-not-json", BATCH, "post", 400, lambda c: batch(b"{not json")),
    Scenario(
        "batch-if-match",
        BATCH,
        "post",
        400,
        lambda c: batch({"register": [U]}, {"If-Match": "*"}),
    ),
    Scenario("batch-too-large", BATCH, "post", 413, lambda c: batch(BIG)),
    Scenario(
        "batch-text-plain",
        BATCH,
        "post",
        415,
        lambda c: batch(b"register=x", {"Content-Type": "text/plain"}),
    ),
    Scenario(
        "batch-key-reused",
        BATCH,
        "post",
        422,
        lambda c: (
            batch({"register": [U]}, {"Idempotency-Key": "b"}),
            batch({"register": [new_id()]}, {"Idempotency-Key": "b"}),
        )[1],
    ),
    Scenario(
        "batch-storage-down",
        BATCH,
        "post",
        503,
        storage_down(lambda: batch({"register": [U]})),
    ),
    # GET /subscriptions
    Scenario("list-empty", LIST, "get", 200, lambda c: listing({})),
    Scenario("list-first-page", LIST, "get", 200, first_page),
    Scenario("list-last-page", LIST, "get", 200, last_page),
    Scenario("list-bad-state", LIST, "get", 400, lambda c: listing({"state": "x"})),
    Scenario("list-bad-limit", LIST, "get", 400, lambda c: listing({"limit": "0"})),
    Scenario(
        "list-bad-token",
        LIST,
        "get",
        400,
        lambda c: listing({"continuationToken": "%%%"}),
    ),
    Scenario("list-bad-tenant", LIST, "get", 400, lambda c: listing({}, tenant="x")),
    Scenario("list-storage-down", LIST, "get", 503, storage_down(lambda: listing({}))),
    # GET /presence/{userId} (200: test_presence_answer_matches_the_document)
    Scenario(
        "presence-bad-user",
        PRESENCE,
        "get",
        400,
        lambda c: call(PRESENCE, "GET", {"tenantId": TENANT, "userId": "x"}),
    ),
    Scenario(
        "presence-unknown",
        PRESENCE,
        "get",
        404,
        lambda c: call(PRESENCE, "GET", {"tenantId": TENANT, "userId": U}),
    ),
    Scenario(
        "presence-not-polled",
        PRESENCE,
        "get",
        404,
        lambda c: (
            registered(c, U),
            call(PRESENCE, "GET", {"tenantId": TENANT, "userId": U}),
        )[1],
    ),
    Scenario(
        "presence-storage-down",
        PRESENCE,
        "get",
        503,
        storage_down(lambda: call(PRESENCE, "GET", {"tenantId": TENANT, "userId": U})),
    ),
    # GET /health
    Scenario("health", HEALTH, "get", 200, lambda c: call(HEALTH, "GET", {})),
    Scenario(
        "health-storage-down",
        HEALTH,
        "get",
        503,
        storage_down(lambda: call(HEALTH, "GET", {})),
    ),
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_answer_matches_the_document(
    scenario: Scenario,
    command_queue: QueueClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    response = scenario.run(Context(command_queue, monkeypatch))

    assert response.status_code == scenario.status, response.get_body()
    assert problems_with(scenario.path, scenario.method, response) == []


def test_every_documented_answer_has_a_scenario() -> None:
    """So a status cannot stay in the document after the code stops giving
    it, nor be added without a call that gives it."""
    documented = {
        (path, method, status)
        for path, method in documented_operations()
        for status in node_at(f"{operation_pointer(path, method)}/responses")
        if status not in HOST_STATUSES
    }
    exercised = {(s.path, s.method, str(s.status)) for s in SCENARIOS}
    exercised.add((PRESENCE, "get", "200"))  # test_presence_answer_matches...
    assert exercised == documented


def test_presence_answer_matches_the_document(
    command_queue: QueueClient,
    graph_settings: object,
    eventgrid_settings: object,
    graph_simulator: GraphSimulator,
) -> None:
    reset_services()  # rebuild with the simulator's settings
    tenant = graph_simulator.add_tenant(user_count=1)
    (user,) = graph_simulator.user_ids(tenant)
    assert version_of(item("PUT", user, tenant=tenant))
    run_queue_function("apply_subscription_command", command_queue)
    services = get_services()
    services.fan_out.run()
    run_queue_function(
        "poll_shard",
        storage_clients.queue_client(
            services.settings.storage, settings_module.POLL_QUEUE
        ),
    )

    response = call(PRESENCE, "GET", {"tenantId": tenant, "userId": user})

    assert response.status_code == 200, response.get_body()
    assert problems_with(PRESENCE, "get", response) == []


# ---- the batch body schema agrees with the handler's validation -------------


# With letters, so that upper-casing one makes a different string.
V = [str(uuid.UUID(int=(0xABCDEF << 104) + i)) for i in range(1, 1202)]
BODIES_BOTH_ACCEPT: list[Any] = [
    {"register": V[:1]},
    {"deregister": V[:1]},
    {"register": V[:1], "deregister": V[1:2]},
    {"register": [], "deregister": V[:1]},
    {"register": [V[0].upper()]},
    {"register": V[:1000]},
]
BODIES_BOTH_REJECT: list[Any] = [
    ["a list"],
    "a string",
    {},
    {"register": [], "deregister": []},
    {"register": None},
    {"register": "not-a-list"},
    {"register": ["not-a-guid"]},
    {"register": [1]},
    {"register": V[:1], "extra": True},
    {"register": V[:1001]},
    {"register": [V[0], V[0]]},
]
# Rules the schema cannot state; the operation's description states them.
BODIES_ONLY_THE_HANDLER_REJECTS: list[Any] = [
    {"register": V[:600], "deregister": V[600:1200]},
    {"register": V[:1], "deregister": V[:1]},
    {"register": [V[0], V[0].upper()]},
]
REQUEST_SCHEMA = (
    f"{operation_pointer(BATCH, 'post')}/requestBody/content/application~1json/schema"
)


def body_case(body: Any, schema_accepts: bool, handler_accepts: bool) -> Any:
    return pytest.param(body, schema_accepts, handler_accepts, id=json.dumps(body)[:48])


@pytest.mark.parametrize(
    ("body", "schema_accepts", "handler_accepts"),
    [body_case(b, True, True) for b in BODIES_BOTH_ACCEPT]
    + [body_case(b, False, False) for b in BODIES_BOTH_REJECT]
    + [body_case(b, True, False) for b in BODIES_ONLY_THE_HANDLER_REJECTS],
)
def test_batch_schema_agrees_with_the_handler(
    services: Services, body: Any, schema_accepts: bool, handler_accepts: bool
) -> None:
    assert (schema_errors(REQUEST_SCHEMA, body) == []) is schema_accepts

    response = batch(json.dumps(body).encode("utf-8"))

    assert (response.status_code == 202) is handler_accepts, response.get_body()
    if not handler_accepts:
        assert response.status_code == 400


@pytest.mark.parametrize(
    ("value", "documented"),
    [
        (U, True),
        (U.upper(), True),
        ("9B2f6a53-1F0e-4C4e-8d53-0c2A3b6D7e10", True),
        ("bob", False),
        (U[:-1], False),
        (U + "0", False),
        ("{" + U + "}", False),
        ("x" * 36, False),
        (U.replace("-", "_"), False),
    ],
)
def test_guid_pattern_agrees_with_the_handler(
    services: Services, value: str, documented: bool
) -> None:
    parameter = resolve(f"/paths/{escape(ITEM)}/parameters/1")
    assert node_at(parameter)["name"] == "userId"
    assert (schema_errors(f"{parameter}/schema", value) == []) is documented

    response = item("GET", value)

    rejected = response.status_code == 400
    assert rejected is not documented, response.get_body()
    if rejected:
        assert json.loads(response.get_body())["field"] == "userId"
