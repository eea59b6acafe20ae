"""HTTP triggers through a real HTTP server: routing, methods, auth, bodies."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

import pytest
import requests

from devhost.host import Host
from tests.devhost.conftest import FUNCTION_KEY, wait_for


@pytest.fixture
def base_url(start_host: Callable[..., Host], storage_connection: str) -> str:
    return start_host().base_url


def test_route_parameters_query_headers_and_body_reach_the_function(
    base_url: str,
) -> None:
    response = requests.put(
        f"{base_url}/tenants/t1/items/i%2F2?a=1&b=two",
        data=b'{"x": 1}',
        headers={"X-Sample": "hello"},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["X-Sample-Reply"] == "yes"
    assert response.json() == {
        "function": "item",
        "method": "PUT",
        "route": {"tenantId": "t1", "itemId": "i/2"},
        "query": {"a": "1", "b": "two"},
        "header": "hello",
        "body": '{"x": 1}',
    }


def test_chunked_request_body(base_url: str) -> None:
    chunks = (part for part in [b"first,", b"second"])  # a generator: chunked
    response = requests.put(f"{base_url}/tenants/t/items/i", data=chunks, timeout=10)
    assert response.status_code == 200
    assert response.json()["body"] == "first,second"


def test_literal_segment_beats_parameter(base_url: str) -> None:
    batch = requests.post(f"{base_url}/tenants/t1/items/batch", timeout=10)
    assert batch.status_code == 200
    assert batch.json()["function"] == "item_batch"
    # The same path with GET matches the parameter route, which allows GET.
    single = requests.get(f"{base_url}/tenants/t1/items/batch", timeout=10)
    assert single.json()["function"] == "item"
    assert single.json()["route"]["itemId"] == "batch"


def test_guid_constraint(base_url: str) -> None:
    thing_id = str(uuid.uuid4())
    assert requests.get(f"{base_url}/things/{thing_id}", timeout=10).status_code == 200
    assert requests.get(f"{base_url}/things/not-a-guid", timeout=10).status_code == 404


def test_route_prefix_is_required(base_url: str) -> None:
    root = base_url.removesuffix("/api")
    assert requests.get(f"{root}/teapot", timeout=10).status_code == 404
    assert requests.get(f"{base_url}/teapot", timeout=10).status_code == 418


def test_unknown_route_is_404_and_wrong_method_is_405(base_url: str) -> None:
    assert requests.get(f"{base_url}/nowhere", timeout=10).status_code == 404
    assert requests.get(f"{base_url}/tenants/t1", timeout=10).status_code == 404
    wrong = requests.delete(f"{base_url}/tenants/t1/items/i1", timeout=10)
    assert wrong.status_code == 405
    assert wrong.headers["Allow"] == "GET, PUT"


def test_status_and_body_of_the_response(base_url: str) -> None:
    response = requests.get(f"{base_url}/teapot", timeout=10)
    assert response.status_code == 418
    assert response.content == b"short and stout"


def test_function_that_raises_gives_500_and_a_logged_traceback(
    base_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="devhost"):
        response = requests.get(f"{base_url}/boom", timeout=10)
    assert response.status_code == 500
    failures = [record for record in caplog.records if record.exc_info]
    assert failures, "no traceback logged"
    assert "boom on purpose" in str(failures[0].exc_info[1])  # type: ignore[index]


@pytest.mark.parametrize("route", ["secret", "admin-only"])
def test_keyed_route_needs_the_function_key(base_url: str, route: str) -> None:
    url = f"{base_url}/{route}"
    assert requests.get(url, timeout=10).status_code == 401
    wrong = requests.get(url, headers={"x-functions-key": "nope"}, timeout=10)
    assert wrong.status_code == 401
    assert requests.get(url, params={"code": "nope"}, timeout=10).status_code == 401
    by_header = requests.get(url, headers={"x-functions-key": FUNCTION_KEY}, timeout=10)
    assert by_header.status_code == 200
    by_query = requests.get(url, params={"code": FUNCTION_KEY}, timeout=10)
    assert by_query.status_code == 200


def test_anonymous_route_needs_no_key(base_url: str) -> None:
    assert requests.get(f"{base_url}/tenants/t/items/i", timeout=10).status_code == 200


def test_key_is_not_logged(base_url: str, caplog: pytest.LogCaptureFixture) -> None:
    def host_lines() -> list[str]:
        # Only the host's own records: the client library logs its URLs too.
        return [
            record.getMessage()
            for record in caplog.records
            if record.name.startswith("devhost")
        ]

    with caplog.at_level(logging.DEBUG):
        requests.get(f"{base_url}/secret", params={"code": FUNCTION_KEY}, timeout=10)
        # The server logs the request after the response has gone out, so the
        # line may land a moment after the client has its answer.
        wait_for(
            lambda: any("/api/secret" in line for line in host_lines()),
            timeout=10,
            message="the request line in the host's log",
        )
    assert not any(FUNCTION_KEY in line for line in host_lines())
