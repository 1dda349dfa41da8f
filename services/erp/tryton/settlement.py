"""The settlement export on Tryton: the posted invoices (and credit notes) Crossdock
booked in a period, read from Tryton, with their totals computed from the same rows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

from crossdock.common.v1.common_pb2 import Money
from crossdock.erp.v1 import erp_pb2

from .. import domain
from .base import TrytonErp, to_minor
from .sales import INVOICE_FIELDS, TrytonOrders

CHUNK = 1000


def _naive(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(tzinfo=None)


class TrytonSettlement:
    def __init__(self, erp: TrytonErp, orders: TrytonOrders) -> None:
        self.erp = erp
        self.orders = orders

    async def _documents(self, start: datetime, end: datetime) -> list[dict]:
        """Posted invoices and credit notes of the period, in one read (Tryton's snapshot
        of that call): posting time = the invoice's last write (the post)."""
        return await self.erp.rpc.search_read(
            "account.invoice",
            [
                ("type", "=", "out"),
                ("state", "in", ["posted", "paid"]),
                ("description", "!=", None),
                ("write_date", ">=", _naive(start)),
                ("write_date", "<", _naive(end)),
            ],
            [*INVOICE_FIELDS, "write_date"],
            order=[("write_date", "ASC"), ("id", "ASC")],
        )

    async def _records(self, docs: list[dict]) -> list[erp_pb2.SettlementRecord]:
        currency = await self.erp.currency()
        out = []
        for d in docs:
            inv = await self.orders.invoice_pb(d)
            credit = d["total_amount"] < 0
            number = d["description"] or ""
            r = erp_pb2.SettlementRecord(
                document_type=(
                    erp_pb2.SETTLEMENT_DOCUMENT_TYPE_CREDIT_MEMO
                    if credit
                    else erp_pb2.SETTLEMENT_DOCUMENT_TYPE_INVOICE
                ),
                document_id=domain.credit_memo_number(number) if credit else inv.invoice_id,
                customer_id=inv.customer_id,
                order_id=inv.order_id,
                reference=number if credit else inv.shipment_id,
                amount=Money(currency_code=currency, amount_minor=abs(to_minor(d["total_amount"]))),
            )
            r.post_time.FromDatetime(d["write_date"].replace(tzinfo=UTC))
            out.append(r)
        return out

    @staticmethod
    def _totals(records: list[erp_pb2.SettlementRecord]) -> list[erp_pb2.CurrencyTotals]:
        out: dict[str, erp_pb2.CurrencyTotals] = {}
        for r in records:
            t = out.setdefault(
                r.amount.currency_code, erp_pb2.CurrencyTotals(currency_code=r.amount.currency_code)
            )
            if r.document_type == erp_pb2.SETTLEMENT_DOCUMENT_TYPE_CREDIT_MEMO:
                t.credit_memo_count += 1
                t.credited_minor += r.amount.amount_minor
            else:
                t.invoice_count += 1
                t.invoiced_minor += r.amount.amount_minor
        for t in out.values():
            t.net_minor = t.invoiced_minor - t.credited_minor
        return [out[c] for c in sorted(out)]

    async def export(self, start: datetime, end: datetime) -> AsyncIterator[erp_pb2.ExportSettlementResponse]:
        records = await self._records(await self._documents(start, end))
        records.sort(key=lambda r: (r.document_type, r.post_time.ToDatetime(), r.document_id))
        totals = self._totals(records)
        yield erp_pb2.ExportSettlementResponse(totals=totals, record_count=len(records))
        for i in range(0, len(records), CHUNK):
            yield erp_pb2.ExportSettlementResponse(records=records[i : i + CHUNK])

    async def totals(self, start: datetime, end: datetime) -> list[erp_pb2.CurrencyTotals]:
        return self._totals(await self._records(await self._documents(start, end)))
