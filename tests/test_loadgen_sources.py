"""The overload's load comes from many client addresses (bench/peerload.py, bench/loadgen.py): from
one, a gateway's per-client connection cap refuses the excess before its admission control
sees it, which hid a collapse under overload (docs/performance.md, "Overload")."""

from __future__ import annotations

import asyncio

from bench.loadgen import source_addresses
from bench.peerload import overload

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


def test_loopback_targets_get_that_many_addresses_others_the_default() -> None:
    assert source_addresses("127.0.0.1", 3) == [("127.0.0.2", 0), ("127.0.0.3", 0), ("127.0.0.4", 0)]
    assert len(source_addresses("127.0.0.1", 1000)) == 250  # 127.0.0.2 … 127.0.0.251
    assert source_addresses("127.0.0.1", 1) == [None]
    assert source_addresses("10.0.0.5", 16) == [None]


async def test_the_overload_connects_from_every_source_address() -> None:
    peers: set[str] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.add(writer.get_extra_info("peername")[0])
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                await reader.readexactly(2)  # the body: "{}"
                await asyncio.sleep(0.2)  # busy: requests due meanwhile open new connections
                writer.write(ANSWER)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await overload(
            f"http://127.0.0.1:{port}/v1", b"{}", 40, 0.5, {}, deadline_ms=2000, clients=4
        )
    finally:
        server.close()
        await server.wait_closed()
    assert result["in_time"] == result["sent"] > 0
    assert peers == {"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"}
