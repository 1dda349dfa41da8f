"""Sales orders and invoices on Tryton.

- A sales order is a ``sale.sale`` whose ``reference`` is the order id (looked up before
  it is created: ``reference`` is not unique in Tryton), with one line per order line
  (``sequence`` = line number), invoiced and shipped manually: the WMS is the
  warehouse, so Tryton books stock from WMS's movements (``ledger.py``) and not from
  sale shipments. ``quote`` then ``confirm``: Tryton's own credit-limit rule decides
  (the integration user is not in the credit-limit group, so an exceeded limit is a
  CreditLimitError, never a skippable warning); its message is the rejection reason
  and the sale is cancelled.
- One invoice per shipment: an ``account.invoice`` whose ``reference`` is the shipment
  id (looked up first), with the shipped quantities at the sale lines' prices (origin =
  the sale line), posted. Crossdock's rules decide what may be invoiced
  (``domain.invoice_lines``), Tryton keeps the books (receivable, credit amount).
- Cancelled quantities (an order or lines cancelled) are booked the way Tryton ignores
  quantities: a cancelled invoice of them added to the sale's ``invoices_ignored``, which
  Tryton's credit limit leaves out (the credit is released).
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
from .base import TrytonErp, committed_in_tryton, permanent_on_refusal, to_decimal, to_minor
from .masterdata import credit_of, read_customer
from .rpc import TrytonUserError

log = structlog.get_logger()

REJECTED = "crossdock: rejected"  # the sale's comment when Tryton refused it on credit
CANCELLED = "crossdock: cancelled"
SALE_FIELDS = [
    "reference",
    "party",
    "state",
    "lines",
    "comment",
    "create_date",
    "invoices",
    "invoices_ignored",
    "invoice_address",
]
LINE_FIELDS = ["sequence", "product", "quantity", "unit_price", "invoice_lines"]
INVOICE_FIELDS = [
    "reference",
    "description",
    "state",
    "lines",
    "total_amount",
    "party",
    "create_date",
    "invoice_date",
    "type",
    "number",
]


class TrytonOrders:
    """Reads of sales, lines and invoices, shared by sales orders, invoicing and returns."""

    def __init__(self, erp: TrytonErp) -> None:
        self.erp = erp

    async def sale(self, order_id: str) -> dict | None:
        sale_id = await self.erp.lookup("sale", order_id, "sale.sale", [("reference", "=", order_id)])
        if sale_id is None:
            return None
        (sale,) = await self.erp.rpc.model("sale.sale", "read", [sale_id], SALE_FIELDS)
        return sale

    async def lines(self, sale: dict) -> list[dict]:
        return await self.erp.rpc.model("sale.line", "read", sale["lines"], LINE_FIELDS)

    async def invoice_lines_of(self, sale: dict) -> dict[int, list[dict]]:
        """The invoice lines of a sale's invoices, by invoice id (with the invoice's state)."""
        ids = sale["invoices"]
        if not ids:
            return {}
        invoices = {
            i["id"]: i for i in await self.erp.rpc.model("account.invoice", "read", ids, INVOICE_FIELDS)
        }
        lines = await self.erp.rpc.model(
            "account.invoice.line",
            "read",
            [x for i in invoices.values() for x in i["lines"]],
            ["invoice", "origin", "quantity", "unit_price", "product"],
        )
        out: dict[int, list[dict]] = {}
        for x in lines:
            out.setdefault(x["invoice"], []).append({**x, "_invoice": invoices[x["invoice"]]})
        return out

    async def order_lines(self, sale: dict) -> tuple[list[dict], list[domain.OrderLine]]:
        """The sale's lines and, per line, what was invoiced (posted invoices) and cancelled
        (ignored invoices)."""
        lines = await self.lines(sale)
        by_origin = {f"sale.line,{x['id']}": x for x in lines}
        invoiced, cancelled = Counter(), Counter()
        for invoice_id, inv_lines in (await self.invoice_lines_of(sale)).items():
            for x in inv_lines:
                line = by_origin.get(x["origin"] or "")
                if line is None:
                    continue
                state = x["_invoice"]["state"]
                if invoice_id in sale["invoices_ignored"]:
                    cancelled[line["id"]] += int(x["quantity"])
                elif state in ("posted", "paid") and x["_invoice"]["type"] == "out" and x["quantity"] > 0:
                    invoiced[line["id"]] += int(x["quantity"])
        skus = await self.skus([x["product"] for x in lines])
        return lines, [
            domain.OrderLine(
                x["sequence"] or 0,
                skus.get(x["product"], ""),
                int(x["quantity"]),
                to_minor(x["unit_price"]),
                invoiced[x["id"]],
                cancelled[x["id"]],
            )
            for x in lines
        ]

    async def skus(self, product_ids: list[int]) -> dict[int, str]:
        rows = await self.erp.rpc.model("product.product", "read", sorted(set(product_ids)), ["code"])
        return {r["id"]: r["code"] for r in rows}

    async def customer_id(self, party_id: int) -> str:
        (p,) = await self.erp.rpc.model("party.party", "read", [party_id], ["code"])
        return p["code"]

    async def status(self, sale: dict, lines: list[domain.OrderLine]) -> tuple[str, str]:
        comment = sale["comment"] or ""
        if sale["state"] == "cancelled":
            if comment.startswith(REJECTED):
                return "REJECTED", comment.split("\n", 1)[-1]
            return "CANCELLED", comment.split("\n", 1)[-1] if comment.startswith(
                CANCELLED
            ) else "cancelled in Tryton"
        if comment.startswith(CANCELLED):
            return "CANCELLED", comment.split("\n", 1)[-1]
        if closed := domain.closed_status(lines):
            return closed, "invoiced" if closed == "INVOICED" else "closed"
        return "ACCEPTED", ""

    async def sales_order_pb(self, sale: dict) -> erp_pb2.SalesOrder:
        currency = await self.erp.currency()
        _, lines = await self.order_lines(sale)
        status, reason = await self.status(sale, lines)

        def money(minor: int) -> Money:
            return Money(currency_code=currency, amount_minor=minor)

        so = erp_pb2.SalesOrder(
            order_id=sale["reference"],
            customer_id=await self.customer_id(sale["party"]),
            lines=[
                erp_pb2.SalesOrderLine(
                    line_number=x.line_number,
                    sku=x.sku,
                    quantity=x.quantity,
                    unit_price=money(x.unit_price),
                    invoiced_quantity=x.invoiced,
                    cancelled_quantity=x.cancelled,
                )
                for x in sorted(lines, key=lambda x: x.line_number)
            ],
            total=money(
                domain.order_total(
                    [domain.Line(x.line_number, x.sku, x.quantity, x.unit_price) for x in lines]
                )
            ),
            status=contract.SALES_ORDER_STATUS[status],
            status_reason=reason,
        )
        if sale["create_date"] is not None:
            so.create_time.FromDatetime(sale["create_date"])
        return so

    async def invoice_pb(self, invoice: dict) -> erp_pb2.Invoice:
        currency = await self.erp.currency()
        lines = await self.erp.rpc.model(
            "account.invoice.line", "read", invoice["lines"], ["origin", "quantity", "unit_price", "product"]
        )
        origins = [
            int(x["origin"].split(",")[1]) for x in lines if (x["origin"] or "").startswith("sale.line,")
        ]
        sale_lines = {
            r["id"]: r for r in await self.erp.rpc.model("sale.line", "read", origins, ["sequence", "sale"])
        }
        skus = await self.skus([x["product"] for x in lines])

        def money(minor: int) -> Money:
            return Money(currency_code=currency, amount_minor=minor)

        out_lines, order_id = [], ""
        for x in lines:
            sl = sale_lines.get(int(x["origin"].split(",")[1])) if x["origin"] else None
            qty, price = int(abs(x["quantity"])), to_minor(x["unit_price"])
            out_lines.append(
                erp_pb2.InvoiceLine(
                    line_number=sl["sequence"] if sl else 0,
                    sku=skus.get(x["product"], ""),
                    quantity=qty,
                    unit_price=money(price),
                    amount=money(qty * price),
                )
            )
        if sale_lines:
            (sale,) = await self.erp.rpc.model(
                "sale.sale", "read", [next(iter(sale_lines.values()))["sale"]], ["reference"]
            )
            order_id = sale["reference"]
        out_lines.sort(key=lambda x: x.line_number)
        inv = erp_pb2.Invoice(
            invoice_id=invoice["description"] or f"TRYTON-{invoice['number']}",
            order_id=order_id,
            shipment_id=invoice["reference"] or "",
            customer_id=await self.customer_id(invoice["party"]),
            lines=out_lines,
            total=money(sum(x.amount.amount_minor for x in out_lines)),
        )
        when = invoice.get("write_date") or invoice["create_date"]
        if when is not None:
            inv.post_time.FromDatetime(when)
        return inv

    async def book_invoice(
        self,
        sale: dict,
        lines_by_number: dict[int, dict],
        quantities: dict[int, int],
        *,
        reference: str,
        description: str,
        cancel: bool = False,
    ) -> int:
        """An out invoice of these quantities (by line number) of the sale's lines, at their
        prices; posted, or cancelled and ignored by the sale (``cancel``)."""
        erp, rpc = self.erp, self.erp.rpc
        fixed = await erp.fixed()
        receivable, revenue, journal = await self.accounts()
        values = {
            "type": "out",
            "party": sale["party"],
            "invoice_address": sale["invoice_address"],
            "account": receivable,
            "journal": journal,
            "currency": fixed["currency_id"],
            "company": fixed["company"],
            "reference": reference,
            "description": description,
            "lines": [
                [
                    "create",
                    [
                        {
                            "type": "line",
                            "product": lines_by_number[n]["product"],
                            "quantity": q,
                            "unit_price": lines_by_number[n]["unit_price"],
                            "unit": fixed["unit"],
                            "account": revenue,
                            "origin": f"sale.line,{lines_by_number[n]['id']}",
                        }
                        for n, q in sorted(quantities.items())
                    ],
                ]
            ],
        }
        (invoice_id,) = await rpc.model("account.invoice", "create", [values])
        if cancel:
            await rpc.model("account.invoice", "cancel", [invoice_id])
            await rpc.model("sale.sale", "write", [sale["id"]], {"invoices_ignored": [["add", [invoice_id]]]})
        else:
            await self.post(invoice_id)
        return invoice_id

    async def post(self, invoice_id: int) -> None:
        try:
            await self.erp.rpc.model("account.invoice", "post", [invoice_id])
        except TrytonUserError:
            (inv,) = await self.erp.rpc.model("account.invoice", "read", [invoice_id], ["state"])
            if inv["state"] not in ("posted", "paid"):
                raise

    async def accounts(self) -> tuple[int, int, int]:
        if not hasattr(self, "_accounts"):
            rpc = self.erp.rpc
            (receivable,) = await rpc.search_read(
                "account.account", [("type.receivable", "=", True)], ["id"], limit=1
            )
            (category,) = await rpc.model(
                "product.category", "read", [(await self.erp.fixed())["category"]], ["account_revenue"]
            )
            (journal,) = await rpc.search_read("account.journal", [("type", "=", "revenue")], ["id"], limit=1)
            self._accounts = (receivable["id"], category["account_revenue"], journal["id"])
        return self._accounts


class TrytonSalesOrders:
    def __init__(self, erp: TrytonErp, orders: TrytonOrders) -> None:
        self.erp = erp
        self.orders = orders

    async def _emit_outcome(self, tx: Tx, sale: dict) -> None:
        so = await self.orders.sales_order_pb(sale)
        if so.status == erp_pb2.SALES_ORDER_STATUS_REJECTED:
            code = "CREDIT_LIMIT_EXCEEDED" if "credit limit" in so.status_reason else "REJECTED_BY_ERP"
            await tx.emit(
                "erp.salesorder.rejected",
                msgs.SalesOrderRejected(order_id=so.order_id, reason_code=code, reason=so.status_reason),
                key=so.order_id,
            )
        else:
            await tx.emit("erp.salesorder.accepted", msgs.SalesOrderAccepted(sales_order=so), key=so.order_id)

    @permanent_on_refusal
    async def create(self, tx: Tx, so: erp_pb2.SalesOrder) -> None:
        if not so.order_id:
            raise PermanentError("CreateSalesOrder without order_id")
        erp, rpc = self.erp, self.erp.rpc
        sale = await self.orders.sale(so.order_id)
        if sale is not None and sale["state"] not in ("draft", "quotation"):
            await self._emit_outcome(tx, sale)  # done before (a redelivery, or a crash before the ack)
            return
        lines = contract.sales_order_lines(so)
        party_id = await erp.party(so.customer_id)
        customer = await read_customer(erp, party_id) if party_id is not None else None
        currencies = {x.unit_price.currency_code for x in so.lines}
        # Crossdock's own checks first (Tryton's credit rule decides the rest, below).
        decision = domain.decide_sales_order(_no_limit(customer), lines, currencies, so.customer_id)
        if not decision.accepted:
            await tx.emit(
                "erp.salesorder.rejected",
                msgs.SalesOrderRejected(
                    order_id=so.order_id, reason_code=decision.reason_code, reason=decision.reason
                ),
                key=so.order_id,
            )
            return
        if sale is None:
            products = await erp.products([x.sku for x in lines])
            if missing := sorted({x.sku for x in lines} - set(products)):
                raise PermanentError(f"Tryton has no product {', '.join(missing)}")
            (address,) = await rpc.model("party.party", "read", [party_id], ["addresses"])
            addr = address["addresses"][0] if address["addresses"] else None
            unit = (await erp.fixed())["unit"]
            (sale_id,) = await rpc.model(
                "sale.sale",
                "create",
                [
                    {
                        "party": party_id,
                        "invoice_address": addr,
                        "shipment_address": addr,
                        "reference": so.order_id,
                        "warehouse": (await erp.fixed())["sale_warehouse"],
                        "invoice_method": "manual",
                        "shipment_method": "manual",
                        "lines": [
                            [
                                "create",
                                [
                                    {
                                        "type": "line",
                                        "sequence": x.line_number,
                                        "product": products[x.sku],
                                        "quantity": x.quantity,
                                        "unit_price": to_decimal(x.unit_price),
                                        "unit": unit,
                                    }
                                    for x in lines
                                ],
                            ]
                        ],
                    }
                ],
            )
            await erp.remember("sale", so.order_id, sale_id, tx)
        else:
            sale_id = sale["id"]
        try:
            # Resumed where a crash left it: quoted already, or still a draft.
            if sale is None or sale["state"] == "draft":
                await rpc.model("sale.sale", "quote", [sale_id])
            await rpc.model("sale.sale", "confirm", [sale_id])
        except TrytonUserError as refused:
            if "credit limit" not in refused.message:
                raise  # a permanent error with Tryton's message (dead-lettered, replayable)
            await rpc.model("sale.sale", "write", [sale_id], {"comment": f"{REJECTED}\n{refused.message}"})
            await rpc.model("sale.sale", "cancel", [sale_id])
            log.info("tryton.sale_refused", order_id=so.order_id, reason=refused.message)
        committed_in_tryton()
        (sale,) = await rpc.model("sale.sale", "read", [sale_id], SALE_FIELDS)
        await self._emit_outcome(tx, sale)

    async def _ignore_open(self, sale: dict, cancel: dict[int, int], reason: str, key: str) -> None:
        lines, _ = await self.orders.order_lines(sale)
        by_number = {x["sequence"]: x for x in lines}
        if cancel:
            await self.orders.book_invoice(
                sale, by_number, cancel, reference=key, description=reason, cancel=True
            )

    @permanent_on_refusal
    async def cancel(self, tx: Tx, cmd: msgs.CancelSalesOrder) -> None:
        if not cmd.order_id:
            raise PermanentError("CancelSalesOrder without order_id")
        sale = await self.orders.sale(cmd.order_id)
        status = None
        reason = "no such sales order"
        if sale is not None:
            _, lines = await self.orders.order_lines(sale)
            status, reason = await self.orders.status(sale, lines)
        decision = domain.decide_cancel(status)
        if decision.ignore:
            log.warning("salesorder.cancel_ignored", order_id=cmd.order_id, status=status)
            return
        if decision.cancel:
            open_ = {x.line_number: x.open for x in lines if x.open > 0}
            await self._ignore_open(sale, open_, cmd.reason, f"CANCEL-{cmd.order_id}")
            await self.erp.rpc.model(
                "sale.sale", "write", [sale["id"]], {"comment": f"{CANCELLED}\n{cmd.reason}"}
            )
            reason = cmd.reason
        await tx.emit(
            "erp.salesorder.cancelled",
            msgs.SalesOrderCancelled(order_id=cmd.order_id, reason=reason),
            key=cmd.order_id,
        )

    @permanent_on_refusal
    async def cancel_lines(self, tx: Tx, cmd: msgs.CancelSalesOrderLines) -> None:
        if not cmd.order_id:
            raise PermanentError("CancelSalesOrderLines without order_id")
        sale = await self.orders.sale(cmd.order_id)
        if sale is None:
            raise PermanentError(f"cannot cancel lines of sales order {cmd.order_id!r}: unknown")
        _, lines = await self.orders.order_lines(sale)
        status, _ = await self.orders.status(sale, lines)
        if status != "ACCEPTED":
            raise PermanentError(f"cannot cancel lines of sales order {cmd.order_id!r}: {status}")
        try:
            decision = domain.cancel_lines(
                lines, [domain.Line(c.line_number, c.sku, c.quantity) for c in cmd.lines]
            )
        except domain.LinesRefused as exc:
            raise PermanentError(f"{exc}: sales order {cmd.order_id}") from None
        await self._ignore_open(
            sale,
            decision.cancelled,
            cmd.reason or "lines cancelled",
            f"CANCEL-LINES-{cmd.order_id}-{len(sale['invoices_ignored']) + 1}",
        )
        sale = await self.orders.sale(cmd.order_id)
        await tx.emit(
            "erp.salesorder.lines_cancelled",
            msgs.SalesOrderLinesCancelled(
                sales_order=await self.orders.sales_order_pb(sale), reason=cmd.reason
            ),
            key=cmd.order_id,
        )

    async def get(self, order_id: str) -> erp_pb2.SalesOrder:
        contract.require(order_id=order_id)
        sale = await self.orders.sale(order_id)
        if sale is None:
            raise NotFound("sales order", order_id)
        return await self.orders.sales_order_pb(sale)


def _no_limit(customer: erp_pb2.Customer | None) -> domain.Credit | None:
    """The customer's credit for Crossdock's own checks, without the limit (Tryton's rule
    decides that), so that only unknown, blocked, invalid and wrong-currency orders are
    refused here."""
    if customer is None:
        return None
    c = credit_of(customer)
    return domain.Credit(c.currency_code, 2**62, 0, 0, c.blocked)


class TrytonInvoicing:
    def __init__(self, erp: TrytonErp, orders: TrytonOrders) -> None:
        self.erp = erp
        self.orders = orders

    async def _emit(self, tx: Tx, invoice_id: int) -> None:
        (invoice,) = await self.erp.rpc.model("account.invoice", "read", [invoice_id], INVOICE_FIELDS)
        pb = await self.orders.invoice_pb(invoice)
        await tx.emit("erp.invoice.posted", msgs.InvoicePosted(invoice=pb), key=pb.order_id)

    @permanent_on_refusal
    async def post(self, tx: Tx, cmd: msgs.PostInvoice) -> None:
        """Invoice a shipment at the order's prices: exactly one invoice per shipment,
        looked up by its shipment id before it is made (a crash after Tryton committed
        and before the ack leaves one invoice, posted on the retry if it was not)."""
        if not cmd.order_id or not cmd.shipment_id:
            raise PermanentError("PostInvoice needs order_id and shipment_id")
        rpc = self.erp.rpc
        existing = await rpc.search_read(
            "account.invoice", [("reference", "=", cmd.shipment_id), ("type", "=", "out")], ["state"], limit=1
        )
        if existing:
            if existing[0]["state"] not in ("posted", "paid"):
                await self.orders.post(existing[0]["id"])
            await self._emit(tx, existing[0]["id"])
            return
        sale = await self.orders.sale(cmd.order_id)
        status = None
        if sale is not None:
            sale_lines, lines = await self.orders.order_lines(sale)
            status, _ = await self.orders.status(sale, lines)
        if problem := domain.invoiceable(status, cmd.order_id):
            raise PermanentError(problem)
        try:
            invoiced = domain.invoice_lines(
                domain.open_lines(lines),
                [domain.Line(x.line_number, x.sku, x.quantity) for x in cmd.shipped_lines],
            )
        except domain.InvoiceRefused as exc:
            raise PermanentError(f"shipment {cmd.shipment_id} of order {cmd.order_id}: {exc}") from None
        posted_before = len(
            await rpc.model(
                "account.invoice", "search", [("description", "like", f"INV-{cmd.order_id}-%")], 0, None, None
            )
        )
        invoice_id = await self.orders.book_invoice(
            sale,
            {x["sequence"]: x for x in sale_lines},
            {x.line_number: x.quantity for x in invoiced},
            reference=cmd.shipment_id,
            description=domain.invoice_number(cmd.order_id, posted_before),
        )
        committed_in_tryton()
        await self._emit(tx, invoice_id)

    async def list(self, page_size: int, page_token: str, order_id: str):
        from .masterdata import page

        size, key = page(page_size, page_token)
        domain_ = [
            ("type", "=", "out"),
            ("state", "in", ["posted", "paid"]),
            ("description", "like", "INV-%"),
        ]
        if order_id:
            domain_.append(("description", "like", f"INV-{order_id}-%"))
        if key:
            domain_.append(("description", ">", str(key[0])))
        invoices = await self.erp.rpc.search_read(
            "account.invoice", domain_, INVOICE_FIELDS, limit=size + 1, order=[("description", "ASC")]
        )
        more = len(invoices) > size
        found = [await self.orders.invoice_pb(i) for i in invoices[:size]]
        if order_id:
            found = [i for i in found if i.order_id == order_id]
        return found, encode_token([found[-1].invoice_id]) if more and found else ""
