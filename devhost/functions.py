"""Load the function app and describe its functions through azure.functions'
own indexing API, the way the Python worker does for the real host."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import azure.functions as func
from azure.functions.decorators.core import BindingDirection

logger = logging.getLogger(__name__)

T = TypeVar("T")


class AppLoadError(RuntimeError):
    """The app could not be imported or uses something devhost cannot serve."""


@dataclass(frozen=True)
class QueueOutput:
    """A ``queue_output`` binding: values set on it are sent after success."""

    arg_name: str
    queue_name: str
    connection: str | None


@dataclass(frozen=True)
class FunctionInfo:
    name: str
    user_function: Callable[..., Any]
    trigger_arg: str
    queue_outputs: tuple[QueueOutput, ...] = ()


@dataclass(frozen=True)
class HttpFunction:
    info: FunctionInfo
    route: str
    methods: frozenset[str]  # empty: every method
    auth_level: str  # "anonymous", "function" or "admin"


@dataclass(frozen=True)
class QueueFunction:
    info: FunctionInfo
    queue_name: str
    connection: str | None


@dataclass(frozen=True)
class TimerFunction:
    info: FunctionInfo
    schedule: str
    run_on_startup: bool


@dataclass
class IndexedApp:
    http: list[HttpFunction] = field(default_factory=list)
    queues: list[QueueFunction] = field(default_factory=list)
    timers: list[TimerFunction] = field(default_factory=list)


class OutValue(func.Out[T], Generic[T]):
    """What an output binding parameter receives."""

    def __init__(self) -> None:
        self._value: T | None = None

    def set(self, val: T) -> None:
        self._value = val

    def get(self) -> T:
        return self._value  # type: ignore[return-value]


def import_app(spec: str, script_root: Path) -> func.FunctionApp:
    """Import ``module:attribute`` with the script root first on sys.path."""
    module_name, _, attribute = spec.partition(":")
    attribute = attribute or "app"
    root = str(script_root.resolve())
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        # The traceback shows where in the app the import broke.
        logger.exception("Importing %s failed", module_name)
        raise AppLoadError(f"cannot import {module_name!r}: {error!r}") from error
    app = getattr(module, attribute, None)
    if not isinstance(app, func.FunctionApp):
        raise AppLoadError(f"{spec!r} is not an azure.functions.FunctionApp")
    return app


def index_app(app: func.FunctionApp) -> IndexedApp:
    # get_functions() remembers the names it has seen and rejects them on a
    # second call; forget them so the same app can be indexed again (tests).
    app.functions_bindings = None
    indexed = IndexedApp()
    for function in app.get_functions():
        trigger = function.get_trigger()
        if trigger is None:
            raise AppLoadError(
                f"function {function.get_function_name()!r} has no trigger"
            )
        description = trigger.get_dict_repr()
        info = _function_info(function, trigger.name)
        trigger_type = description.get("type")
        if trigger_type == "httpTrigger":
            indexed.http.append(_http_function(info, description))
        elif trigger_type == "queueTrigger":
            indexed.queues.append(
                QueueFunction(
                    info, description["queueName"], description.get("connection")
                )
            )
        elif trigger_type == "timerTrigger":
            indexed.timers.append(
                TimerFunction(
                    info,
                    description["schedule"],
                    bool(description.get("runOnStartup", False)),
                )
            )
        else:
            raise AppLoadError(
                f"function {info.name!r}: trigger {trigger_type!r} is not "
                "supported by devhost"
            )
    return indexed


def _http_function(info: FunctionInfo, description: Mapping[str, Any]) -> HttpFunction:
    # HttpMethod and AuthLevel are str-valued enums; .value gives "GET", "function".
    methods = frozenset(
        getattr(method, "value", str(method)).upper()
        for method in description.get("methods") or []
    )
    auth_level = description.get("authLevel") or func.AuthLevel.FUNCTION
    return HttpFunction(
        info=info,
        route=description.get("route") or info.name,
        methods=methods,
        auth_level=str(getattr(auth_level, "value", auth_level)).lower(),
    )


def _function_info(function: Any, trigger_arg: str) -> FunctionInfo:
    name = function.get_function_name()
    outputs = []
    for binding in function.get_bindings():
        if binding.name in (trigger_arg, "$return"):
            continue
        description = binding.get_dict_repr()
        if (
            description.get("type") == "queue"
            and description.get("direction") == BindingDirection.OUT
        ):
            outputs.append(
                QueueOutput(
                    binding.name,
                    description["queueName"],
                    description.get("connection"),
                )
            )
        else:
            raise AppLoadError(
                f"function {name!r}: binding {binding.name!r} of type "
                f"{description.get('type')!r} is not supported by devhost"
            )
    user_function = function.get_user_function()
    parameters = set(inspect.signature(user_function).parameters)
    expected = {trigger_arg} | {output.arg_name for output in outputs}
    if parameters != expected:
        raise AppLoadError(
            f"function {name!r}: parameters {sorted(parameters)} do not match its "
            f"bindings {sorted(expected)} (devhost passes no 'context')"
        )
    _warn_if_wrapper_rejects(name, user_function, expected)
    return FunctionInfo(name, user_function, trigger_arg, tuple(outputs))


def _warn_if_wrapper_rejects(
    name: str, user_function: Callable[..., Any], arg_names: set[str]
) -> None:
    """inspect.signature follows functools.wraps to the wrapped function, as
    the Python worker's indexing does, but the call goes to the wrapper: if
    the wrapper names its parameter differently, every call fails."""
    outer = inspect.signature(user_function, follow_wrapped=False)
    try:
        outer.bind(**dict.fromkeys(arg_names))
    except TypeError as error:
        logger.warning(
            "Function %s: its decorator's wrapper%s cannot take keyword "
            "arguments %s (%s); every call will fail, as in Azure",
            name,
            outer,
            sorted(arg_names),
            error,
        )


@dataclass
class Invocation:
    """One call of a user function; outputs are read after it returns."""

    result: Any
    outputs: dict[QueueOutput, Any]


def invoke(info: FunctionInfo, trigger_value: Any) -> Invocation:
    """Call the user function (awaiting it if it is a coroutine function)."""
    holders: dict[QueueOutput, OutValue[Any]] = {
        output: OutValue() for output in info.queue_outputs
    }
    kwargs: dict[str, Any] = {info.trigger_arg: trigger_value}
    kwargs.update({output.arg_name: holder for output, holder in holders.items()})
    result = info.user_function(**kwargs)
    if inspect.isawaitable(result):
        result = asyncio.run(_await(result))
    return Invocation(
        result, {output: holder.get() for output, holder in holders.items()}
    )


async def _await(awaitable: Any) -> Any:
    return await awaitable
