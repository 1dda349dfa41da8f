"""crossdock.admin.v1.ApiClientService: the gateway's API clients over gRPC, for
operators (`crossdock clients`). Who may call it is the guard's business (the
admin scope on an unbound client, or the operator token); this translates
requests into governance calls and answers, nothing more."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from crossdock.admin.v1 import api_clients_pb2 as pb
from crossdock.admin.v1 import api_clients_pb2_grpc
from services.mesh.errors import FailedPrecondition, InvalidArgument, NotFound

from . import governance, validation
from .guard import set_resource


def _ts(when) -> Timestamp | None:
    if when is None:
        return None
    t = Timestamp()
    t.FromDatetime(when)
    return t


def to_pb(row: dict) -> pb.ApiClient:
    return pb.ApiClient(
        client_id=row["client_id"], name=row["name"], channel=row["channel"], customer_id=row["customer_id"],
        scopes=row["scopes"].split(), rate_limit=row["rate_limit"], create_time=_ts(row["created_at"]),
        revoke_time=_ts(row["revoked_at"]))


class ApiClientServicer(api_clients_pb2_grpc.ApiClientServiceServicer):
    def __init__(self, store) -> None:
        self.store = store

    async def CreateApiClient(self, request, context):
        if violations := validation.create_api_client(request, governance.SCOPES):
            raise InvalidArgument(violations)
        client_id, token = await governance.create_client(
            self.store, name=request.name or request.channel, channel=request.channel,
            customer_id=request.customer_id, scopes=list(request.scopes), rate_limit=request.rate_limit)
        set_resource(client_id)
        made = await governance.get_client(self.store, client_id)
        return pb.CreateApiClientResponse(api_client=to_pb(made), token=token)

    async def ListApiClients(self, request, context):
        rows, token = await governance.list_clients(self.store, request.page_size, request.page_token)
        return pb.ListApiClientsResponse(api_clients=[to_pb(r) for r in rows], next_page_token=token)

    async def RevokeApiClient(self, request, context):
        if not request.client_id:
            raise InvalidArgument([("client_id", "required")])
        if not await governance.revoke_client(self.store, request.client_id):
            if await governance.get_client(self.store, request.client_id) is None:
                raise NotFound("api client", request.client_id)
            raise FailedPrecondition(f"api client {request.client_id!r} is already revoked",
                                     reason="API_CLIENT_REVOKED", subject=request.client_id)
        return pb.RevokeApiClientResponse(api_client=to_pb(await governance.get_client(self.store,
                                                                                        request.client_id)))
