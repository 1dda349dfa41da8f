"""The parts of the ERP contract the Tryton adapter does not serve yet: each answers
with a clear error (FAILED_PRECONDITION for an RPC; a permanent error, dead-lettered
with this reason and replayable once an adapter serves it, for a message)."""

from __future__ import annotations

from services.mesh.bus import PermanentError
from services.mesh.errors import FailedPrecondition

REASON = "NOT_SUPPORTED_BY_ERP_BACKEND"


def _rpc(what: str):
    async def call(self, *args, **kwargs):
        raise FailedPrecondition(f"{what} is not served by the Tryton ERP adapter yet", reason=REASON)

    return call


def _message(what: str):
    async def handle(self, tx, body):
        raise PermanentError(f"{what} is not served by the Tryton ERP adapter yet")

    return handle


class UnsupportedReturns:
    authorize = _message("return authorisation")
    cancel = _message("return cancellation")
    post_credit_memo = _message("a credit memo")
    get_authorization = _rpc("GetReturnAuthorization")
    list_credit_memos = _rpc("ListCreditMemos")


class UnsupportedReplenishment:
    upsert_reorder_point = _rpc("UpsertReorderPoint")
    list_reorder_points = _rpc("ListReorderPoints")
    get = _rpc("GetReplenishment")
    list = _rpc("ListReplenishments")
    plan = _message("replenishment planning")
    transfer_issued = _message("a replenishment transfer")
    transfer_refused = _message("a replenishment transfer")
    received = _message("a replenishment receipt")
