"""`python -m gateway`: the experience API — HTTP/JSON (FastAPI on
uvicorn) and the gRPC edge, in one process, on the shared ServiceApp runtime."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from functools import cached_property
from pathlib import Path
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from crossdock.admin.v1 import admin_pb2_grpc, api_clients_pb2_grpc, users_pb2_grpc
from crossdock.erp.v1 import replenishment_pb2_grpc
from crossdock.ordertoship.v1 import order_to_ship_pb2_grpc
from crossdock.reconciliation.v1 import reconciliation_pb2_grpc
from crossdock.returns.v1 import returns_pb2_grpc
from services.mesh.app import ServiceApp, run

from . import http_api
from .admin_api import ApiClientServicer
from .console import site as console_site
from .console.sampler import Sampler
from .governance import Governance
from .grpc_edge import Edge, OrderToShipEdge, ReturnsEdge
from .guard import Guard
from .problems import PROBLEM_MEDIA, Problem
from .store import metadata
from .users_api import UserServicer

MIGRATIONS = Path(__file__).parent / "migrations"


class Core:
    """What the HTTP API and the gRPC edge share."""

    def __init__(self, app: ServiceApp) -> None:
        self.app = app
        self.settings = app.settings
        self.store = app.store
        self.log = app.log
        self.stopping = app.stopping
        self.governance = Governance(app.store, app.settings)

    # Downstream stubs, made on first use (channels connect lazily anyway).
    @cached_property
    def ots(self) -> Any:
        return self.app.clients.stub("ordertoship")

    @cached_property
    def returns(self) -> Any:
        return self.app.clients.stub("returns")

    @cached_property
    def wms(self) -> Any:
        return self.app.clients.wms

    @cached_property
    def tms(self) -> Any:
        return self.app.clients.tms

    @cached_property
    def erp(self) -> Any:
        return self.app.clients.erp

    @cached_property
    def replenishment(self) -> Any:
        return self.app.clients.stub_of("erp", replenishment_pb2_grpc.ReplenishmentServiceStub,
                                        "crossdock.erp.v1.ReplenishmentService")

    @cached_property
    def dead_letters(self) -> Any:
        # Served by every service (the dead-letter stream is shared).
        return self.app.clients.stub_of("ordertoship", admin_pb2_grpc.DeadLetterServiceStub,
                                        "crossdock.admin.v1.DeadLetterService")

    @cached_property
    def reconciliation(self) -> Any:
        return self.app.clients.stub_of("returns", reconciliation_pb2_grpc.ReconciliationServiceStub,
                                        "crossdock.reconciliation.v1.ReconciliationService")


class ProblemH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, answering a request it cannot parse (malformed
    request line or headers) with a problem+json 400 instead of text/plain: the
    one error shape of the API, as far as the server controls it."""

    def send_400_response(self, msg: str) -> None:
        body = json.dumps(Problem(400, "malformed-request", msg).body()).encode()
        headers = [(b"content-type", PROBLEM_MEDIA.encode()), (b"content-length", str(len(body)).encode()),
                   (b"connection", b"close")]
        for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                      h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self.transport.close()


class _Server(uvicorn.Server):
    # The ServiceApp owns SIGTERM/SIGINT (graceful stop of both transports).
    @contextlib.contextmanager
    def capture_signals(self):
        yield

    def install_signal_handlers(self) -> None:  # older uvicorn
        pass


def bind_http(app: ServiceApp) -> socket.socket:
    s = app.settings
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: no Nagle delay between headers and body.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((s.gateway_http_host, s.gateway_http_port))
    sock.listen(1024)
    sock.setblocking(False)
    port = sock.getsockname()[1]
    (s.resolved_data_dir / f"gateway{s.instance}-http.port").write_text(str(port))
    return sock


def bootstrap(app: ServiceApp, guard: Guard) -> None:
    core = Core(app)
    guard.bind(core.governance)
    edge = Edge(core)
    app.add_servicer(order_to_ship_pb2_grpc.add_OrderToShipServiceServicer_to_server,
                     OrderToShipEdge(edge), "crossdock.ordertoship.v1.OrderToShipService")
    app.add_servicer(returns_pb2_grpc.add_ReturnsServiceServicer_to_server,
                     ReturnsEdge(edge), "crossdock.returns.v1.ReturnsService")
    app.add_servicer(api_clients_pb2_grpc.add_ApiClientServiceServicer_to_server,
                     ApiClientServicer(app.store), "crossdock.admin.v1.ApiClientService")
    app.add_servicer(users_pb2_grpc.add_UserServiceServicer_to_server,
                     UserServicer(app.store), "crossdock.admin.v1.UserService")
    fastapi_app = http_api.create_app(core)
    # The operations console, on the same process and the same downstream APIs.
    core.sampler = Sampler(app.settings)
    app.add_loop(core.sampler.run)
    fastapi_app.mount("/console", console_site.build(core))

    async def http_server(stopping: asyncio.Event) -> None:
        sock = bind_http(app)
        config = uvicorn.Config(fastapi_app, log_config=None, access_log=False, lifespan="off",
                                server_header=False, timeout_graceful_shutdown=5, http=ProblemH11Protocol)
        server = _Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        app.log.info("gateway.http.started", port=sock.getsockname()[1])
        await stopping.wait()
        server.should_exit = True
        await task

    app.add_loop(http_server)


def main() -> None:
    # Every RPC of the gRPC port (the edge's, the runtime's DeadLetterService,
    # health, reflection) goes through the guard's table.
    guard = Guard()
    run("gateway", metadata, MIGRATIONS, lambda app: bootstrap(app, guard), interceptors=[guard])


if __name__ == "__main__":
    main()
