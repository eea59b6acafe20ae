"""The simulator's control API under ``/_sim/...``: the same controls the Python
API offers, as JSON over the simulator's own https port, for runs in other
processes (local run command, benchmarks). Loopback only, no authentication."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from simulators.graph_population import UnknownTenantError
from simulators.graph_service import GraphService, Reply

CONTROL_PREFIX = "/_sim"
_TENANT_USERS = re.compile(
    r"^/_sim/tenants/(?P<tenant>[^/]+)/users(?P<remove>/remove)?$"
)


class ControlError(ValueError):
    """A control request that cannot be carried out (400)."""


def handle_control(
    service: GraphService, method: str, path: str, body: bytes
) -> Reply | None:
    """Answers a ``/_sim`` request; None if the route does not exist."""
    if not path.startswith(CONTROL_PREFIX + "/"):
        return None
    try:
        payload = json.loads(body) if body else {}
        if not isinstance(payload, dict):
            raise ControlError("the body must be a JSON object")
        if match := _TENANT_USERS.match(path):
            return _tenant_users(
                service, method, match["tenant"], bool(match["remove"]), payload
            )
        action = _ACTIONS.get((method, path.removeprefix(CONTROL_PREFIX)))
        if action is None:
            return None
        return Reply(200, action(service, payload))
    except UnknownTenantError as error:
        return Reply(404, {"error": f"unknown tenant {error.args[0]}"})
    except (ControlError, ValueError, TypeError, KeyError) as error:
        return Reply(400, {"error": f"{type(error).__name__}: {error}"})


def _tenant_users(
    service: GraphService,
    method: str,
    tenant_id: str,
    remove: bool,
    payload: dict[str, Any],
) -> Reply | None:
    population = service.population
    if method == "GET" and not remove:
        return Reply(200, {"user_ids": population.user_ids(tenant_id)})
    if method != "POST":
        return None
    if remove:
        population.remove_users(tenant_id, payload["user_ids"])
        return Reply(200, {"removed": len(payload["user_ids"])})
    added = population.add_users(
        tenant_id, int(payload.get("count", 0)), payload.get("user_ids", ())
    )
    return Reply(200, {"user_ids": added})


def _add_tenant(service: GraphService, payload: dict[str, Any]) -> dict[str, Any]:
    tenant_id = service.population.add_tenant(payload.get("tenant_id"))
    added = service.population.add_users(
        tenant_id, int(payload.get("user_count", 0)), payload.get("user_ids", ())
    )
    return {"tenant_id": tenant_id, "user_ids": added}


def _register_app(service: GraphService, payload: dict[str, Any]) -> dict[str, Any]:
    service.apps.register(
        payload["client_id"],
        client_secret=payload.get("client_secret"),
        certificate_pem=payload.get("certificate_pem"),
        roles=payload.get("roles", ["Presence.Read.All"]),
    )
    return {"client_id": payload["client_id"]}


def _change_rate(service: GraphService, payload: dict[str, Any]) -> dict[str, Any]:
    tick_seconds = payload.get("tick_seconds")
    service.population.set_change_rate(
        float(payload["fraction"]),
        None if tick_seconds is None else float(tick_seconds),
    )
    return {"fraction": payload["fraction"], "tick_seconds": tick_seconds}


def _tick(service: GraphService, payload: dict[str, Any]) -> dict[str, Any]:
    changed = service.population.advance(int(payload.get("count", 1)))
    return {"changed": changed, "ticks": service.population.ticks}


def _throttle(service: GraphService, payload: dict[str, Any]) -> dict[str, Any]:
    retry_after = payload.get("retry_after", 1)
    service.faults.throttle_next(
        int(payload["count"]),
        None if retry_after is None else int(retry_after),
        payload.get("tenant_id"),
    )
    return {"ok": True}


def _unavailable(service: GraphService, payload: dict[str, Any]) -> dict[str, Any]:
    status = int(payload.get("status", 503))
    if not 500 <= status <= 599:
        raise ControlError("status must be a 5xx")
    service.faults.fail_next(int(payload["count"]), status, payload.get("tenant_id"))
    return {"ok": True}


def _latency(service: GraphService, payload: dict[str, Any]) -> dict[str, Any]:
    service.faults.set_latency_ms(float(payload["ms"]))
    return {"ok": True}


def _omit(service: GraphService, payload: dict[str, Any]) -> dict[str, Any]:
    service.faults.omit_ids(payload["user_ids"])
    return {"ok": True}


def _invalidate_tokens(
    service: GraphService, payload: dict[str, Any]
) -> dict[str, Any]:
    service.tokens.revoke_issued()
    return {"ok": True}


def _clear_faults(service: GraphService, payload: dict[str, Any]) -> dict[str, Any]:
    service.faults.clear()
    return {"ok": True}


def _counters(service: GraphService, payload: dict[str, Any]) -> dict[str, Any]:
    return service.counters.snapshot()


def _calls(service: GraphService, payload: dict[str, Any]) -> dict[str, Any]:
    return {"calls": [call.to_json() for call in service.counters.calls()]}


def _reset_counters(service: GraphService, payload: dict[str, Any]) -> dict[str, Any]:
    service.counters.reset()
    service.quota.reset()
    return {"ok": True}


def _health(service: GraphService, payload: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "tenants": service.population.tenant_ids()}


_ACTIONS: dict[
    tuple[str, str], Callable[[GraphService, dict[str, Any]], dict[str, Any]]
] = {
    ("GET", "/health"): _health,
    ("POST", "/tenants"): _add_tenant,
    ("POST", "/apps"): _register_app,
    ("POST", "/change-rate"): _change_rate,
    ("POST", "/tick"): _tick,
    ("POST", "/faults/throttle"): _throttle,
    ("POST", "/faults/unavailable"): _unavailable,
    ("POST", "/faults/latency"): _latency,
    ("POST", "/faults/omit"): _omit,
    ("POST", "/faults/invalidate-tokens"): _invalidate_tokens,
    ("POST", "/faults/clear"): _clear_faults,
    ("GET", "/counters"): _counters,
    ("GET", "/calls"): _calls,
    ("POST", "/counters/reset"): _reset_counters,
}
