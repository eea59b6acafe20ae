"""Start and stop a throwaway Azurite (blob, queue, table) for tests and local runs.

Azurite is installed from the repository's ``package.json`` into
``node_modules``; this module never installs anything itself.
"""

from __future__ import annotations

import logging
import re
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
AZURITE_BIN = REPO_ROOT / "node_modules" / ".bin" / "azurite"

# The well-known development account every Azurite and Storage Emulator accepts.
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
    "K1SZFPTOtr/KBHBeksoGMGw=="
)

_LISTENING = re.compile(
    r"Azurite (Blob|Queue|Table) service is successfully listening at "
    r"http://[^:]+:(\d+)"
)


class AzuriteError(RuntimeError):
    """Azurite could not be started."""


@dataclass(frozen=True)
class AzuriteEndpoints:
    host: str
    blob_port: int
    queue_port: int
    table_port: int

    @property
    def connection_string(self) -> str:
        base = f"http://{self.host}"
        return (
            "DefaultEndpointsProtocol=http;"
            f"AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
            f"BlobEndpoint={base}:{self.blob_port}/{DEV_ACCOUNT};"
            f"QueueEndpoint={base}:{self.queue_port}/{DEV_ACCOUNT};"
            f"TableEndpoint={base}:{self.table_port}/{DEV_ACCOUNT};"
        )


class Azurite:
    """One Azurite process; ports 0 let the OS pick free ones."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        blob_port: int = 0,
        queue_port: int = 0,
        table_port: int = 0,
        location: Path | None = None,
    ) -> None:
        self._args = [
            str(AZURITE_BIN),
            "--blobHost", host, "--queueHost", host, "--tableHost", host,
            "--blobPort", str(blob_port),
            "--queuePort", str(queue_port),
            "--tablePort", str(table_port),
            "--skipApiVersionCheck",
            "--disableTelemetry",
        ]  # fmt: skip
        # In-memory persistence and --location exclude each other.
        if location is None:
            self._args.append("--inMemoryPersistence")
        else:
            self._args += ["--location", str(location)]
        self._host = host
        self._process: subprocess.Popen[str] | None = None
        self.endpoints: AzuriteEndpoints | None = None

    def start(self, timeout: float = 30.0) -> AzuriteEndpoints:
        if not AZURITE_BIN.exists():
            raise AzuriteError(
                f"{AZURITE_BIN} is missing: run 'npm ci' in {REPO_ROOT} first"
            )
        self._process = subprocess.Popen(
            self._args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO_ROOT,
            # Its own session: a terminal's Ctrl-C reaches the run command,
            # which stops Azurite last, after the host has finished its work.
            start_new_session=True,
        )
        ports: dict[str, int] = {}
        ready = threading.Event()
        output: list[str] = []

        def read_output() -> None:
            assert self._process is not None and self._process.stdout is not None
            for line in self._process.stdout:
                output.append(line)
                match = _LISTENING.search(line)
                if match:
                    ports[match.group(1)] = int(match.group(2))
                    if len(ports) == 3:
                        ready.set()
            ready.set()  # process ended: unblock the waiter

        threading.Thread(target=read_output, daemon=True).start()
        ready.wait(timeout)
        if len(ports) != 3:
            self.stop()
            raise AzuriteError(
                "Azurite did not start listening:\n" + "".join(output[-20:])
            )
        self.endpoints = AzuriteEndpoints(
            self._host, ports["Blob"], ports["Queue"], ports["Table"]
        )
        logger.info("Azurite listening: %s", self.endpoints)
        return self.endpoints

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def __enter__(self) -> AzuriteEndpoints:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
