"""A local stand-in for Microsoft Graph presence and the Microsoft identity
platform, speaking their wire protocols over https on 127.0.0.1.

In-process (tests)::

    with GraphSimulator(ca_dir=tmp_path) as sim:
        tenant = sim.add_tenant(user_count=650)
        sim.urls.base_url  # GRAPH_BASE_URL

From another process::

    python -m simulators.graph --port 0 --ca-dir /tmp/sim --tenant T --users 1000

prints one line: ``GRAPH_SIMULATOR base_url=... authority_host=... ca_bundle=...``
and serves until interrupted; control it over ``/_sim/...``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from simulators.graph_counters import RecordedCall
from simulators.graph_http import make_server
from simulators.graph_identity import PRESENCE_READ_ALL
from simulators.graph_population import SimulatedPresence
from simulators.graph_service import MISSING_MODES, MISSING_OMIT, GraphService
from simulators.tls import make_loopback_tls

logger = logging.getLogger(__name__)

DEFAULT_CLIENT_ID = "11111111-2222-3333-4444-555555555555"
# A fixed, obviously fake secret for the local stand-in only.
DEFAULT_CLIENT_SECRET = "simulator-secret-not-for-production"


@dataclass(frozen=True)
class SimulatorUrls:
    base_url: str  # GRAPH_BASE_URL, e.g. https://127.0.0.1:PORT/v1.0
    authority_host: str  # GRAPH_AUTHORITY_HOST, e.g. https://127.0.0.1:PORT
    control_url: str  # https://127.0.0.1:PORT/_sim
    ca_bundle: str  # GRAPH_CA_BUNDLE: PEM of the throwaway CA


class GraphSimulator:
    """Owns one simulated Graph + identity platform and its https server.

    A default app (``client_id``/``client_secret``) is registered with the
    Presence.Read.All role; register others with :meth:`register_app`.
    """

    def __init__(
        self,
        ca_dir: str | Path,
        *,
        port: int = 0,
        seed: int = 0,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        token_lifetime_seconds: int = 3599,
        rate_limit: int = 1500,
        rate_window_seconds: float = 30.0,
        missing_users: str = MISSING_OMIT,
    ) -> None:
        self._ca_dir = Path(ca_dir)
        self._port = port
        self.client_id = client_id
        self.client_secret = client_secret
        self.service = GraphService(
            seed=seed,
            token_lifetime_seconds=token_lifetime_seconds,
            rate_limit=rate_limit,
            rate_window_seconds=rate_window_seconds,
            missing_users=missing_users,
        )
        self.service.apps.register(client_id, client_secret=client_secret)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._urls: SimulatorUrls | None = None

    # Lifecycle ------------------------------------------------------------

    def start(self) -> SimulatorUrls:
        if self._urls is not None:
            return self._urls
        tls = make_loopback_tls(self._ca_dir, "graph-simulator-ca.pem")
        self._server = make_server(self.service, tls.server_context, self._port)
        host, port = self._server.server_address[:2]
        root = f"https://{host}:{port}"
        self.service.root_url = root
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"graph-simulator-{port}",
            daemon=True,
        )
        self._thread.start()
        self._urls = SimulatorUrls(
            base_url=f"{root}/v1.0",
            authority_host=root,
            control_url=f"{root}/_sim",
            ca_bundle=str(tls.ca_bundle_path),
        )
        logger.info("graph simulator listening on %s", root)
        return self._urls

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None
        self._urls = None

    def __enter__(self) -> GraphSimulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def urls(self) -> SimulatorUrls:
        if self._urls is None:
            raise RuntimeError("the simulator is not started")
        return self._urls

    # Tenants and users ------------------------------------------------------

    def add_tenant(
        self,
        tenant_id: str | None = None,
        user_count: int = 0,
        user_ids: Iterable[str] = (),
    ) -> str:
        """Adds a tenant (a generated GUID unless given) with users; returns
        its id. Adding an existing tenant adds the users to it."""
        tenant = self.service.population.add_tenant(tenant_id)
        self.service.population.add_users(tenant, user_count, user_ids)
        return tenant

    def add_users(
        self, tenant_id: str, count: int = 0, user_ids: Iterable[str] = ()
    ) -> list[str]:
        return self.service.population.add_users(tenant_id, count, user_ids)

    def remove_users(self, tenant_id: str, user_ids: Iterable[str]) -> None:
        """The users stop existing (deleted accounts)."""
        self.service.population.remove_users(tenant_id, user_ids)

    def user_ids(self, tenant_id: str) -> list[str]:
        return self.service.population.user_ids(tenant_id)

    def presence_of(
        self, tenant_id: str, user_ids: Sequence[str]
    ) -> dict[str, SimulatedPresence]:
        """What Graph would answer now for these users (no call is counted)."""
        return self.service.population.lookup(tenant_id, user_ids)

    # Change over time ---------------------------------------------------------

    def set_change_rate(
        self, fraction: float, tick_seconds: float | None = None
    ) -> None:
        """Each tick moves ``fraction`` of every tenant's users to another
        presence; with ``tick_seconds`` a tick also passes every that many
        seconds of wall time."""
        self.service.population.set_change_rate(fraction, tick_seconds)

    def advance(self, ticks: int = 1) -> int:
        """Runs ``ticks`` ticks now; returns how many users changed."""
        return self.service.population.advance(ticks)

    # Identity ------------------------------------------------------------------

    def register_app(
        self,
        client_id: str,
        client_secret: str | None = None,
        certificate_pem: str | bytes | None = None,
        roles: Iterable[str] = (PRESENCE_READ_ALL,),
    ) -> None:
        """Registers (or replaces) an app: a secret, a certificate (PEM) whose
        key signs client assertions, or both."""
        self.service.apps.register(client_id, client_secret, certificate_pem, roles)

    def invalidate_issued_tokens(self) -> None:
        """Every access token issued so far gets 401 from now on (as if it had
        expired early); tokens issued later work."""
        self.service.tokens.revoke_issued()

    # Faults ----------------------------------------------------------------------

    def throttle_next(
        self, count: int, retry_after: int | None = 1, tenant_id: str | None = None
    ) -> None:
        """The next ``count`` presence calls (of ``tenant_id``, if given) get 429
        with ``Retry-After: retry_after`` (no header if None)."""
        self.service.faults.throttle_next(count, retry_after, tenant_id)

    def fail_next(
        self, count: int, status: int = 503, tenant_id: str | None = None
    ) -> None:
        """The next ``count`` presence calls get ``status`` (a 5xx)."""
        self.service.faults.fail_next(count, status, tenant_id)

    def set_latency_ms(self, milliseconds: float) -> None:
        """Every presence call waits this long before it is answered."""
        self.service.faults.set_latency_ms(milliseconds)

    def omit_ids(self, user_ids: Iterable[str]) -> None:
        """These ids are left out of answers until :meth:`clear_faults`."""
        self.service.faults.omit_ids(user_ids)

    def set_missing_users(self, mode: str) -> None:
        """How ids of unknown users are answered: ``"omit"`` (left out),
        ``"presence-unknown"``, or ``"reject"`` (404 for the whole call)."""
        if mode not in MISSING_MODES:
            raise ValueError(f"missing_users must be one of {MISSING_MODES}")
        self.service.missing_users = mode

    def clear_faults(self) -> None:
        self.service.faults.clear()

    # Counters ----------------------------------------------------------------------

    def count(self, endpoint: str, tenant_id: str | None = None) -> int:
        """Calls to ``"discovery"``, ``"token"`` or ``"presence"``."""
        return self.service.counters.count(endpoint, tenant_id)

    def calls(
        self, endpoint: str | None = None, tenant_id: str | None = None
    ) -> list[RecordedCall]:
        return self.service.counters.calls(endpoint, tenant_id)

    def counters(self) -> dict[str, Any]:
        return self.service.counters.snapshot()

    def reset_counters(self) -> None:
        """Forgets counted calls and the rate-limit window."""
        self.service.counters.reset()
        self.service.quota.reset()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.graph", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--ca-dir", required=True, help="folder for the CA PEM")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--client-id", default=DEFAULT_CLIENT_ID)
    parser.add_argument("--client-secret", default=DEFAULT_CLIENT_SECRET)
    parser.add_argument(
        "--tenant", action="append", default=[], help="tenant id to create (repeatable)"
    )
    parser.add_argument("--users", type=int, default=0, help="users per --tenant")
    parser.add_argument("--change-fraction", type=float, default=0.0)
    parser.add_argument("--tick-seconds", type=float, default=None)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--rate-limit", type=int, default=1500)
    parser.add_argument(
        "--missing-users",
        choices=list(MISSING_MODES),
        default=MISSING_OMIT,
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)

    simulator = GraphSimulator(
        args.ca_dir,
        port=args.port,
        seed=args.seed,
        client_id=args.client_id,
        client_secret=args.client_secret,
        rate_limit=args.rate_limit,
        missing_users=args.missing_users,
    )
    for tenant in args.tenant:
        simulator.add_tenant(tenant, user_count=args.users)
    simulator.set_change_rate(args.change_fraction, args.tick_seconds)
    simulator.set_latency_ms(args.latency_ms)
    urls = simulator.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(
        f"GRAPH_SIMULATOR base_url={urls.base_url} "
        f"authority_host={urls.authority_host} control_url={urls.control_url} "
        f"ca_bundle={urls.ca_bundle}",
        flush=True,
    )
    stop.wait()
    simulator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
