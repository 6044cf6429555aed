"""A minimal HTTP/1.1 server for GET requests on the running event loop: one request per
connection, the answer from a function of the path and query. Enough for probes, metrics
and the viewer; nothing here blocks the loop for longer than writing an answer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

# (path, query string) -> (status line, body, content type)
Answer = Callable[[str, str], tuple[str, bytes, str]]


class HttpServer:
    def __init__(self, answer: Answer, host: str = "0.0.0.0", port: int = 0) -> None:
        self._answer = answer
        self._host, self._port = host, port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self._host, self._port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while await asyncio.wait_for(reader.readline(), 5) not in (b"\r\n", b"\n", b""):
                pass  # headers: nothing here needs them
            parts = request.decode("latin-1").split()
            path, _, query = (parts[1] if len(parts) >= 2 else "").partition("?")
            status, body, ctype = self._answer(path, query)
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                         "Cache-Control: no-store\r\nConnection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
