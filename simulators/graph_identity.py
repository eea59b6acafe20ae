"""The identity side of the simulator: registered apps, client authentication at
the token endpoint (secret or certificate assertion) and the access tokens it
signs and later verifies."""

from __future__ import annotations

import base64
import hmac
import itertools
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa

PRESENCE_READ_ALL = "Presence.Read.All"
PRESENCE_ROLES = frozenset({PRESENCE_READ_ALL, "Presence.ReadWrite.All"})
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# Graph's well-known application id, accepted as audience like real Graph does.
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"


class ClientAuthError(Exception):
    """A token request the identity platform refuses; fields follow AADSTS."""

    def __init__(self, status: int, error: str, aadsts: int, description: str):
        super().__init__(description)
        self.status = status
        self.error = error
        self.aadsts = aadsts
        self.description = description


class AccessTokenError(Exception):
    """A bearer token Graph refuses."""


@dataclass
class AppRegistration:
    client_id: str
    client_secret: str | None = None
    roles: tuple[str, ...] = (PRESENCE_READ_ALL,)
    # base64url SHA-256 thumbprint -> certificate, as in the x5t#S256 header.
    certificates: dict[str, x509.Certificate] = field(default_factory=dict)
    # base64url SHA-1 thumbprint -> certificate, for x5t (legacy) assertions.
    legacy_certificates: dict[str, x509.Certificate] = field(default_factory=dict)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class AppDirectory:
    """Apps allowed to ask for tokens, valid in every simulated tenant (a
    multi-tenant app consented everywhere)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._apps: dict[str, AppRegistration] = {}

    def register(
        self,
        client_id: str,
        client_secret: str | None = None,
        certificate_pem: str | bytes | None = None,
        roles: Iterable[str] = (PRESENCE_READ_ALL,),
    ) -> None:
        app = AppRegistration(client_id, client_secret, tuple(roles))
        if certificate_pem is not None:
            pem = (
                certificate_pem.encode()
                if isinstance(certificate_pem, str)
                else certificate_pem
            )
            cert = x509.load_pem_x509_certificate(pem)
            app.certificates[_b64url(cert.fingerprint(hashes.SHA256()))] = cert
            app.legacy_certificates[_b64url(cert.fingerprint(hashes.SHA1()))] = cert
        with self._lock:
            self._apps[client_id] = app

    def authenticate(
        self, form: Mapping[str, str], token_endpoint: str
    ) -> AppRegistration:
        """Checks the client credentials of a token request; returns the app."""
        client_id = form.get("client_id", "")
        with self._lock:
            app = self._apps.get(client_id)
        if app is None:
            raise ClientAuthError(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the "
                "directory.",
            )
        secret = form.get("client_secret")
        assertion = form.get("client_assertion")
        if secret is not None:
            if app.client_secret is None or not hmac.compare_digest(
                secret.encode(), app.client_secret.encode()
            ):
                raise ClientAuthError(
                    401,
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided. Ensure the secret being sent "
                    "in the request is the client secret value, not the client "
                    f"secret ID, for a secret added to app '{client_id}'.",
                )
            return app
        if assertion is not None:
            self._verify_assertion(app, form, assertion, token_endpoint)
            return app
        raise ClientAuthError(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: "
            "'client_assertion' or 'client_secret'.",
        )

    @staticmethod
    def _verify_assertion(
        app: AppRegistration,
        form: Mapping[str, str],
        assertion: str,
        token_endpoint: str,
    ) -> None:
        if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
            raise ClientAuthError(
                400, "invalid_request", 50027, "Invalid client_assertion_type."
            )
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError as error:
            raise ClientAuthError(
                401, "invalid_client", 50027, f"Invalid JWT token: {error}"
            ) from None
        # Thumbprints are compared without base64 padding: MSAL keeps it,
        # RFC 7515 leaves it out.
        cert = app.certificates.get(
            str(header.get("x5t#S256", "")).rstrip("=")
        ) or app.legacy_certificates.get(str(header.get("x5t", "")).rstrip("="))
        if cert is None:
            raise ClientAuthError(
                401,
                "invalid_client",
                700027,
                "Client assertion failed signature validation: the key was not "
                f"found among the certificates of app '{app.client_id}'.",
            )
        try:
            claims = jwt.decode(
                assertion,
                cert.public_key(),  # type: ignore[arg-type]
                algorithms=["PS256", "RS256"],
                audience=token_endpoint,
                issuer=app.client_id,
                options={"require": ["exp", "aud", "iss", "sub"]},
            )
        except jwt.PyJWTError as error:
            raise ClientAuthError(
                401,
                "invalid_client",
                700027,
                f"Client assertion failed signature validation: {error}",
            ) from None
        if claims.get("sub") != app.client_id:
            raise ClientAuthError(
                401, "invalid_client", 700021, "Client assertion subject mismatch."
            )


class TokenIssuer:
    """Signs access tokens (RS256) and verifies them for the Graph side."""

    def __init__(self, lifetime_seconds: int = 3599) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.key_id = uuid.uuid4().hex
        self.lifetime_seconds = lifetime_seconds
        self._serials = itertools.count(1)
        self._lock = threading.Lock()
        self._last_serial = 0
        # Tokens with a serial at or below this were invalidated on request.
        self._revoked_through = 0

    def issue(
        self, tenant_id: str, app: AppRegistration, audience: str, issuer: str
    ) -> str:
        with self._lock:
            serial = next(self._serials)
            self._last_serial = serial
        now = int(time.time())
        claims = {
            "aud": audience,
            "iss": issuer,
            "iat": now,
            "nbf": now,
            "exp": now + self.lifetime_seconds,
            "tid": tenant_id,
            "appid": app.client_id,
            "azp": app.client_id,
            "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, app.client_id)),
            "roles": list(app.roles),
            "idtyp": "app",
            "ver": "1.0",
            "uti": str(serial),
        }
        return jwt.encode(
            claims, self._key, algorithm="RS256", headers={"kid": self.key_id}
        )

    def revoke_issued(self) -> None:
        """Every token issued so far is refused from now on."""
        with self._lock:
            self._revoked_through = self._last_serial

    def verify(self, token: str, audiences: Iterable[str]) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key.public_key(),
                algorithms=["RS256"],
                audience=list(audiences),
                options={"require": ["exp", "tid", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise AccessTokenError(
                "Lifetime validation failed, the token is expired."
            ) from None
        except jwt.PyJWTError as error:
            raise AccessTokenError(
                f"Access token validation failure: {error}"
            ) from None
        with self._lock:
            revoked = int(claims.get("uti", "0")) <= self._revoked_through
        if revoked:
            raise AccessTokenError("Lifetime validation failed, the token is expired.")
        return claims

    def jwks(self) -> dict[str, Any]:
        public = jwt.algorithms.RSAAlgorithm.to_jwk(
            self._key.public_key(), as_dict=True
        )
        return {"keys": [{**public, "kid": self.key_id, "use": "sig", "alg": "RS256"}]}


def audiences_for(graph_root: str) -> tuple[str, ...]:
    """Audiences Graph accepts: its own root, the public root, or its app id."""
    return (graph_root, "https://graph.microsoft.com", GRAPH_APP_ID)
