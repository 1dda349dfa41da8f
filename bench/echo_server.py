"""A raw grpc.aio echo server (bytes in, bytes out, no interceptors): the floor
a unary call costs on this machine. ``python -m bench.echo_server PORT_FILE``
binds a free port, writes it to PORT_FILE and serves until SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import grpc

METHOD = "/bench.Echo/Echo"


async def _echo(request: bytes, context) -> bytes:
    return request


async def serve(port_file: Path) -> None:
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(port))
    tmp.rename(port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0.5)


if __name__ == "__main__":
    asyncio.run(serve(Path(sys.argv[1])))
