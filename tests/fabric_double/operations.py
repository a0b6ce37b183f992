"""A peer's operations endpoint (``/healthz``, ``/metrics``) for the simulated peers.

TEST DOUBLE: part of ``tests.fabric_double``, which stands in for Fabric peers until the Fabric binaries
can be built here. Real peers serve health and Prometheus metrics on their operations port; the
double answers the two requests TwinLedger makes there (``twinledger status`` and the dashboard read
``ledger_blockchain_height``) so that tools reading a peer's height work against it unchanged.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable


def _reply(status: str, body: bytes, content_type: str) -> bytes:
    head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode() + body


async def serve_operations(port: int, channel: str, height: Callable[[], int]) -> asyncio.Server:
    """Serve GET /healthz and GET /metrics on 127.0.0.1:port until the returned server is closed."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), timeout=5)
            while (await asyncio.wait_for(reader.readline(), timeout=5)) not in (b"\r\n", b"\n", b""):
                pass  # headers are not needed
            parts = request_line.decode("latin-1").split()
            path = parts[1] if len(parts) >= 2 else ""
            if path == "/healthz":
                writer.write(_reply("200 OK", json.dumps({"status": "OK"}).encode(), "application/json"))
            elif path == "/metrics":
                text = f'ledger_blockchain_height{{channel="{channel}"}} {height()}\n'
                writer.write(_reply("200 OK", text.encode(), "text/plain; version=0.0.4"))
            else:
                writer.write(_reply("404 Not Found", b"not found\n", "text/plain"))
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port)
