"""The built-in ERP's settlement export: the invoices and credit memos of a period, streamed from ONE
snapshot of the store, in bounded memory.

- The records and the totals sent with them come from the same read
  transaction (SQLite: a deferred BEGIN on a connection of its own, so the
  export neither blocks nor is blocked by the service's writer; PostgreSQL:
  REPEATABLE READ), so the totals are exactly what the records add up to.
- Rows are fetched with a server-side cursor (``stream`` + ``yield_per``) and
  sent in chunks: memory does not grow with the number of rows.
- A period is half-open: ``start <= posted_at < end``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

from sqlalchemy import event, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from crossdock.common.v1.common_pb2 import Money
from crossdock.erp.v1 import erp_pb2
from services.mesh.store import Store, async_url

from ..store import credit_memos, invoices

CHUNK = 1000
INVOICE = erp_pb2.SETTLEMENT_DOCUMENT_TYPE_INVOICE
CREDIT_MEMO = erp_pb2.SETTLEMENT_DOCUMENT_TYPE_CREDIT_MEMO


def _on_sqlite_connect(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" event issues BEGIN itself
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA query_only=ON")
    cur.close()


def _on_sqlite_begin(conn) -> None:
    # Deferred: a WAL read snapshot taken at the first read, kept until the end.
    conn.exec_driver_sql("BEGIN")


@asynccontextmanager
async def snapshot(store: Store) -> AsyncIterator[AsyncConnection]:
    """A read-only connection inside one transaction: every query sees the same data."""
    if store.dialect == "sqlite":
        engine = create_async_engine(make_url(async_url(store.url)), poolclass=NullPool)
        event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
        event.listen(engine.sync_engine, "begin", _on_sqlite_begin)
        try:
            async with engine.connect() as conn, conn.begin():
                yield conn
        finally:
            await engine.dispose()
    else:
        async with store.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                yield conn


async def totals(conn: AsyncConnection, start: datetime, end: datetime) -> list[erp_pb2.CurrencyTotals]:
    """Count and sum of the invoices and credit memos of the period, per currency."""
    out: dict[str, erp_pb2.CurrencyTotals] = {}
    for table, count_field, sum_field in ((invoices, "invoice_count", "invoiced_minor"),
                                          (credit_memos, "credit_memo_count", "credited_minor")):
        rows = await conn.execute(
            select(table.c.currency_code, func.count(), func.coalesce(func.sum(table.c.total_minor), 0))
            .where(table.c.posted_at >= start, table.c.posted_at < end)
            .group_by(table.c.currency_code))
        for currency, count, amount in rows:
            t = out.setdefault(currency, erp_pb2.CurrencyTotals(currency_code=currency))
            setattr(t, count_field, int(count))
            setattr(t, sum_field, int(amount))
    for t in out.values():
        t.net_minor = t.invoiced_minor - t.credited_minor
    return [out[c] for c in sorted(out)]


async def export(store: Store, start: datetime, end: datetime,
                 chunk: int = CHUNK) -> AsyncIterator[erp_pb2.ExportSettlementResponse]:
    """First the snapshot's totals and record count, then the records in chunks:
    invoices, then credit memos, each in posting order."""
    async with snapshot(store) as conn:
        sums = await totals(conn, start, end)
        yield erp_pb2.ExportSettlementResponse(
            totals=sums, record_count=sum(t.invoice_count + t.credit_memo_count for t in sums))
        for table, kind, id_col, ref_col in (
                (invoices, INVOICE, invoices.c.invoice_id, invoices.c.shipment_id),
                (credit_memos, CREDIT_MEMO, credit_memos.c.credit_memo_id, credit_memos.c.rma_number)):
            query = (select(id_col, table.c.posted_at, table.c.customer_id, table.c.order_id, ref_col,
                            table.c.currency_code, table.c.total_minor)
                     .where(table.c.posted_at >= start, table.c.posted_at < end)
                     .order_by(table.c.posted_at, id_col)
                     .execution_options(yield_per=chunk))
            result = await conn.stream(query)
            async for rows in result.partitions(chunk):
                records = []
                for doc_id, posted_at, customer_id, order_id, ref, currency, amount in rows:
                    r = erp_pb2.SettlementRecord(
                        document_type=kind, document_id=doc_id, customer_id=customer_id,
                        order_id=order_id, reference=ref,
                        amount=Money(currency_code=currency, amount_minor=amount))
                    r.post_time.FromDatetime(posted_at)
                    records.append(r)
                yield erp_pb2.ExportSettlementResponse(records=records)


class BuiltinSettlement:
    def __init__(self, store: Store) -> None:
        self.store = store

    def export(self, start: datetime, end: datetime) -> AsyncIterator[erp_pb2.ExportSettlementResponse]:
        return export(self.store, start, end)

    async def totals(self, start: datetime, end: datetime) -> list[erp_pb2.CurrencyTotals]:
        async with snapshot(self.store) as conn:
            return await totals(conn, start, end)
