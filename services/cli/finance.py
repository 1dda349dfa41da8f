"""`crossdock reconcile` and `crossdock export settlement`: the batch jobs of the
finance and warehouse teams.

- reconcile: the ERP inventory ledger against WMS stock (through the
  reconciliation API of the returns process, CROSSDOCK_RETURNS_ADDR); a table
  on the terminal, a JSON or CSV report with --out, corrections with --repair.
  Exit status 1 when drift remains (not repaired).
- export settlement: the invoices and credit memos of a period, streamed from
  ERP (CROSSDOCK_ERP_ADDR) into a CSV or JSON-lines file, written to a
  temporary file and renamed into place only once complete and checked (the
  rows add up to the totals ERP computed in the same snapshot).
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from crossdock.erp.v1 import erp_pb2
from crossdock.reconciliation.v1 import reconciliation_pb2 as rpb

from .rpc import Stubs, console, money, run

# `crossdock reconcile` (a command of the root) and `crossdock export ...`.
app = typer.Typer()
export_app = typer.Typer(help="Batch exports for finance.", no_args_is_help=True)


# ---- atomic files ----

class AtomicFile:
    """Write to a temporary file next to ``path``; rename it into place on commit.

    A crash (or an error) leaves no half-written file at ``path``: either the
    previous file or the complete new one.
    """

    def __init__(self, path: Path, newline: str | None = "") -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
        self.file = open(self.tmp, "w", encoding="utf-8", newline=newline)  # noqa: SIM115

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename itself survives a crash
        finally:
            os.close(fd)

    def abort(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


# ---- reconcile ----

KIND_NAMES = {v: k.removeprefix("DRIFT_KIND_") for k, v in rpb.DriftKind.items()}
REPORT_FIELDS = ["sku", "warehouse_id", "kind", "erp_quantity", "wms_quantity", "delta", "since",
                 "erp_sequence", "wms_sequence", "repaired", "detail"]


def drift_rows(drifts) -> list[dict]:
    return [{"sku": d.sku, "warehouse_id": d.warehouse_id, "kind": KIND_NAMES[d.kind],
             "erp_quantity": d.erp_quantity, "wms_quantity": d.wms_quantity, "delta": d.delta,
             "since": d.since_time.ToDatetime(tzinfo=UTC).isoformat() if d.HasField("since_time") else "",
             "erp_sequence": d.erp_sequence, "wms_sequence": d.wms_sequence, "repaired": d.repaired,
             "detail": d.detail} for d in drifts]


def write_report(path: Path, resp: rpb.ReconcileInventoryResponse) -> None:
    """JSON (the run and its drift) or, for a .csv path, one CSV row per drifted position."""
    rows = drift_rows(resp.drifts)
    out = AtomicFile(path)
    try:
        if path.suffix.lower() == ".csv":
            writer = csv.DictWriter(out.file, fieldnames=REPORT_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        else:
            run_ = resp.run
            json.dump({"run": {
                "run_id": run_.run_id, "repair": run_.repair, "warehouse_id": run_.warehouse_id,
                "grace_seconds": run_.grace_period.ToTimedelta().total_seconds(),
                "start_time": run_.start_time.ToDatetime(tzinfo=UTC).isoformat(),
                "end_time": run_.end_time.ToDatetime(tzinfo=UTC).isoformat(),
                "positions_checked": run_.positions_checked, "in_flight": run_.in_flight,
                "drift_count": run_.drift_count, "repaired_count": run_.repaired_count,
            }, "drift": rows}, out.file, indent=2)
            out.file.write("\n")
        out.commit()
    except BaseException:
        out.abort()
        raise


@app.command()
def reconcile(
    repair: Annotated[bool, typer.Option(help="correct the ERP ledger to WMS truth (audited)")] = False,
    warehouse: Annotated[str, typer.Option(help="only this warehouse")] = "",
    grace: Annotated[float | None, typer.Option(
        help="seconds after which an unapplied WMS movement counts as lost (service default)")] = None,
    out: Annotated[Path | None, typer.Option(help="also write the report: .json or .csv")] = None,
) -> None:
    """Compare the ERP inventory ledger with WMS stock per SKU and warehouse; report (and repair) drift."""
    req = rpb.ReconcileInventoryRequest(repair=repair, warehouse_id=warehouse)
    if grace is not None:
        req.grace_period.CopyFrom(Duration(seconds=int(grace), nanos=int((grace % 1) * 1e9)))

    async def main() -> rpb.ReconcileInventoryResponse:
        async with Stubs() as s:
            stub = s.reconciliation
            with console.status("reconciling ERP ledger with WMS stock"):
                return await stub.ReconcileInventory(req, timeout=600)

    resp = run(main())
    r = resp.run
    seconds = (r.end_time.ToDatetime() - r.start_time.ToDatetime()).total_seconds()
    if resp.drifts:
        t = Table("warehouse", "sku", "kind", "ERP qty", "WMS qty", "delta", "since", "ERP seq",
                  "WMS seq", "repaired", title=f"Inventory drift — run {r.run_id}")
        for d in drift_rows(resp.drifts):
            t.add_row(d["warehouse_id"], d["sku"], d["kind"], str(d["erp_quantity"]),
                      str(d["wms_quantity"]), f"{d['delta']:+d}", d["since"][:19].replace("T", " "),
                      str(d["erp_sequence"]), str(d["wms_sequence"]),
                      "[green]yes[/green]" if d["repaired"] else "[red]no[/red]")
        console.print(t)
    console.print(f"{r.run_id}: {r.positions_checked} position(s) checked in {seconds:.2f}s, "
                  f"{r.in_flight} with movements in flight (not drift), {r.drift_count} drifted, "
                  f"{r.repaired_count} repaired")
    if out:
        write_report(out, resp)
        console.print(f"report written to {out}")
    if r.drift_count > r.repaired_count:
        raise typer.Exit(1)


# ---- settlement export ----

CSV_FIELDS = ["document_type", "document_id", "posted_at", "customer_id", "order_id", "reference",
              "currency", "amount_minor", "amount"]
DOC_TYPES = {erp_pb2.SETTLEMENT_DOCUMENT_TYPE_INVOICE: "INVOICE",
             erp_pb2.SETTLEMENT_DOCUMENT_TYPE_CREDIT_MEMO: "CREDIT_MEMO"}


@dataclass
class Totals:
    invoice_count: int = 0
    invoiced_minor: int = 0
    credit_memo_count: int = 0
    credited_minor: int = 0

    @property
    def net_minor(self) -> int:
        return self.invoiced_minor - self.credited_minor

    @classmethod
    def of(cls, t: erp_pb2.CurrencyTotals) -> Totals:
        return cls(t.invoice_count, t.invoiced_minor, t.credit_memo_count, t.credited_minor)


@dataclass
class ExportResult:
    rows: int = 0
    seconds: float = 0.0
    # per currency: what the rows add up to, and ERP's totals of the same snapshot
    from_rows: dict[str, Totals] = field(default_factory=dict)
    from_erp: dict[str, Totals] = field(default_factory=dict)


def parse_when(text: str) -> datetime:
    """An ISO date (midnight UTC) or date-time (UTC unless it says otherwise)."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected an ISO date or date-time") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def _timestamp(when: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


async def export_settlement(erp, start: datetime, end: datetime, out: Path, fmt: str,
                            on_start: Callable[[int], None] = lambda total: None,
                            on_rows: Callable[[int], None] = lambda n: None) -> ExportResult:
    """Stream the period from ERP into ``out`` (csv or jsonl), atomically; verify the totals."""
    result = ExportResult()
    started = time.monotonic()
    target = AtomicFile(out, newline="" if fmt == "csv" else None)
    try:
        buf = io.StringIO()
        writer = csv.writer(buf) if fmt == "csv" else None
        if writer:
            writer.writerow(CSV_FIELDS)
        call = erp.ExportSettlement(erp_pb2.ExportSettlementRequest(
            start_time=_timestamp(start), end_time=_timestamp(end)), timeout=24 * 3600)
        first = True
        async for chunk in call:
            if first:
                result.from_erp = {t.currency_code: Totals.of(t) for t in chunk.totals}
                on_start(chunk.record_count)
                first = False
            for r in chunk.records:
                kind = DOC_TYPES[r.document_type]
                cur, minor = r.amount.currency_code, r.amount.amount_minor
                t = result.from_rows.setdefault(cur, Totals())
                if kind == "INVOICE":
                    t.invoice_count += 1
                    t.invoiced_minor += minor
                else:
                    t.credit_memo_count += 1
                    t.credited_minor += minor
                    minor = -minor
                posted = r.post_time.ToJsonString()
                if writer:
                    writer.writerow((kind, r.document_id, posted, r.customer_id, r.order_id,
                                     r.reference, cur, minor, money(minor, cur)))
                else:
                    buf.write(json.dumps({
                        "document_type": kind, "document_id": r.document_id, "posted_at": posted,
                        "customer_id": r.customer_id, "order_id": r.order_id, "reference": r.reference,
                        "currency": cur, "amount_minor": minor, "amount": money(minor, cur)}))
                    buf.write("\n")
            result.rows += len(chunk.records)
            target.file.write(buf.getvalue())
            buf.seek(0)
            buf.truncate()
            on_rows(result.rows)
        documented = {c: t for c, t in result.from_erp.items() if t.invoice_count or t.credit_memo_count}
        if result.from_rows != documented:
            raise RuntimeError("the exported rows do not add up to ERP's totals of the same snapshot: "
                               f"rows {result.from_rows}, ERP {result.from_erp}")
        target.commit()
    except BaseException:
        target.abort()
        raise
    result.seconds = time.monotonic() - started
    return result


def totals_table(title: str, totals: dict[str, Totals]) -> Table:
    t = Table("currency", "invoices", "invoiced", "credit memos", "credited", "net", title=title)
    for cur in sorted(totals):
        x = totals[cur]
        t.add_row(cur, str(x.invoice_count), money(x.invoiced_minor, cur), str(x.credit_memo_count),
                  money(x.credited_minor, cur), money(x.net_minor, cur))
    return t


@export_app.command("settlement")
def settlement(
    from_: Annotated[str, typer.Option("--from", help="start, inclusive: ISO date or date-time (UTC)")],
    to: Annotated[str, typer.Option("--to", help="end, exclusive: ISO date or date-time (UTC)")],
    out: Annotated[Path, typer.Option(help="the file to write (.csv or .jsonl)")],
    fmt: Annotated[str, typer.Option("--format", help="csv or jsonl (default: from --out's extension)")] = "",
) -> None:
    """Invoices and credit memos posted in [--from, --to): streamed, written atomically, totals checked."""
    start, end = parse_when(from_), parse_when(to)
    fmt = (fmt or ("jsonl" if out.suffix.lower() in (".jsonl", ".ndjson", ".json") else "csv")).lower()
    if fmt not in ("csv", "jsonl"):
        raise typer.BadParameter("csv or jsonl", param_hint="--format")
    if end <= start:
        raise typer.BadParameter("must be after --from", param_hint="--to")

    async def main() -> tuple[ExportResult, dict[str, Totals]]:
        async with Stubs() as s:
            erp = s.erp
            with Progress(TextColumn("exporting"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                          transient=True) as progress:
                task = progress.add_task("rows", total=None)
                result = await export_settlement(
                    erp, start, end, out, fmt,
                    on_start=lambda total: progress.update(task, total=total),
                    on_rows=lambda n: progress.update(task, completed=n))
            own = await erp.GetSettlementTotals(erp_pb2.GetSettlementTotalsRequest(
                start_time=_timestamp(start), end_time=_timestamp(end)), timeout=600)
        return result, {t.currency_code: Totals.of(t) for t in own.totals}

    result, own = run(main())
    console.print(totals_table(f"Settlement {start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M} UTC",
                               result.from_rows))
    rate = result.rows / result.seconds if result.seconds else 0
    console.print(f"{result.rows} document(s) written to {out} ({fmt}) in {result.seconds:.1f}s "
                  f"({rate:,.0f}/s); the rows add up to ERP's totals of the exported snapshot")
    if own == result.from_rows:
        console.print("[green]totals equal ERP's own totals for the period[/green]")
    else:
        console.print("[yellow]ERP's totals for the period have changed since the export's snapshot "
                      "(documents posted meanwhile: the period is still open)[/yellow]")
