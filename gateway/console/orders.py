"""Orders: search (order id, customer, channel, status, SKU, dates, paging), an
order's page (timeline, lines, shipments, invoices, returns and credit memos,
open exceptions, trace), its live status (server-sent events), cancel with the
compensation spelled out, and create a return. A customer-bound reader sees only
their customer's orders: another's answers exactly like a missing one (404)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, time, timedelta
from typing import Annotated

from fastapi import FastAPI, Path, Request
from fastapi.responses import RedirectResponse, StreamingResponse
from google.protobuf.timestamp_pb2 import Timestamp

from crossdock.erp.v1 import erp_pb2
from crossdock.ordertoship.v1 import order_to_ship_pb2 as ots
from crossdock.returns.v1 import returns_pb2 as rpb

from ..problems import Problem, not_found
from . import words
from .web import Reader, Web, with_notice

OrderId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")]
STATUSES = [n.removeprefix("ORDER_STATUS_") for n in ots.OrderStatus.keys()
            if n != "ORDER_STATUS_UNSPECIFIED"]
TERMINAL = {"INVOICED", "REJECTED", "CANCELLED"}
REASONS = ["NOT_NEEDED", "DEFECTIVE", "DAMAGED", "WRONG_ITEM", "OTHER"]


def status_of(o: ots.Order) -> str:
    return ots.OrderStatus.Name(o.status).removeprefix("ORDER_STATUS_")


def entry_status(e: ots.TimelineEntry) -> str:
    return ots.OrderStatus.Name(e.status).removeprefix("ORDER_STATUS_")


def return_status(r: rpb.CustomerReturn) -> str:
    return rpb.ReturnStatus.Name(r.status).removeprefix("RETURN_STATUS_")


def _day(text: str, field: str, end: bool = False) -> Timestamp | None:
    if not text:
        return None
    try:
        day = datetime.strptime(text, "%Y-%m-%d")
    except ValueError:
        raise Problem(422, "invalid-request", f"{field}: a date like 2026-12-31") from None
    ts = Timestamp()
    ts.FromDatetime(datetime.combine(day.date() + (timedelta(days=1) if end else timedelta()), time()))
    return ts


async def owned_order(web: Web, reader: Reader, order_id: str) -> ots.Order:
    r = await web.call(web.core.ots.GetOrder(ots.GetOrderRequest(order_id=order_id)), "order", order_id)
    if not reader.person.owns(r.order.customer_id):
        raise not_found("order", order_id)  # exactly like a missing order
    return r.order


def add(app: FastAPI, web: Web) -> None:
    core = web.core

    @app.get("/orders")
    async def search(request: Request):
        reader = await web.reader(request, "orders.view")
        q = {k: request.query_params.get(k, "").strip()[:64] for k in (
            "order_id", "customer", "channel", "status", "sku", "from", "to", "page_token")}
        if reader.person.customer_id:
            q["customer"] = reader.person.customer_id
        if q["order_id"]:
            try:
                order = await owned_order(web, reader, q["order_id"])
                return RedirectResponse(f"/console/orders/{order.order_id}", status_code=303)
            except Problem as p:
                if p.status != 404:
                    raise
                return web.page(request, "orders.html", q=q, orders=[], next_token="", statuses=STATUSES,
                                missing=q["order_id"], status_of=status_of)
        if q["status"] and q["status"] not in STATUSES:
            raise Problem(422, "invalid-request", "status: not an order status")
        req = ots.ListOrdersRequest(page_size=25, page_token=q["page_token"], customer_id=q["customer"],
                                    channel=q["channel"], sku=q["sku"], newest_first=True,
                                    status=ots.OrderStatus.Value("ORDER_STATUS_" + q["status"]) if q["status"]
                                    else 0)
        if after := _day(q["from"], "from"):
            req.created_after.CopyFrom(after)
        if before := _day(q["to"], "to", end=True):
            req.created_before.CopyFrom(before)
        r = await web.call(core.ots.ListOrders(req))
        return web.page(request, "orders.html", q=q, orders=list(r.orders), next_token=r.next_page_token,
                        statuses=STATUSES, missing="", status_of=status_of)

    async def order_context(reader: Reader, order_id: str) -> dict:
        order = await owned_order(web, reader, order_id)
        rets, excs, customer = await asyncio.gather(
            web.call(core.returns.ListReturns(rpb.ListReturnsRequest(order_id=order_id, page_size=50))),
            web.call(core.ots.ListExceptions(ots.ListExceptionsRequest(order_id=order_id, page_size=50))),
            _customer(order.customer_id), return_exceptions=True)
        returns = [x for x in (rets.returns if not isinstance(rets, Exception) else [])
                   if reader.person.owns(x.customer_id)]
        exceptions = [e for e in (excs.exceptions if not isinstance(excs, Exception) else [])
                      if e.status == ots.EXCEPTION_STATUS_OPEN]
        return {"order": order, "status": status_of(order), "returns": returns, "exceptions": exceptions,
                "customer": customer if not isinstance(customer, Exception) else None,
                "return_status": return_status, "status_of": status_of,
                "kind_of": lambda e: ots.ExceptionKind.Name(e.kind).removeprefix("EXCEPTION_KIND_"),
                "entry_status": entry_status,
                "policy": ots.ExceptionPolicy.Name(order.exception_policy).removeprefix("EXCEPTION_POLICY_")}

    async def _customer(customer_id: str):
        r = await core.erp.GetCustomer(erp_pb2.GetCustomerRequest(customer_id=customer_id))
        return r.customer

    @app.get("/orders/{order_id}")
    async def order_page(request: Request, order_id: OrderId):
        reader = await web.reader(request, "orders.view")
        return web.page(request, "order.html", **await order_context(reader, order_id))

    @app.get("/orders/{order_id}/live")
    async def live(request: Request, order_id: OrderId):
        """Server-sent events while the order moves: its status and timeline, whenever they change."""
        reader = await web.reader(request, "orders.view")
        await owned_order(web, reader, order_id)
        status_tpl = web.templates.env.get_template("order_live.html")

        async def events():
            seen, started = None, asyncio.get_running_loop().time()
            while not core.stopping.is_set() and asyncio.get_running_loop().time() - started < 600:
                if await request.is_disconnected():
                    return
                try:
                    order = await owned_order(web, reader, order_id)
                except Problem:
                    yield "event: gone\ndata: \n\n"
                    return
                mark = (order.status, len(order.timeline))
                if mark != seen:
                    seen = mark
                    ctx = {"order": order, "status": status_of(order), "words": words,
                           "when": lambda ts: words.when(ts, reader.zone), "entry_status": entry_status}
                    for name in ("status", "timeline"):
                        html = status_tpl.render(part=name, **ctx)
                        yield f"event: {name}\n" + "".join(f"data: {ln}\n" for ln in html.splitlines()) + "\n"
                    if status_of(order) in TERMINAL:
                        yield "event: done\ndata: \n\n"
                        return
                await asyncio.sleep(1)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.get("/orders/{order_id}/cancel")
    async def cancel_form(request: Request, order_id: OrderId):
        reader = await web.reader(request, "orders.cancel")
        ctx = await order_context(reader, order_id)
        return web.page(request, "cancel.html", **ctx)

    @app.post("/orders/{order_id}/cancel")
    async def cancel(request: Request, order_id: OrderId):
        reader, form = await web.form(request, "orders.cancel")
        request.state.resource = order_id
        reason = str(form.get("reason") or "").strip()[:400]
        request.state.detail = reason

        async def act() -> str:
            await owned_order(web, reader, order_id)
            words_reason = (f"cancelled by {reader.person.display_name} (console)"
                            + (f": {reason}" if reason else ""))
            await web.call(
                core.ots.CancelOrder(ots.CancelOrderRequest(order_id=order_id, reason=words_reason)),
                "order", order_id)
            return with_notice(f"/console/orders/{order_id}", "cancel-requested")

        return await web.once(request, reader, form, act)

    @app.get("/orders/{order_id}/return")
    async def return_form(request: Request, order_id: OrderId):
        reader = await web.reader(request, "returns.create")
        ctx = await order_context(reader, order_id)
        shipped: dict[str, int] = {}
        for sh in ctx["order"].shipments:
            for ln in sh.lines:
                shipped[ln.sku] = shipped.get(ln.sku, 0) + ln.quantity
        return web.page(request, "return_form.html", shipped=shipped, reasons=REASONS, **ctx)

    @app.post("/orders/{order_id}/return")
    async def create_return(request: Request, order_id: OrderId):
        reader, form = await web.form(request, "returns.create")
        request.state.resource = order_id
        lines = []
        for sku in form.getlist("sku"):
            sku = str(sku)
            try:
                qty = int(str(form.get(f"quantity:{sku}") or "0"))
            except ValueError:
                raise Problem(422, "invalid-request", f"the quantity of {sku} is not a number") from None
            if qty <= 0:
                continue
            reason = str(form.get(f"reason:{sku}") or "OTHER")
            if reason not in REASONS:
                raise Problem(422, "invalid-request", f"the reason of {sku} is not one of the list")
            lines.append(rpb.ReturnLine(sku=sku, quantity=qty, reason=rpb.ReturnReason.Value(
                f"RETURN_REASON_{reason}"), note=str(form.get(f"note:{sku}") or "")[:400]))
        if not lines:
            raise Problem(422, "invalid-request", "choose at least one quantity to return")
        request.state.detail = json.dumps([[ln.sku, ln.quantity] for ln in lines])

        async def act() -> str:
            await owned_order(web, reader, order_id)
            key = str(form.get("idempotency_key"))
            r = await web.call(core.returns.CreateReturn(rpb.CreateReturnRequest(
                request_id=f"console-{reader.person.username}-{key}", order_id=order_id, lines=lines)))
            request.state.resource = r.customer_return.return_id
            return with_notice(f"/console/returns/{r.customer_return.return_id}", "return-created")

        return await web.once(request, reader, form, act)

    @app.get("/returns/{return_id}")
    async def return_page(request: Request, return_id: OrderId):
        reader = await web.reader(request, "orders.view")
        r = await web.call(core.returns.GetReturn(rpb.GetReturnRequest(return_id=return_id)),
                           "return", return_id)
        if not reader.person.owns(r.customer_return.customer_id):
            raise not_found("return", return_id)
        return web.page(request, "return.html", ret=r.customer_return,
                        status=return_status(r.customer_return),
                        entry_status=lambda e: rpb.ReturnStatus.Name(e.status).removeprefix("RETURN_STATUS_"),
                        reason_of=lambda ln: rpb.ReturnReason.Name(ln.reason).removeprefix("RETURN_REASON_"))

