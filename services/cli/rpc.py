"""Small helpers shared by the `crossdock returns|reconcile|export` commands."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import grpc
import typer
from google.rpc import error_details_pb2
from rich.console import Console

from services.mesh.config import load_settings
from services.mesh.errors import status_details

console = Console()


def channel(service: str) -> grpc.aio.Channel:
    """A channel to a service at its configured address (CROSSDOCK_<SERVICE>_ADDR)."""
    addr = load_settings().addr(service).split(",")[0]
    return grpc.aio.insecure_channel(addr, options=[("grpc.max_receive_message_length", 64 << 20)])


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine; print a gRPC error with its details instead of a traceback."""
    try:
        return asyncio.run(coro)
    except grpc.aio.AioRpcError as err:
        console.print(f"[red]{err.code().name}[/red]: {err.details()}")
        status = status_details(err)
        for detail in status.details if status else []:
            bad = error_details_pb2.BadRequest()
            if detail.Unpack(bad):
                for v in bad.field_violations:
                    console.print(f"  {v.field}: {v.description}")
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
