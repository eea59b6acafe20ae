"""What the simulated identity platform and Graph answer, independent of the
HTTP server: OpenID discovery, the token endpoint and getPresencesByUserId."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt

from simulators.graph_counters import (
    DISCOVERY,
    PRESENCE,
    TOKEN,
    CallCounters,
    RecordedCall,
)
from simulators.graph_faults import FaultPlan
from simulators.graph_identity import (
    PRESENCE_ROLES,
    AccessTokenError,
    AppDirectory,
    ClientAuthError,
    TokenIssuer,
    audiences_for,
)
from simulators.graph_population import Population
from simulators.graph_quota import SlidingWindowQuota

logger = logging.getLogger(__name__)

MAX_IDS_PER_CALL = 650
PRESENCE_PATH = "/v1.0/communications/getPresencesByUserId"
# How ids of users that do not exist (any more) are answered. Graph's docs do
# not say; the default leaves them out of "value" (see docs/graph-simulator.md).
MISSING_OMIT = "omit"
MISSING_AS_UNKNOWN = "presence-unknown"
# The whole request is refused with 404 when it names an unknown user: how an
# API that validates every id would answer (Graph's documentation is silent).
MISSING_REJECT = "reject"
MISSING_MODES = (MISSING_OMIT, MISSING_AS_UNKNOWN, MISSING_REJECT)
_GUID = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
_DISCOVERY = re.compile(r"^/(?P<tenant>[^/]+)/v2\.0/\.well-known/openid-configuration$")
_TOKEN = re.compile(r"^/(?P<tenant>[^/]+)/oauth2/v2\.0/token$")
_KEYS = re.compile(r"^/(?:(?P<tenant>[^/]+)/)?discovery/v2\.0/keys$")


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _graph_error(
    status: int,
    code: str,
    message: str,
    client_request_id: str | None,
    headers: dict[str, str] | None = None,
) -> Reply:
    request_id = str(uuid.uuid4())
    body = {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": _utc_now().strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": request_id,
                "client-request-id": client_request_id or request_id,
            },
        }
    }
    return Reply(status, body, {"request-id": request_id, **(headers or {})})


def _aadsts_error(error: ClientAuthError) -> Reply:
    trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = _utc_now().strftime("%Y-%m-%d %H:%M:%SZ")
    description = (
        f"AADSTS{error.aadsts}: {error.description}\r\nTrace ID: {trace_id}\r\n"
        f"Correlation ID: {correlation_id}\r\nTimestamp: {stamp}"
    )
    body = {
        "error": error.error,
        "error_description": description,
        "error_codes": [error.aadsts],
        "timestamp": stamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": f"https://login.microsoftonline.com/error?code={error.aadsts}",
    }
    return Reply(error.status, body)


class GraphService:
    """Holds the simulated world and answers requests to it. Thread-safe: every
    part it uses guards its own state."""

    def __init__(
        self,
        *,
        seed: int = 0,
        token_lifetime_seconds: int = 3599,
        rate_limit: int = 1500,
        rate_window_seconds: float = 30.0,
        missing_users: str = MISSING_OMIT,
    ) -> None:
        if missing_users not in MISSING_MODES:
            raise ValueError(f"missing_users must be one of {MISSING_MODES}")
        self.population = Population(seed=seed)
        self.apps = AppDirectory()
        self.tokens = TokenIssuer(lifetime_seconds=token_lifetime_seconds)
        self.faults = FaultPlan()
        self.quota = SlidingWindowQuota(rate_limit, rate_window_seconds)
        self.counters = CallCounters()
        self.missing_users = missing_users
        self.root_url = ""  # https://127.0.0.1:port, set once the server listens

    # Routing ------------------------------------------------------------

    def handle(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> Reply | None:
        """The answer to a Graph or identity request; None if no such route."""
        arrived_at = time.monotonic()
        if method == "GET" and (match := _DISCOVERY.match(path)):
            return self._discovery(match["tenant"], arrived_at)
        if method == "GET" and (match := _KEYS.match(path)):
            return Reply(200, self.tokens.jwks())
        if method == "POST" and (match := _TOKEN.match(path)):
            return self._token(match["tenant"], headers, body, arrived_at)
        if method == "POST" and path == PRESENCE_PATH:
            return self._presence(headers, body, arrived_at)
        return None

    # Identity -----------------------------------------------------------

    def _discovery(self, tenant_id: str, arrived_at: float) -> Reply:
        if not self.population.has_tenant(tenant_id):
            reply = _aadsts_error(
                ClientAuthError(
                    400, "invalid_tenant", 90002, f"Tenant '{tenant_id}' not found."
                )
            )
        else:
            base = f"{self.root_url}/{tenant_id}"
            reply = Reply(
                200,
                {
                    "token_endpoint": f"{base}/oauth2/v2.0/token",
                    "token_endpoint_auth_methods_supported": [
                        "client_secret_post",
                        "private_key_jwt",
                        "client_secret_basic",
                    ],
                    "jwks_uri": f"{base}/discovery/v2.0/keys",
                    "response_modes_supported": ["query", "fragment", "form_post"],
                    "subject_types_supported": ["pairwise"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "response_types_supported": ["code", "id_token", "code id_token"],
                    "scopes_supported": [
                        "openid",
                        "profile",
                        "email",
                        "offline_access",
                    ],
                    "issuer": f"{base}/v2.0",
                    "request_uri_parameter_supported": False,
                    "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                    "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                    "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                    "tenant_region_scope": "EU",
                    "cloud_instance_name": "microsoftonline.com",
                    "msgraph_host": "graph.microsoft.com",
                },
            )
        self.counters.record(
            RecordedCall(DISCOVERY, tenant_id, reply.status, 0, arrived_at)
        )
        return reply

    def _token(
        self, tenant_id: str, headers: Mapping[str, str], body: bytes, arrived_at: float
    ) -> Reply:
        reply = self._token_reply(tenant_id, headers, body)
        self.counters.record(
            RecordedCall(TOKEN, tenant_id, reply.status, 0, arrived_at)
        )
        logger.debug("token request for tenant %s: %s", tenant_id, reply.status)
        return reply

    def _token_reply(
        self, tenant_id: str, headers: Mapping[str, str], body: bytes
    ) -> Reply:
        from urllib.parse import parse_qsl

        form = dict(parse_qsl(body.decode("utf-8", "replace")))
        try:
            if not self.population.has_tenant(tenant_id):
                raise ClientAuthError(
                    400, "invalid_request", 90002, f"Tenant '{tenant_id}' not found."
                )
            if form.get("grant_type") != "client_credentials":
                raise ClientAuthError(
                    400,
                    "unsupported_grant_type",
                    70003,
                    "The app requested an unsupported grant type.",
                )
            scope = form.get("scope", "")
            if not scope.endswith("/.default") or " " in scope.strip():
                raise ClientAuthError(
                    400,
                    "invalid_scope",
                    1002012,
                    f"The provided value for scope {scope} is not valid. Client "
                    "credential flows must have a scope value with /.default "
                    "suffixed to the resource identifier.",
                )
            token_endpoint = f"{self.root_url}/{tenant_id}/oauth2/v2.0/token"
            app = self.apps.authenticate(form, token_endpoint)
        except ClientAuthError as error:
            return _aadsts_error(error)
        audience = scope.strip().removesuffix("/.default")
        token = self.tokens.issue(
            tenant_id, app, audience, issuer=f"https://sts.windows.net/{tenant_id}/"
        )
        lifetime = self.tokens.lifetime_seconds
        return Reply(
            200,
            {
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": token,
            },
            {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"},
        )

    # Graph --------------------------------------------------------------

    def _presence(
        self, headers: Mapping[str, str], body: bytes, arrived_at: float
    ) -> Reply:
        latency = self.faults.latency_seconds
        if latency:
            time.sleep(latency)  # the slow Graph a benchmark asked for
        tenant_id: str | None = None
        id_count = 0
        client_request_id = headers.get("client-request-id")
        try:
            claims = self._authorize(headers.get("Authorization", ""))
            tenant_id = claims["tid"]
            ids = self._requested_ids(body)
            id_count = len(ids)
            reply = self._throttled_or_failed(claims, tenant_id, client_request_id)
            if reply is None:
                reply = Reply(200, self._presence_body(tenant_id, ids))
        except _GraphRefusal as refusal:
            # Refused tokens are still counted against the tenant they name.
            tenant_id = tenant_id or _unverified_tenant(
                headers.get("Authorization", "")
            )
            reply = _graph_error(
                refusal.status, refusal.code, refusal.message, client_request_id
            )
        self.counters.record(
            RecordedCall(PRESENCE, tenant_id, reply.status, id_count, arrived_at)
        )
        return reply

    def _authorize(self, authorization: str) -> dict[str, Any]:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _GraphRefusal(
                401, "InvalidAuthenticationToken", "Access token is empty."
            )
        try:
            claims = self.tokens.verify(token.strip(), audiences_for(self.root_url))
        except AccessTokenError as error:
            raise _GraphRefusal(401, "InvalidAuthenticationToken", str(error)) from None
        if not self.population.has_tenant(claims["tid"]):
            raise _GraphRefusal(
                401,
                "InvalidAuthenticationToken",
                "Access token validation failure: unknown tenant.",
            )
        if not PRESENCE_ROLES.intersection(claims.get("roles") or ()):
            raise _GraphRefusal(
                403, "Forbidden", "Insufficient privileges to complete the operation."
            )
        return claims

    @staticmethod
    def _requested_ids(body: bytes) -> list[str]:
        try:
            payload = json.loads(body or b"null")
        except ValueError:
            raise _GraphRefusal(
                400, "BadRequest", "Unable to read JSON request payload."
            ) from None
        ids = payload.get("ids") if isinstance(payload, dict) else None
        if not isinstance(ids, list) or not ids:
            raise _GraphRefusal(
                400,
                "BadRequest",
                "The request body must contain a non-empty 'ids' array.",
            )
        if len(ids) > MAX_IDS_PER_CALL:
            raise _GraphRefusal(
                400,
                "BadRequest",
                f"The number of ids ({len(ids)}) exceeds the limit of "
                f"{MAX_IDS_PER_CALL}.",
            )
        for user_id in ids:
            if not isinstance(user_id, str) or not _GUID.match(user_id):
                raise _GraphRefusal(
                    400, "BadRequest", f"Invalid user id '{user_id}': expected a GUID."
                )
        return [user_id.lower() for user_id in ids]

    def _throttled_or_failed(
        self, claims: Mapping[str, Any], tenant_id: str, client_request_id: str | None
    ) -> Reply | None:
        wait = self.quota.admit(str(claims.get("appid")), tenant_id)
        if wait is not None:
            return _graph_error(
                429,
                "TooManyRequests",
                "Too many requests; retry after the given time.",
                client_request_id,
                {"Retry-After": str(wait)},
            )
        failure = self.faults.take_failure(tenant_id)
        if failure is None:
            return None
        if failure.status == 429:
            extra = (
                {}
                if failure.retry_after_seconds is None
                else {"Retry-After": str(failure.retry_after_seconds)}
            )
            return _graph_error(
                429,
                "TooManyRequests",
                "Too many requests; retry after the given time.",
                client_request_id,
                extra,
            )
        return _graph_error(
            failure.status,
            "ServiceNotAvailable" if failure.status == 503 else "InternalServerError",
            "The service is temporarily unavailable.",
            client_request_id,
        )

    def _presence_body(self, tenant_id: str, ids: list[str]) -> dict[str, Any]:
        found = self.population.lookup(tenant_id, ids)
        if self.missing_users == MISSING_REJECT:
            unknown = [user_id for user_id in ids if user_id not in found]
            if unknown:
                raise _GraphRefusal(
                    404, "ItemNotFound", f"User '{unknown[0]}' was not found."
                )
        omitted = self.faults.omitted_ids()
        value: list[dict[str, Any]] = []
        for user_id in dict.fromkeys(ids):  # Graph answers each id once
            if user_id in omitted:
                continue
            presence = found.get(user_id)
            if presence is None and self.missing_users == MISSING_OMIT:
                continue
            value.append(
                {
                    "id": user_id,
                    "availability": presence.availability
                    if presence
                    else "PresenceUnknown",
                    "activity": presence.activity if presence else "PresenceUnknown",
                    "statusMessage": None,
                    "outOfOfficeSettings": {
                        "message": None,
                        "isOutOfOffice": bool(
                            presence and presence.activity == "OutOfOffice"
                        ),
                    },
                    "sequenceNumber": presence.sequence_number if presence else None,
                }
            )
        return {
            "@odata.context": (
                f"{self.root_url}/v1.0/$metadata#Collection(microsoft.graph.presence)"
            ),
            "value": value,
        }


def _unverified_tenant(authorization: str) -> str | None:
    try:
        claims = jwt.decode(
            authorization.partition(" ")[2].strip(), options={"verify_signature": False}
        )
    except jwt.PyJWTError:
        return None
    tenant = claims.get("tid")
    return tenant if isinstance(tenant, str) else None


class _GraphRefusal(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
