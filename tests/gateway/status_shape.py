"""What a caller can tell from an error: its shape with the asked id blanked out,
so that another tenant's id and a missing one can be compared for equality."""

from __future__ import annotations

import grpc
import httpx
from google.protobuf import json_format
from google.rpc import error_details_pb2

from services.mesh.errors import status_details

DETAIL_TYPES = {t.DESCRIPTOR.full_name: t for t in (
    error_details_pb2.ErrorInfo, error_details_pb2.ResourceInfo, error_details_pb2.BadRequest,
    error_details_pb2.PreconditionFailure, error_details_pb2.RetryInfo, error_details_pb2.QuotaFailure)}


def details(err: grpc.aio.AioRpcError) -> list:
    """The google.rpc.Status details of an error, unpacked (it must carry a status that
    agrees with the call's code and message: grpc_status checks it)."""
    status = status_details(err)
    assert status is not None, f"no google.rpc.Status in the trailers of {err.code()}: {err.details()}"
    out = []
    for any_ in status.details:
        cls = DETAIL_TYPES[any_.TypeName()]
        msg = cls()
        assert any_.Unpack(msg)
        out.append(msg)
    return out


def detail(err: grpc.aio.AioRpcError, cls):
    found = [d for d in details(err) if isinstance(d, cls)]
    assert found, f"no {cls.DESCRIPTOR.name} in {details(err)}"
    return found[0]


def grpc_shape(err: grpc.aio.AioRpcError, asked: str) -> tuple:
    blank = (lambda text: text.replace(asked, "<id>")) if asked else (lambda text: text)
    return (err.code(), blank(err.details() or ""),
            [blank(json_format.MessageToJson(d, sort_keys=True)) for d in details(err)])


def http_shape(r: httpx.Response, asked: str) -> tuple:
    return r.status_code, r.headers.get("content-type"), r.text.replace(asked, "<id>")
