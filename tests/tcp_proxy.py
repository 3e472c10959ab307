"""A TCP proxy of the tests' own between clients and the broker, that can be cut.

`cut()` closes every connection and refuses new ones (the network went away);
`restore()` accepts again. Loopback only."""

from __future__ import annotations

import asyncio
import contextlib

CHUNK_BYTES = 65_536


class TcpProxy:
    """Forwards ``listen_host:listen_port`` to ``127.0.0.1:target_port``."""

    def __init__(self, listen_port: int, target_port: int, listen_host: str = "127.0.0.1") -> None:
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.target_port = target_port
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.connections = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, self.listen_host, self.listen_port)

    async def cut(self) -> None:
        """Stop accepting and drop every open connection."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()

    async def restore(self) -> None:
        await self.start()

    async def stop(self) -> None:
        await self.cut()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.writers |= {writer, up_writer}
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        self.writers -= {writer, up_writer}

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(CHUNK_BYTES):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                writer.transport.abort()
