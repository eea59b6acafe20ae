"""RFC 9457 problem details: every 4xx/5xx answer names what went wrong."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PROBLEM_CONTENT_TYPE = "application/problem+json"
# Relative type URIs, documented one by one in docs/api.md.
_TYPE_BASE = "/problems/"


@dataclass
class Problem(Exception):
    status: int
    slug: str
    title: str
    detail: str
    field_name: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def to_dict(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": _TYPE_BASE + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.field_name is not None:
            body["field"] = self.field_name
        if instance is not None:
            body["instance"] = instance
        return body


def invalid_field(field_name: str, detail: str) -> Problem:
    return Problem(400, "invalid-field", "A field is invalid", detail, field_name)


def malformed_body(detail: str) -> Problem:
    return Problem(400, "malformed-body", "The body is not valid JSON", detail, "body")


def body_too_large(limit: int) -> Problem:
    return Problem(
        413,
        "body-too-large",
        "The body is too large",
        f"body exceeds {limit} bytes",
        "body",
    )


def unsupported_media_type(content_type: str) -> Problem:
    return Problem(
        415,
        "unsupported-media-type",
        "Unsupported media type",
        f"Content-Type must be application/json, got {content_type!r}",
        "Content-Type",
    )


def method_not_allowed(method: str, allowed: list[str]) -> Problem:
    return Problem(
        405,
        "method-not-allowed",
        "Method not allowed",
        f"{method} is not supported here; use {', '.join(allowed)}",
        "method",
        headers={"Allow": ", ".join(allowed)},
    )


def not_found(detail: str) -> Problem:
    return Problem(404, "not-found", "Not found", detail)


def precondition_failed(detail: str) -> Problem:
    return Problem(
        412, "precondition-failed", "Precondition failed", detail, "If-Match"
    )


def idempotency_key_reused(detail: str) -> Problem:
    return Problem(
        422,
        "idempotency-key-reused",
        "Idempotency-Key reused",
        detail,
        "Idempotency-Key",
    )


def service_unavailable(detail: str) -> Problem:
    return Problem(
        503,
        "service-unavailable",
        "Service unavailable",
        detail,
        headers={"Retry-After": "5"},
    )
