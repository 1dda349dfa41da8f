"""The exception work list (supply chain): open short picks, damage, stock discrepancies
and carrier failures, by kind, age, warehouse and customer; resolve one with an action
that fits its kind and a note, or many at once by filter; the exception policies per
default, customer and channel."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Path, Request

from crossdock.ordertoship.v1 import order_to_ship_pb2 as ots
from crossdock.tms.v1 import tms_pb2

from .. import operations
from ..operations import ExceptionFilter, kind_of
from ..problems import Problem, not_found
from .web import Reader, Web, with_notice

ExceptionId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")]
AGES = {"": "any age", "15": "older than 15 min", "60": "older than 1 hour", "240": "older than 4 hours",
        "1440": "older than a day"}


def _filter(values, reader: Reader) -> ExceptionFilter:
    kind = str(values.get("kind") or "")
    if kind and kind not in operations.KINDS:
        raise Problem(422, "invalid-request", "kind: not a kind of exception")
    age = str(values.get("age") or "")
    if age not in AGES:
        raise Problem(422, "invalid-request", "age: not one of the choices")
    status = str(values.get("status") or "OPEN")
    if status not in ("OPEN", "RESOLVED", "ALL"):
        raise Problem(422, "invalid-request", "status: open, resolved or all")
    return ExceptionFilter(kind=kind,
                           customer_id=reader.person.customer_id or str(values.get("customer") or "")[:64],
                           warehouse_id=str(values.get("warehouse") or "")[:64],
                           older_than_minutes=int(age or 0), status="" if status == "ALL" else status)


def add(app: FastAPI, web: Web) -> None:
    core = web.core

    async def carriers() -> list:
        try:
            return list((await core.tms.ListCarriers(tms_pb2.ListCarriersRequest(page_size=100))).carriers)
        except Exception:  # noqa: BLE001 - the list only helps; the field still takes an id
            return []

    @app.get("/exceptions")
    async def work_list(request: Request):
        reader = await web.reader(request, "exceptions.view")
        params = request.query_params
        flt = _filter(params, reader)
        r = await web.call(core.ots.ListExceptions(flt.request(50, params.get("page_token", "")[:1100])))
        rules = await web.call(core.ots.ListExceptionPolicies(ots.ListExceptionPoliciesRequest()))
        return web.page(request, "exceptions.html", items=list(r.exceptions), next_token=r.next_page_token,
                        q={k: params.get(k, "") for k in ("kind", "age", "customer", "warehouse", "status")},
                        kinds=operations.KINDS, ages=AGES, kind_of=kind_of, actions=operations.ACTIONS,
                        rules=list(rules.rules), policies=operations.POLICIES,
                        policy_of=lambda v: ots.ExceptionPolicy.Name(v).removeprefix("EXCEPTION_POLICY_"),
                        status_of=lambda e: ots.ExceptionStatus.Name(e.status).removeprefix(
                            "EXCEPTION_STATUS_"),
                        action_of=lambda e: ots.ResolutionAction.Name(e.action).removeprefix(
                            "RESOLUTION_ACTION_") if e.action else "", carriers=await carriers())

    @app.get("/exceptions/{exception_id}")
    async def one(request: Request, exception_id: ExceptionId):
        reader = await web.reader(request, "exceptions.view")
        r = await web.call(core.ots.GetException(ots.GetExceptionRequest(exception_id=exception_id)),
                           "exception", exception_id)
        if not reader.person.owns(r.exception.customer_id):
            raise not_found("exception", exception_id)
        return web.page(request, "exception.html", exc=r.exception, order=r.order, kind=kind_of(r.exception),
                        actions=operations.valid_actions(kind_of(r.exception)), carriers=await carriers(),
                        open=r.exception.status == ots.EXCEPTION_STATUS_OPEN,
                        action_of=lambda e: ots.ResolutionAction.Name(e.action).removeprefix(
                            "RESOLUTION_ACTION_") if e.action else "")

    @app.post("/exceptions/{exception_id}/resolve")
    async def resolve(request: Request, exception_id: ExceptionId):
        reader, form = await web.form(request, "exceptions.resolve")
        request.state.resource = exception_id
        action = str(form.get("action") or "")
        note = str(form.get("note") or "").strip()[:500]
        request.state.detail = f"{action}: {note}"

        async def act() -> str:
            r = await web.call(core.ots.GetException(ots.GetExceptionRequest(exception_id=exception_id)),
                               "exception", exception_id)
            if not reader.person.owns(r.exception.customer_id):
                raise not_found("exception", exception_id)
            if action not in operations.valid_actions(kind_of(r.exception)):
                raise Problem(422, "invalid-request", "choose one of the actions offered for this exception")
            await web.call(core.ots.ResolveException(ots.ResolveExceptionRequest(
                exception_id=exception_id, resolved_by=reader.person.display_name, note=note,
                carrier_id=str(form.get("carrier_id") or "")[:64],
                action=ots.ResolutionAction.Value(f"RESOLUTION_ACTION_{action}"))), "exception", exception_id)
            return with_notice(f"/console/orders/{r.exception.order_id}", "resolved")

        return await web.once(request, reader, form, act)

    @app.post("/exceptions/resolve-many")
    async def resolve_many(request: Request):
        reader, form = await web.form(request, "exceptions.resolve")
        flt = _filter(form, reader)
        action = str(form.get("action") or "")
        if action not in operations.ACTIONS:
            raise Problem(422, "invalid-request", "choose an action")
        note = str(form.get("note") or "").strip()[:500]
        request.state.detail = f"{action} by filter {flt}: {note}"
        result = await operations.resolve_many(
            core.ots, ExceptionFilter(**{**flt.__dict__, "status": "OPEN"}),
            action=action, resolved_by=reader.person.display_name, note=note,
            carrier_id=str(form.get("carrier_id") or "")[:64],
            owns=reader.person.owns)
        request.state.resource = f"{len(result.resolved)} resolved"
        return web.page(request, "resolved_many.html", result=result, action=action)

    @app.post("/exceptions/policies")
    async def set_policy(request: Request):
        reader, form = await web.form(request, "policies.change")
        scope = str(form.get("scope") or "")
        key = str(form.get("key") or "").strip()[:64]
        policy = str(form.get("policy") or "")
        if scope not in ("default", "customer", "channel") or (scope != "default" and not key):
            raise Problem(422, "invalid-request", "choose the default, or a customer or channel by its id")
        if policy not in (*operations.POLICIES, "REMOVE") or (policy == "REMOVE" and scope == "default"):
            raise Problem(422, "invalid-request", "choose a policy")
        request.state.resource = f"{scope}:{key}"
        request.state.detail = policy

        async def act() -> str:
            await web.call(core.ots.SetExceptionPolicy(ots.SetExceptionPolicyRequest(
                customer_id=key if scope == "customer" else "", channel=key if scope == "channel" else "",
                policy=0 if policy == "REMOVE" else ots.ExceptionPolicy.Value(f"EXCEPTION_POLICY_{policy}"))))
            return with_notice("/console/exceptions", "policy-saved")

        return await web.once(request, reader, form, act)
