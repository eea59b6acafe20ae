"""Reading functions from an azure.functions app."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import azure.functions as func
import pytest

from devhost.functions import AppLoadError, index_app
from tests.devhost.sample_app import app as sample_app


def test_sample_app_is_indexed_and_can_be_indexed_again() -> None:
    first = index_app(sample_app)
    second = index_app(sample_app)  # get_functions() alone refuses a 2nd call
    assert {f.info.name for f in first.http} == {f.info.name for f in second.http}
    secret = next(f for f in first.http if f.info.name == "secret")
    assert secret.auth_level == "function"
    assert secret.methods == frozenset({"GET"})
    [work] = first.queues
    assert (work.queue_name, work.connection) == ("devhost-work", "AzureWebJobsStorage")


def test_unsupported_binding_is_a_clear_error() -> None:
    app = func.FunctionApp()

    @app.route(route="x")
    @app.blob_input(arg_name="blob", path="c/b", connection="AzureWebJobsStorage")
    def with_blob(req: func.HttpRequest, blob: func.InputStream) -> str:
        return "x"

    with pytest.raises(AppLoadError, match="'blob'"):
        index_app(app)


def test_wrapper_renaming_the_trigger_parameter_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def renaming(handler: Callable[..., func.HttpResponse]) -> Callable[..., object]:
        @functools.wraps(handler)
        def wrapper(request: func.HttpRequest) -> func.HttpResponse:
            return handler(request)

        return wrapper

    app = func.FunctionApp()

    @app.route(route="y")
    @renaming
    def renamed(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("y")

    with caplog.at_level(logging.WARNING, logger="devhost"):
        index_app(app)
    assert "every call will fail" in caplog.text
