"""Runs the ``driftline`` command line with one host name resolved to an address of the
caller's choice: a line of ``/etc/hosts`` for this process alone.

    python -m tests.resolve_as NAME ADDRESS worker --config w.toml

(as a module: run as a script, its folder would come first on the path, and
``tests/detectors`` would hide the ``detectors`` package)

The network-cut tests use it to give each worker process its own route to the broker
(its own proxy, on its own loopback address), so that one route can be cut while the
other stays up, as when one host of two loses the network."""

from __future__ import annotations

import socket
import sys
from typing import Any

from driftline.streams.cli import main


def resolve(name: str, address: str) -> None:
    """Make every lookup of ``name`` in this process answer ``address``."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real(address if host == name else host, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]


if __name__ == "__main__":
    resolve(sys.argv[1], sys.argv[2])
    sys.exit(main(sys.argv[3:]))
