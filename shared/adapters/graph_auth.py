"""App-only tokens for Microsoft Graph: one MSAL confidential client per tenant
authority, created on first use and kept, with its token cache, for the life of
the process. Secrets, assertions and tokens never reach a log or an error."""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msal
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from requests.adapters import HTTPAdapter

from shared.settings import GraphSettings

logger = logging.getLogger(__name__)

DEFAULT_POOL_SIZE = 16
# (connect, read) seconds for every call to the identity platform and Graph.
DEFAULT_TIMEOUT: tuple[float, float] = (5.0, 30.0)

_PRIVATE_KEY_PEM = re.compile(
    r"-----BEGIN (?:RSA |EC |ENCRYPTED )?PRIVATE KEY-----.+?"
    r"-----END (?:RSA |EC |ENCRYPTED )?PRIVATE KEY-----",
    re.DOTALL,
)
_CERTIFICATE_PEM = re.compile(
    r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL
)


class GraphError(Exception):
    """A Graph or token call failed for a tenant. Messages never hold tokens."""

    def __init__(self, tenant_id: str, message: str) -> None:
        super().__init__(f"tenant {tenant_id}: {message}")
        self.tenant_id = tenant_id


class GraphAuthError(GraphError):
    """The identity platform refused a token, or Graph refused the token (401
    after a refresh, 403 for a missing permission). ``code`` is the AADSTS or
    Graph error code when one was given."""

    def __init__(
        self,
        tenant_id: str,
        message: str,
        code: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(tenant_id, message)
        self.code = code
        self.status = status


class GraphConfigurationError(ValueError):
    """Graph settings cannot produce a credential."""


def graph_scope(base_url: str) -> str:
    """``https://graph.microsoft.com/v1.0`` -> ``https://graph.microsoft.com/.default``."""
    parts = urlsplit(base_url)
    if not parts.scheme or not parts.netloc:
        raise GraphConfigurationError(
            f"GRAPH_BASE_URL is not an absolute URL: {base_url!r}"
        )
    return f"{parts.scheme}://{parts.netloc}/.default"


def build_session(
    ca_bundle: str | None, pool_size: int = DEFAULT_POOL_SIZE
) -> requests.Session:
    """A pooled session. With ``ca_bundle`` only that CA is trusted and the
    environment is ignored: requests would otherwise let REQUESTS_CA_BUNDLE
    override ``verify``."""
    session = requests.Session()
    # Retries are decided by the Graph client, not hidden inside urllib3.
    adapter = HTTPAdapter(
        pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0
    )
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    if ca_bundle:
        session.trust_env = False
        session.verify = ca_bundle
    return session


class TimeoutHttpClient:
    """What MSAL calls for http: the shared session with a timeout on every call
    (MSAL sets none on a client it is given)."""

    def __init__(self, session: requests.Session, timeout: tuple[float, float]) -> None:
        self._session = session
        self._timeout = timeout

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout)
        return self._session.get(url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout)
        return self._session.post(url, **kwargs)

    def close(self) -> None:
        """The session belongs to the Graph client, which closes it."""


@dataclass(frozen=True)
class ClientCertificate:
    private_key_pem: str
    certificate_pem: str
    sha256_thumbprint: str  # hex; not secret, logged to identify the credential

    def as_msal_credential(self) -> dict[str, str]:
        # With the public certificate and no "thumbprint", MSAL signs the
        # assertion with PS256 and an x5t#S256 header; passing a thumbprint
        # would force the legacy SHA-1 form.
        return {
            "private_key": self.private_key_pem,
            "public_certificate": self.certificate_pem,
        }


def load_client_certificate(path: str | Path) -> ClientCertificate:
    """Reads a PEM holding the private key and the certificate."""
    text = Path(path).read_text(encoding="ascii")
    key = _PRIVATE_KEY_PEM.search(text)
    cert = _CERTIFICATE_PEM.search(text)
    if key is None or cert is None:
        raise GraphConfigurationError(
            f"GRAPH_CLIENT_CERTIFICATE_PATH {path} must hold a PEM private key and "
            "a PEM certificate"
        )
    certificate = x509.load_pem_x509_certificate(cert.group(0).encode())
    return ClientCertificate(
        private_key_pem=key.group(0),
        certificate_pem=cert.group(0),
        sha256_thumbprint=certificate.fingerprint(hashes.SHA256()).hex().upper(),
    )


class AppTokenProvider:
    """Hands out app-only Graph tokens per tenant; thread-safe.

    MSAL caches each tenant's token and renews it before it expires, so most
    calls make no request at all.
    """

    def __init__(
        self,
        settings: GraphSettings,
        http_client: TimeoutHttpClient,
    ) -> None:
        if not settings.client_id:
            raise GraphConfigurationError("GRAPH_CLIENT_ID is not set")
        self._settings = settings
        self._http_client = http_client
        self._scopes = [graph_scope(settings.base_url)]
        self._credential = self._credential_from(settings)
        self._lock = threading.Lock()
        self._tenant_locks: dict[str, threading.Lock] = {}
        self._apps: dict[str, msal.ConfidentialClientApplication] = {}

    @staticmethod
    def _credential_from(settings: GraphSettings) -> str | dict[str, str]:
        if settings.client_certificate_path:
            certificate = load_client_certificate(settings.client_certificate_path)
            logger.info(
                "Graph credential: certificate with SHA-256 thumbprint %s",
                certificate.sha256_thumbprint,
            )
            return certificate.as_msal_credential()
        if settings.client_secret:
            logger.info("Graph credential: client secret")
            return settings.client_secret
        raise GraphConfigurationError(
            "set GRAPH_CLIENT_SECRET or GRAPH_CLIENT_CERTIFICATE_PATH"
        )

    def token(self, tenant_id: str) -> str:
        """A valid token for the tenant, from the cache when there is one."""
        app = self._app(tenant_id)
        result = app.acquire_token_for_client(scopes=self._scopes)
        return self._access_token(tenant_id, result)

    def refresh(self, tenant_id: str) -> str:
        """Drops the tenant's cached token and gets a new one (after Graph
        refused the cached one)."""
        app = self._app(tenant_id)
        app.remove_tokens_for_client()
        logger.info(
            "Graph token for tenant %s dropped; requesting a new one", tenant_id
        )
        result = app.acquire_token_for_client(scopes=self._scopes)
        return self._access_token(tenant_id, result)

    def _access_token(self, tenant_id: str, result: dict[str, Any] | None) -> str:
        if result and "access_token" in result:
            if result.get("token_source") == "identity_provider":
                logger.info(
                    "Graph token for tenant %s obtained from the identity platform",
                    tenant_id,
                )
            return str(result["access_token"])
        error = (result or {}).get("error") or "unknown_error"
        # Only the first line: the rest is trace ids and timestamps.
        description = str((result or {}).get("error_description") or "").splitlines()
        summary = description[0] if description else error
        logger.warning("Graph token refused for tenant %s: %s", tenant_id, summary)
        raise GraphAuthError(tenant_id, f"token request refused: {summary}", code=error)

    def _app(self, tenant_id: str) -> msal.ConfidentialClientApplication:
        app = self._apps.get(tenant_id)
        if app is not None:
            return app
        with self._lock:
            tenant_lock = self._tenant_locks.setdefault(tenant_id, threading.Lock())
        # Per-tenant lock: discovery for one tenant does not hold up others.
        with tenant_lock:
            app = self._apps.get(tenant_id)
            if app is None:
                app = self._new_app(tenant_id)
                self._apps[tenant_id] = app
            return app

    def _new_app(self, tenant_id: str) -> msal.ConfidentialClientApplication:
        authority = f"{self._settings.authority_host}/{tenant_id}"
        logger.info("creating MSAL client for authority %s", authority)
        try:
            return msal.ConfidentialClientApplication(
                self._settings.client_id,
                client_credential=self._credential,
                authority=authority,
                http_client=self._http_client,
                # The authority host is configured by the operator; skipping the
                # instance check also lets a local stand-in act as authority.
                instance_discovery=False,
            )
        except ValueError as error:
            # MSAL raises ValueError when OIDC discovery answers 4xx (unknown
            # tenant); its text holds the discovery body, which has no secrets.
            raise GraphAuthError(
                tenant_id, f"authority discovery failed: {error}"
            ) from None
