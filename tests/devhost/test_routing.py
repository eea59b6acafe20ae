"""Route templates and precedence, without a server."""

from __future__ import annotations

import pytest

from devhost.routing import (
    MethodNotAllowed,
    Route,
    RouteMatch,
    RouteTable,
    RouteTemplate,
    RouteTemplateError,
)


def table(*routes: tuple[str, set[str]]) -> RouteTable[str]:
    return RouteTable(
        Route(RouteTemplate.parse(template), frozenset(methods), template)
        for template, methods in routes
    )


def resolve(routes: RouteTable[str], method: str, path: str) -> object:
    return routes.resolve(method, [part for part in path.split("/") if part])


def test_parameters_are_captured() -> None:
    routes = table(("tenants/{tenantId}/subscriptions/{userId}", {"GET"}))
    match = resolve(routes, "GET", "tenants/t1/subscriptions/u1")
    assert isinstance(match, RouteMatch)
    assert match.params == {"tenantId": "t1", "userId": "u1"}


def test_literal_beats_parameter_whatever_the_order() -> None:
    routes = table(
        ("tenants/{tenantId}/subscriptions/{userId}", {"POST", "GET"}),
        ("tenants/{tenantId}/subscriptions/batch", {"POST"}),
    )
    match = resolve(routes, "POST", "tenants/t1/subscriptions/batch")
    assert isinstance(match, RouteMatch)
    assert match.route.target == "tenants/{tenantId}/subscriptions/batch"


def test_literals_match_case_insensitively() -> None:
    assert isinstance(resolve(table(("Health", set())), "GET", "health"), RouteMatch)


def test_method_not_allowed_lists_the_allowed_methods() -> None:
    routes = table(("items/{id}", {"GET", "PUT"}), ("items/{id:int}", {"PATCH"}))
    result = resolve(routes, "DELETE", "items/7")
    assert result == MethodNotAllowed(frozenset({"GET", "PUT", "PATCH"}))


def test_no_methods_declared_allows_all() -> None:
    assert isinstance(resolve(table(("x", set())), "PATCH", "x"), RouteMatch)


def test_unmatched_path_is_none() -> None:
    routes = table(("a/{b}", {"GET"}))
    assert resolve(routes, "GET", "a") is None
    assert resolve(routes, "GET", "a/b/c") is None


@pytest.mark.parametrize(
    ("template", "good", "bad"),
    [
        ("t/{id:guid}", "t/6f1c1e2a-3b4d-4e5f-8a9b-0c1d2e3f4a5b", "t/nope"),
        ("t/{n:int}", "t/-42", "t/4.2"),
        ("t/{w:alpha}", "t/abc", "t/ab1"),
        ("t/{f:bool}", "t/True", "t/yes"),
    ],
)
def test_constraints(template: str, good: str, bad: str) -> None:
    routes = table((template, {"GET"}))
    assert isinstance(resolve(routes, "GET", good), RouteMatch)
    assert resolve(routes, "GET", bad) is None


def test_constrained_parameter_beats_plain_one() -> None:
    routes = table(("v/{name}", {"GET"}), ("v/{id:int}", {"GET"}))
    match = resolve(routes, "GET", "v/12")
    assert isinstance(match, RouteMatch) and match.route.target == "v/{id:int}"


def test_optional_and_catch_all() -> None:
    routes = table(("files/{*path}", {"GET"}), ("opt/{a?}", {"GET"}))
    files = resolve(routes, "GET", "files/a/b/c.txt")
    assert isinstance(files, RouteMatch) and files.params == {"path": "a/b/c.txt"}
    assert isinstance(resolve(routes, "GET", "opt"), RouteMatch)
    optional = resolve(routes, "GET", "opt/1")
    assert isinstance(optional, RouteMatch) and optional.params == {"a": "1"}


@pytest.mark.parametrize("template", ["a/{*rest}/b", "a/{b?}/c", "a/x{b}"])
def test_unsupported_templates_are_rejected(template: str) -> None:
    with pytest.raises(RouteTemplateError):
        RouteTemplate.parse(template)
