"""How every `crossdock` command reaches the mesh: through its public gRPC APIs
only, with stubs built by ``Stubs`` from the runtime's channel factory
(``services.mesh.grpcutil.client_channel``: one channel per service address,
several replicas "h:p,h:p" round robin, UNAVAILABLE retried), plus the shared
console, error printing and money formatting."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from functools import cached_property
from typing import Any

import grpc
import typer
from google.rpc import error_details_pb2
from rich.console import Console

from services.mesh import operator_token
from services.mesh.config import Settings, load_settings
from services.mesh.errors import status_details

console = Console()

# Exports stream large messages.
MAX_RECEIVE_BYTES = 64 << 20

# The APIs the CLI calls at each service's address (their calls are retried on UNAVAILABLE).
APIS = {
    "erp": ["crossdock.erp.v1.ErpService", "crossdock.erp.v1.ReplenishmentService"],
    "wms": ["crossdock.wms.v1.WmsService"],
    "tms": ["crossdock.tms.v1.TmsService"],
    "ordertoship": ["crossdock.ordertoship.v1.OrderToShipService", "crossdock.admin.v1.DeadLetterService"],
    "returns": ["crossdock.returns.v1.ReturnsService", "crossdock.reconciliation.v1.ReconciliationService"],
    "gateway": ["crossdock.admin.v1.ApiClientService", "crossdock.admin.v1.UserService"],
}


class Stubs:
    """Every stub the CLI uses, each on the channel of its service's address
    (CROSSDOCK_<SERVICE>_ADDR), opened on first use; ``async with Stubs() as s``."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()
        self._channels: dict[str, grpc.aio.Channel] = {}

    def channel(self, service: str, addr: str | None = None) -> grpc.aio.Channel:
        """The channel to a service (``addr``: one of its replicas rather than all of them)."""
        from services.mesh.grpcutil import client_channel

        target = addr or self.settings.addr(service)
        key = f"{service}@{target}"
        if key not in self._channels:
            # The gateway's public port is plaintext (API keys); the others: mutual TLS when on.
            tls_dir = "" if service == "gateway" else self.settings.tls_dir
            self._channels[key] = client_channel(target, APIS.get(service, []),
                                                 max_receive_bytes=MAX_RECEIVE_BYTES, tls_dir=tls_dir)
        return self._channels[key]

    @cached_property
    def erp(self):
        from crossdock.erp.v1 import erp_pb2_grpc

        return erp_pb2_grpc.ErpServiceStub(self.channel("erp"))

    @cached_property
    def replenishment(self):
        from crossdock.erp.v1 import replenishment_pb2_grpc

        return replenishment_pb2_grpc.ReplenishmentServiceStub(self.channel("erp"))

    @cached_property
    def wms(self):
        from crossdock.wms.v1 import wms_pb2_grpc

        return wms_pb2_grpc.WmsServiceStub(self.channel("wms"))

    @cached_property
    def tms(self):
        from crossdock.tms.v1 import tms_pb2_grpc

        return tms_pb2_grpc.TmsServiceStub(self.channel("tms"))

    @cached_property
    def ots(self):
        from crossdock.ordertoship.v1 import order_to_ship_pb2_grpc

        return order_to_ship_pb2_grpc.OrderToShipServiceStub(self.channel("ordertoship"))

    @cached_property
    def dead_letters(self):
        # Every service serves it (the dead-letter stream is shared): order-to-ship's address.
        from crossdock.admin.v1 import admin_pb2_grpc

        return admin_pb2_grpc.DeadLetterServiceStub(self.channel("ordertoship"))

    @cached_property
    def returns(self):
        from crossdock.returns.v1 import returns_pb2_grpc

        return returns_pb2_grpc.ReturnsServiceStub(self.channel("returns"))

    @cached_property
    def reconciliation(self):
        from crossdock.reconciliation.v1 import reconciliation_pb2_grpc

        return reconciliation_pb2_grpc.ReconciliationServiceStub(self.channel("returns"))

    @cached_property
    def api_clients(self):
        from crossdock.admin.v1 import api_clients_pb2_grpc

        return api_clients_pb2_grpc.ApiClientServiceStub(self.channel("gateway"))

    @cached_property
    def users(self):
        from crossdock.admin.v1 import users_pb2_grpc

        return users_pb2_grpc.UserServiceStub(self.channel("gateway"))

    def health(self, service: str, addr: str):
        """The health stub of one replica of a service."""
        from grpc_health.v1 import health_pb2_grpc

        return health_pb2_grpc.HealthStub(self.channel(service, addr))

    def operator(self) -> tuple[tuple[str, str], ...]:
        """Call metadata with the operator token (the gateway's admin API needs it)."""
        token = operator_token.find(self.settings.data_dir)
        if not token:
            console.print(f"[red]no operator token[/red]: set {operator_token.VARIABLE}, or run where "
                          f"`crossdock up` keeps it ({self.settings.data_dir / operator_token.FILE})")
            raise typer.Exit(2)
        return (("authorization", f"Bearer {token}"),)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()

    async def __aenter__(self) -> Stubs:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


def print_error(err: grpc.aio.AioRpcError) -> None:
    console.print(f"[red]{err.code().name}[/red]: {err.details()}")
    status = status_details(err)
    for detail in status.details if status else []:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            for v in bad.field_violations:
                console.print(f"  {v.field}: {v.description}")


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine; print a gRPC error with its details instead of a traceback."""
    try:
        return asyncio.run(coro)
    except grpc.aio.AioRpcError as err:
        print_error(err)
        raise typer.Exit(1) from None


def money(minor: int, currency: str) -> str:
    digits = EXPONENTS.get(currency, 2)
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), 10 ** digits)
    return f"{sign}{whole}" + (f".{frac:0{digits}d}" if digits else "")


# ISO 4217 minor-unit exponents that are not 2.
EXPONENTS = {"BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
             "PYG": 0, "RWF": 0, "UGX": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
             "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3}
