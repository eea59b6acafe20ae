"""Throwaway TLS for loopback simulators: a private CA and a server certificate
for 127.0.0.1, so clients exercise real https with certificate checks on."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

LOOPBACK_HOST = "127.0.0.1"
DEFAULT_CA_FILE_NAME = "simulator-ca.pem"


@dataclass(frozen=True)
class LoopbackTls:
    """The CA PEM clients must trust, and the context a server wraps with."""

    ca_bundle_path: Path
    server_context: ssl.SSLContext


def make_loopback_tls(
    ca_dir: str | Path, file_name: str = DEFAULT_CA_FILE_NAME
) -> LoopbackTls:
    """Makes a fresh CA, issues a certificate for 127.0.0.1 and localhost, and
    writes the CA certificate to ``ca_dir/file_name`` (the ``GRAPH_CA_BUNDLE``).

    Each call makes a new CA: nothing trusted here outlives the test run.
    """
    ca = trustme.CA()
    server_cert = ca.issue_cert(LOOPBACK_HOST, "localhost")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(server_context)
    folder = Path(ca_dir)
    folder.mkdir(parents=True, exist_ok=True)
    ca_bundle_path = folder / file_name
    ca.cert_pem.write_to_path(str(ca_bundle_path))
    return LoopbackTls(ca_bundle_path=ca_bundle_path, server_context=server_context)
