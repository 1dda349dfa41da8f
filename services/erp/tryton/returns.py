"""Return authorisations and credit memos on Tryton.

An RMA is a Tryton credit note (an out invoice of negative quantities of the sale's
lines, at the invoiced prices) whose ``reference`` is the return id (looked up before it
is made) and ``description`` the RMA number: in draft while authorised, posted once
credited (its one credit memo: the accepted quantities), cancelled when cancelled; a
refused authorisation (or a cancel that came first) is a cancelled credit note without
lines whose comment says so. Crossdock's rules decide what may be authorised and
credited (``domain.authorize_return``, ``domain.credit_memo_lines``); Tryton keeps the
books (the customer's receivable drops by the credit note).
"""

from __future__ import annotations

from collections import Counter

import structlog

from crossdock.common.v1.common_pb2 import Money
from crossdock.erp.v1 import erp_pb2
from crossdock.erp.v1 import messages_pb2 as msgs
from services.mesh.bus import PermanentError
from services.mesh.errors import NotFound
from services.mesh.paging import encode_token
from services.mesh.store import Tx

from .. import contract, domain
from ..builtin.returns import NotInvoicedYet
from .base import TrytonErp, committed_in_tryton, permanent_on_refusal, to_minor
from .masterdata import page
from .sales import INVOICE_FIELDS, TrytonOrders

log = structlog.get_logger()

REFUSED, CANCELLED = "crossdock: refused", "crossdock: cancelled"
FIELDS = [*INVOICE_FIELDS, "comment", "write_date"]


def _comment(note: dict) -> tuple[str, str, str]:
    """(kind, code, reason) of a crossdock comment."""
    text = note.get("comment") or ""
    head, _, reason = text.partition("\n")
    if head.startswith(REFUSED):
        return "REFUSED", head.removeprefix(REFUSED).strip(), reason
    if head.startswith(CANCELLED):
        return "CANCELLED", "", reason
    return "", "", reason


class TrytonReturns:
    def __init__(self, erp: TrytonErp, orders: TrytonOrders) -> None:
        self.erp = erp
        self.orders = orders

    async def _note(self, return_id: str) -> dict | None:
        found = await self.erp.rpc.search_read(
            "account.invoice",
            [("reference", "=", return_id), ("type", "=", "out"), ("description", "not like", "INV-%")],
            FIELDS,
            limit=1,
        )
        return found[0] if found else None

    async def _lines(self, note: dict) -> list[dict]:
        lines = await self.erp.rpc.model(
            "account.invoice.line", "read", note["lines"], ["origin", "quantity", "unit_price", "product"]
        )
        origins = [
            int(x["origin"].split(",")[1]) for x in lines if (x["origin"] or "").startswith("sale.line,")
        ]
        seq = {
            r["id"]: r["sequence"]
            for r in await self.erp.rpc.model("sale.line", "read", origins, ["sequence"])
        }
        skus = await self.orders.skus([x["product"] for x in lines]) if lines else {}
        return [
            {
                **x,
                "line_number": seq.get(int(x["origin"].split(",")[1]), 0) if x["origin"] else 0,
                "sku": skus.get(x["product"], ""),
                "qty": int(abs(x["quantity"])),
                "price": to_minor(x["unit_price"]),
            }
            for x in lines
        ]

    async def _status(self, note: dict) -> tuple[str, str, str]:
        kind, code, reason = _comment(note)
        if note["state"] == "cancelled":
            return (kind or "CANCELLED"), code, reason or "cancelled"
        if note["state"] in ("posted", "paid"):
            return "CREDITED", "", f"credited by {domain.credit_memo_number(note['description'])}"
        return "AUTHORIZED", "", reason or f"authorised as {note['description']}"

    async def _rma_pb(self, note: dict, order_id: str, customer_id: str) -> erp_pb2.ReturnAuthorization:
        currency = await self.erp.currency()
        status, _, reason = await self._status(note)
        lines = await self._lines(note)

        def money(minor: int) -> Money:
            return Money(currency_code=currency, amount_minor=minor)

        rma = erp_pb2.ReturnAuthorization(
            rma_number=note["description"] or "",
            return_id=note["reference"],
            order_id=order_id,
            customer_id=customer_id,
            lines=[
                erp_pb2.ReturnAuthorizationLine(
                    line_number=x["line_number"],
                    sku=x["sku"],
                    quantity=x["qty"],
                    unit_price=money(x["price"]),
                )
                for x in sorted(lines, key=lambda x: x["line_number"])
            ],
            expected_credit=money(sum(x["qty"] * x["price"] for x in lines)),
            status=contract.RMA_STATUS[status],
            status_reason=reason,
            credit_memo_id=domain.credit_memo_number(note["description"]) if status == "CREDITED" else "",
        )
        if note["create_date"]:
            rma.create_time.FromDatetime(note["create_date"])
        if note.get("write_date") or note["create_date"]:
            rma.update_time.FromDatetime(note.get("write_date") or note["create_date"])
        return rma

    async def _order_of(self, note: dict) -> tuple[str, str]:
        order_id = (note["description"] or "").removeprefix("RMA-").rsplit("-", 1)[0]
        return order_id, await self.orders.customer_id(note["party"])

    async def _emit_outcome(self, tx: Tx, note: dict, cmd_order_id: str = "") -> None:
        status, code, reason = await self._status(note)
        order_id, customer_id = await self._order_of(note) if note["description"] else (cmd_order_id, "")
        if status == "REFUSED":
            await tx.emit(
                "erp.return.refused",
                msgs.ReturnAuthorizationRefused(
                    return_id=note["reference"],
                    order_id=order_id or cmd_order_id,
                    reason_code=code,
                    reason=reason,
                ),
                key=note["reference"],
            )
        elif status == "CANCELLED":
            await tx.emit(
                "erp.return.cancelled",
                msgs.ReturnAuthorizationCancelled(
                    return_id=note["reference"], rma_number=note["description"] or "", reason=reason
                ),
                key=note["reference"],
            )
        else:
            await tx.emit(
                "erp.return.authorized",
                msgs.ReturnAuthorized(authorization=await self._rma_pb(note, order_id, customer_id)),
                key=note["reference"],
            )

    async def _invoiced_and_held(self, sale: dict) -> tuple[list[domain.Line], Counter, Counter]:
        """What the order's invoices invoiced, and per line what RMAs hold and credit notes credited."""
        lines = {f"sale.line,{x['id']}": x for x in await self.orders.lines(sale)}
        invoiced, held, credited = [], Counter(), Counter()
        for inv_lines in (await self.orders.invoice_lines_of(sale)).values():
            for x in inv_lines:
                inv, line = x["_invoice"], lines.get(x["origin"] or "")
                if line is None or inv["id"] in sale["invoices_ignored"]:
                    continue
                desc = inv["description"] or ""
                if desc.startswith("INV-") and inv["state"] in ("posted", "paid"):
                    invoiced.append(
                        domain.Line(line["sequence"], "", int(x["quantity"]), to_minor(x["unit_price"]))
                    )
                elif desc.startswith("RMA-") and inv["state"] in ("posted", "paid"):
                    credited[line["sequence"]] += int(abs(x["quantity"]))
                elif desc.startswith("RMA-") and inv["state"] == "draft":
                    held[line["sequence"]] += int(abs(x["quantity"]))
        skus = await self.orders.skus([x["product"] for x in lines.values()])
        by_number = {x["sequence"]: skus.get(x["product"], "") for x in lines.values()}
        invoiced = [
            domain.Line(x.line_number, by_number.get(x.line_number, ""), x.quantity, x.unit_price)
            for x in invoiced
        ]
        return invoiced, held, credited

    async def _note_for(
        self, sale: dict, return_id: str, comment: str, lines: list[domain.Line] = (), rma_number: str = ""
    ) -> int:
        erp, rpc = self.erp, self.erp.rpc
        fixed = await erp.fixed()
        receivable, revenue, journal = await self.orders.accounts()
        by_number = {x["sequence"]: x for x in await self.orders.lines(sale)} if sale else {}
        values = {
            "type": "out",
            "party": sale["party"],
            "invoice_address": sale["invoice_address"],
            "account": receivable,
            "journal": journal,
            "currency": fixed["currency_id"],
            "company": fixed["company"],
            "reference": return_id,
            "description": rma_number or None,
            "comment": comment,
            "lines": [
                [
                    "create",
                    [
                        {
                            "type": "line",
                            "product": by_number[x.line_number]["product"],
                            "quantity": -x.quantity,
                            "unit_price": by_number[x.line_number]["unit_price"],
                            "unit": fixed["unit"],
                            "account": revenue,
                            "origin": f"sale.line,{by_number[x.line_number]['id']}",
                        }
                        for x in lines
                    ],
                ]
            ]
            if lines
            else [],
        }
        (note_id,) = await rpc.model("account.invoice", "create", [values])
        return note_id

    async def _read(self, note_id: int) -> dict:
        (note,) = await self.erp.rpc.model("account.invoice", "read", [note_id], FIELDS)
        return note

    @permanent_on_refusal
    async def authorize(self, tx: Tx, cmd: msgs.AuthorizeReturn) -> None:
        if not cmd.return_id or not cmd.order_id:
            raise PermanentError("AuthorizeReturn needs return_id and order_id")
        if (note := await self._note(cmd.return_id)) is not None:
            await self._emit_outcome(tx, note, cmd.order_id)
            return
        if await self.erp.mapped("cancelled-return", cmd.return_id) is not None:
            await tx.emit(
                "erp.return.cancelled",
                msgs.ReturnAuthorizationCancelled(return_id=cmd.return_id, rma_number="", reason="cancelled"),
                key=cmd.return_id,
            )
            return
        sale = await self.orders.sale(cmd.order_id)
        status, customer = None, ""
        if sale is not None:
            _, order_lines = await self.orders.order_lines(sale)
            status, _ = await self.orders.status(sale, order_lines)
            customer = await self.orders.customer_id(sale["party"])
        gate = domain.return_gate(status, customer, cmd.order_id, cmd.customer_id)
        if gate.wait:
            raise NotInvoicedYet(gate.reason)
        code, reason, lines = gate.code, gate.reason, []
        if not code:
            invoiced, held, credited = await self._invoiced_and_held(sale)
            try:
                lines = domain.authorize_return(
                    invoiced,
                    held + credited,
                    [domain.Line(x.line_number, x.sku, x.quantity) for x in cmd.lines],
                )
            except domain.ReturnRefused as exc:
                code, reason = exc.code, exc.reason
        if code:
            if sale is None:
                # Nothing in Tryton to attach it to: the answer alone (deterministic on a redelivery).
                await tx.emit(
                    "erp.return.refused",
                    msgs.ReturnAuthorizationRefused(
                        return_id=cmd.return_id, order_id=cmd.order_id, reason_code=code, reason=reason
                    ),
                    key=cmd.return_id,
                )
                return
            note_id = await self._note_for(sale, cmd.return_id, f"{REFUSED} {code}\n{reason}")
            await self.erp.rpc.model("account.invoice", "cancel", [note_id])
        else:
            count = len(
                await self.erp.rpc.model(
                    "account.invoice",
                    "search",
                    [("description", "like", f"RMA-{cmd.order_id}-%")],
                    0,
                    None,
                    None,
                )
            )
            number = domain.rma_number(cmd.order_id, count)
            note_id = await self._note_for(sale, cmd.return_id, f"authorised as {number}", lines, number)
        committed_in_tryton()
        await self._emit_outcome(tx, await self._read(note_id), cmd.order_id)

    @permanent_on_refusal
    async def cancel(self, tx: Tx, cmd: msgs.CancelReturnAuthorization) -> None:
        if not cmd.return_id:
            raise PermanentError("CancelReturnAuthorization needs return_id")
        reason = cmd.reason or "cancelled"
        note = await self._note(cmd.return_id)
        if note is None:
            # A cancel that comes first: a tombstone, so a late authorisation is cancelled too.
            await tx.emit(
                "erp.return.cancelled",
                msgs.ReturnAuthorizationCancelled(return_id=cmd.return_id, rma_number="", reason=reason),
                key=cmd.return_id,
            )
            await self.erp.remember("cancelled-return", cmd.return_id, 0, tx)
            return
        if note["state"] in ("posted", "paid"):
            log.warning("rma.cancel_ignored", return_id=cmd.return_id, status="CREDITED")
            return
        if note["state"] == "draft":
            await self.erp.rpc.model(
                "account.invoice", "write", [note["id"]], {"comment": f"{CANCELLED}\n{reason}"}
            )
            await self.erp.rpc.model("account.invoice", "cancel", [note["id"]])
            note = await self._read(note["id"])
        await self._emit_outcome(tx, note)

    async def _memo_pb(self, note: dict) -> erp_pb2.CreditMemo:
        currency = await self.erp.currency()
        order_id, customer_id = await self._order_of(note)
        lines = await self._lines(note)

        def money(minor: int) -> Money:
            return Money(currency_code=currency, amount_minor=minor)

        memo = erp_pb2.CreditMemo(
            credit_memo_id=domain.credit_memo_number(note["description"]),
            rma_number=note["description"],
            return_id=note["reference"],
            order_id=order_id,
            customer_id=customer_id,
            lines=[
                erp_pb2.CreditMemoLine(
                    line_number=x["line_number"],
                    sku=x["sku"],
                    quantity=x["qty"],
                    unit_price=money(x["price"]),
                    amount=money(x["qty"] * x["price"]),
                )
                for x in sorted(lines, key=lambda x: x["line_number"])
            ],
            total=money(sum(x["qty"] * x["price"] for x in lines)),
        )
        memo.post_time.FromDatetime(note.get("write_date") or note["create_date"])
        return memo

    @permanent_on_refusal
    async def post_credit_memo(self, tx: Tx, cmd: msgs.PostCreditMemo) -> None:
        if not cmd.return_id:
            raise PermanentError("PostCreditMemo needs return_id")
        note = await self._note(cmd.return_id)
        if note is not None and note["state"] in ("posted", "paid"):
            await tx.emit(
                "erp.creditmemo.posted",
                msgs.CreditMemoPosted(credit_memo=await self._memo_pb(note)),
                key=cmd.return_id,
            )
            return

        async def refuse(code: str, reason: str) -> None:
            log.warning("creditmemo.refused", return_id=cmd.return_id, code=code, reason=reason)
            await tx.emit(
                "erp.creditmemo.refused",
                msgs.CreditMemoRefused(
                    return_id=cmd.return_id, rma_number=cmd.rma_number, reason_code=code, reason=reason
                ),
                key=cmd.return_id,
            )

        if note is None or note["state"] != "draft" or not note["description"]:
            await refuse("RMA_NOT_AUTHORIZED", f"return {cmd.return_id} has no open RMA")
            return
        order_id, _ = await self._order_of(note)
        sale = await self.orders.sale(order_id)
        lines = await self._lines(note)
        authorized = [domain.Line(x["line_number"], x["sku"], x["qty"], x["price"]) for x in lines]
        invoiced, _, credited = await self._invoiced_and_held(sale)
        try:
            accepted = domain.credit_memo_lines(
                authorized,
                [domain.Line(x.line_number, x.sku, x.quantity) for x in cmd.accepted_lines],
                invoiced,
                credited,
            )
        except domain.ReturnRefused as exc:
            await refuse(exc.code, exc.reason)
            return
        qty = {x.line_number: x.quantity for x in accepted}
        rpc = self.erp.rpc
        for x in lines:
            if qty.get(x["line_number"], 0) == 0:
                await rpc.model("account.invoice.line", "delete", [x["id"]])
            elif qty[x["line_number"]] != x["qty"]:
                await rpc.model(
                    "account.invoice.line", "write", [x["id"]], {"quantity": -qty[x["line_number"]]}
                )
        await self.orders.post(note["id"])
        committed_in_tryton()
        await tx.emit(
            "erp.creditmemo.posted",
            msgs.CreditMemoPosted(credit_memo=await self._memo_pb(await self._read(note["id"]))),
            key=cmd.return_id,
        )

    async def get_authorization(self, rma_number: str) -> erp_pb2.ReturnAuthorization:
        contract.require(rma_number=rma_number)
        found = await self.erp.rpc.search_read(
            "account.invoice", [("description", "=", rma_number), ("type", "=", "out")], FIELDS, limit=1
        )
        if not found:
            raise NotFound("return authorization", rma_number)
        return await self._rma_pb(found[0], *await self._order_of(found[0]))

    async def list_credit_memos(self, page_size: int, page_token: str, order_id: str, customer_id: str):
        size, key = page(page_size, page_token)
        dom = [
            ("type", "=", "out"),
            ("state", "in", ["posted", "paid"]),
            ("description", "like", f"RMA-{order_id}-%" if order_id else "RMA-%"),
        ]
        if customer_id:
            dom.append(("party.code", "=", customer_id))
        notes = await self.erp.rpc.search_read("account.invoice", dom, FIELDS, order=[("description", "ASC")])
        memos = [await self._memo_pb(n) for n in notes]
        if order_id:
            memos = [m for m in memos if m.order_id == order_id]
        memos.sort(key=lambda m: m.credit_memo_id)
        if key:
            memos = [m for m in memos if m.credit_memo_id > str(key[0])]
        more, memos = len(memos) > size, memos[:size]
        return memos, encode_token([memos[-1].credit_memo_id]) if more and memos else ""
