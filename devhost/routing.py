"""Route templates as the Functions host understands them.

Supports literal segments, ``{name}`` parameters, a few inline constraints
(``{id:guid}``, ``:int``, ``:long``, ``:alpha``, ``:bool``, ``:double``),
optional parameters ``{name?}`` and a trailing catch-all ``{*rest}``.
When several templates match a path, the most specific wins, segment by
segment: a literal beats a constrained parameter, which beats a plain one.
Literals match case-insensitively, as in ASP.NET routing.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

Target = TypeVar("Target")

_PARAMETER = re.compile(r"^\{(?P<star>\*)?(?P<name>[A-Za-z_]\w*)(?P<rest>[^}]*)\}$")


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _is_int(value: str) -> bool:
    return re.fullmatch(r"-?\d+", value) is not None


def _is_double(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


_CONSTRAINTS: dict[str, Callable[[str], bool]] = {
    "guid": _is_guid,
    "int": _is_int,
    "long": _is_int,
    "alpha": lambda value: value.isascii() and value.isalpha(),
    "bool": lambda value: value.lower() in ("true", "false"),
    "double": _is_double,
    "decimal": _is_double,
    "float": _is_double,
}

# Specificity of a segment kind; lower is more specific.
_LITERAL, _CONSTRAINED, _PLAIN, _OPTIONAL, _CATCH_ALL = range(5)


class RouteTemplateError(ValueError):
    """A route template uses syntax this host does not understand."""


@dataclass(frozen=True)
class _Segment:
    kind: int
    text: str  # the literal, or the parameter name
    checks: tuple[Callable[[str], bool], ...] = ()

    def accepts(self, value: str) -> bool:
        if self.kind == _LITERAL:
            return value.lower() == self.text.lower()
        return all(check(value) for check in self.checks)


def _parse_segment(raw: str, template: str) -> _Segment:
    match = _PARAMETER.match(raw)
    if match is None:
        if "{" in raw or "}" in raw:
            raise RouteTemplateError(
                f"route {template!r}: mixed literal/parameter segment {raw!r} "
                "is not supported"
            )
        return _Segment(_LITERAL, raw)
    name, rest = match.group("name"), match.group("rest")
    if match.group("star"):
        return _Segment(_CATCH_ALL, name)
    optional = rest.endswith("?")
    rest = rest.removesuffix("?")
    checks = []
    for constraint in filter(None, rest.split(":")):
        constraint_name = constraint.split("(", 1)[0].lower()
        check = _CONSTRAINTS.get(constraint_name)
        if check is None:
            logger.warning(
                "Route %s: constraint %r is not checked by devhost",
                template,
                constraint,
            )
            continue
        checks.append(check)
    kind = _OPTIONAL if optional else _CONSTRAINED if checks else _PLAIN
    return _Segment(kind, name, tuple(checks))


@dataclass(frozen=True)
class RouteTemplate:
    template: str
    segments: tuple[_Segment, ...]

    @classmethod
    def parse(cls, template: str) -> RouteTemplate:
        raw_segments = [part for part in template.strip("/").split("/") if part]
        segments = tuple(_parse_segment(raw, template) for raw in raw_segments)
        for position, segment in enumerate(segments):
            last = position == len(segments) - 1
            if segment.kind == _CATCH_ALL and not last:
                raise RouteTemplateError(f"route {template!r}: catch-all not last")
            if segment.kind == _OPTIONAL and not all(
                later.kind == _OPTIONAL for later in segments[position:]
            ):
                raise RouteTemplateError(
                    f"route {template!r}: optional parameters must come last"
                )
        return cls(template, segments)

    @property
    def specificity(self) -> tuple[int, ...]:
        return tuple(segment.kind for segment in self.segments)

    def match(self, path_segments: list[str]) -> dict[str, str] | None:
        """Route parameters if the (already URL-decoded) path matches."""
        params: dict[str, str] = {}
        for position, segment in enumerate(self.segments):
            if segment.kind == _CATCH_ALL:
                params[segment.text] = "/".join(path_segments[position:])
                return params
            if position >= len(path_segments):
                return params if segment.kind == _OPTIONAL else None
            value = path_segments[position]
            if not segment.accepts(value):
                return None
            if segment.kind != _LITERAL:
                params[segment.text] = value
        if len(path_segments) > len(self.segments):
            return None
        return params


@dataclass(frozen=True)
class Route(Generic[Target]):
    template: RouteTemplate
    methods: frozenset[str]  # empty: every method
    target: Target

    def allows(self, method: str) -> bool:
        return not self.methods or method.upper() in self.methods


@dataclass(frozen=True)
class RouteMatch(Generic[Target]):
    route: Route[Target]
    params: dict[str, str]


@dataclass(frozen=True)
class MethodNotAllowed:
    allowed: frozenset[str]


class RouteTable(Generic[Target]):
    """Finds the most specific route for a path and method."""

    def __init__(self, routes: Iterable[Route[Target]]) -> None:
        # Sorted once so the first match is the most specific one.
        self._routes = sorted(routes, key=lambda route: route.template.specificity)

    def resolve(
        self, method: str, path_segments: list[str]
    ) -> RouteMatch[Target] | MethodNotAllowed | None:
        """The match, MethodNotAllowed when only other methods match, or None."""
        allowed: set[str] = set()
        for route in self._routes:
            params = route.template.match(path_segments)
            if params is None:
                continue
            if route.allows(method):
                return RouteMatch(route, params)
            allowed |= route.methods
        return MethodNotAllowed(frozenset(allowed)) if allowed else None
