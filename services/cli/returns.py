"""`crossdock returns create|show|list|cancel`: customer returns (RMAs) through the
returns process service (CROSSDOCK_RETURNS_ADDR)."""

from __future__ import annotations

import uuid
from typing import Annotated

import typer
from google.protobuf.duration_pb2 import Duration
from rich.table import Table

from crossdock.returns.v1 import returns_pb2 as pb

from . import workload
from .rpc import Stubs, console, money, run

app = typer.Typer(help=__doc__, no_args_is_help=True)
REASONS = [n.removeprefix("RETURN_REASON_") for n in pb.ReturnReason.keys() if not n.endswith("UNSPECIFIED")]


def status_name(value: int) -> str:
    return pb.ReturnStatus.Name(value).removeprefix("RETURN_STATUS_")


def parse_line(spec: str) -> pb.ReturnLine:
    """LINE=QTY:REASON (order line number) or SKU=QTY:REASON."""
    target, _, rest = spec.partition("=")
    qty, _, reason = rest.partition(":")
    reason = (reason or "NOT_NEEDED").upper()
    if not target or not qty.isdigit() or reason not in REASONS:
        raise typer.BadParameter(f"{spec!r}: expected LINE=QTY:REASON or SKU=QTY:REASON, reason one of "
                                 + ", ".join(REASONS), param_hint="--line")
    line = pb.ReturnLine(quantity=int(qty), reason=pb.ReturnReason.Value(f"RETURN_REASON_{reason}"))
    if target.isdigit():
        line.line_number = int(target)
    else:
        line.sku = target
    return line


def print_return(r: pb.CustomerReturn) -> None:
    console.print(f"[bold]{r.return_id}[/bold] order {r.order_id} ({r.customer_id}) — "
                  f"{status_name(r.status)}" + (f" ({r.status_reason})" if r.status_reason else ""))
    cur = r.expected_credit.currency_code
    console.print(f"RMA {r.rma_number or '-'}, warehouse {r.warehouse_id}, expected credit "
                  f"{money(r.expected_credit.amount_minor, cur)} {cur}, credited "
                  f"{money(r.credited.amount_minor, cur)} {cur} {r.credit_memo_id}, "
                  f"trace {r.trace_id or '-'}")
    lines = Table("line", "sku", "qty", "reason", "received", "restock", "scrap", "refuse", "credit")
    for x in r.lines:
        lines.add_row(str(x.line_number), x.sku, str(x.quantity),
                      pb.ReturnReason.Name(x.reason).removeprefix("RETURN_REASON_"),
                      str(x.received_quantity), str(x.restocked_quantity), str(x.scrapped_quantity),
                      str(x.refused_quantity), money(x.credit.amount_minor, cur))
    console.print(lines)
    if r.timeline:
        t = Table("time", "source", "step", "status", "detail")
        for e in r.timeline:
            t.add_row(e.time.ToDatetime().strftime("%H:%M:%S.%f")[:-3], e.source, e.step,
                      status_name(e.status), e.detail)
        console.print(t)


@app.command()
def create(
    order_id: str,
    line: Annotated[list[str], typer.Option(help="LINE=QTY:REASON or SKU=QTY:REASON, repeatable; "
                                            "reason " + "|".join(REASONS))],
    within: Annotated[float, typer.Option(help="receive window in hours (0: the service default)")] = 0,
    request_id: Annotated[str, typer.Option(help="idempotency key; a new one when empty")] = "",
) -> None:
    """Request a return of lines of a shipped order."""
    req = pb.CreateReturnRequest(request_id=request_id or str(uuid.uuid4()), order_id=order_id,
                                 lines=[parse_line(s) for s in line])
    if within:
        req.receive_within.CopyFrom(Duration(seconds=int(within * 3600)))

    async def main() -> None:
        async with Stubs() as s:
            r = (await s.returns.CreateReturn(req, timeout=30)).customer_return
        console.print(f"{r.return_id}: {status_name(r.status)} — follow it with "
                      f"`crossdock returns show {r.return_id}`")
    run(main())


@app.command()
def show(return_id: str) -> None:
    """A return with its lines, dispositions, credit and timeline."""
    async def main() -> None:
        async with Stubs() as s:
            r = (await s.returns.GetReturn(
                pb.GetReturnRequest(return_id=return_id), timeout=10)).customer_return
        print_return(r)
    run(main())


@app.command("list")
def list_(status: str = "", order: str = "", customer: str = "", limit: int = 50) -> None:
    """List returns (oldest first)."""
    async def main() -> None:
        req = pb.ListReturnsRequest(page_size=limit, order_id=order, customer_id=customer,
                                    status=pb.ReturnStatus.Value(f"RETURN_STATUS_{status.upper()}")
                                    if status else 0)
        async with Stubs() as s:
            resp = await s.returns.ListReturns(req, timeout=10)
        t = Table("return", "order", "customer", "status", "RMA", "credited", "reason")
        for r in resp.returns:
            cur = r.credited.currency_code
            t.add_row(r.return_id, r.order_id, r.customer_id, status_name(r.status), r.rma_number,
                      f"{money(r.credited.amount_minor, cur)} {cur}", r.status_reason)
        console.print(t)
    run(main())


@app.command()
def cancel(return_id: str, reason: str = "") -> None:
    """Cancel a return until its goods are received (the RMA is cancelled, nothing credited)."""
    async def main() -> None:
        async with Stubs() as s:
            r = (await s.returns.CancelReturn(
                pb.CancelReturnRequest(return_id=return_id, reason=reason), timeout=10)).customer_return
        console.print(f"{r.return_id}: {status_name(r.status)}")
    run(main())


# ---- the sample workload (`crossdock demo`, `make run`) ----

OUTCOME_LABELS = {"CREDITED": "return credited", "PARTIALLY_CREDITED": "return partially credited",
                  "REFUSED": "return refused"}


async def demo_returns(stub, out: workload.Outcome, progress) -> None:
    """A full, a partial and a refused return of the demo's invoiced orders."""
    requests = workload.sample_returns(out.orders)
    if not requests:
        return
    task = progress.add_task("returns  ", total=len(requests))
    await workload.run_returns(stub, requests, out,
                               on_settled=lambda k: progress.update(task, completed=k))


def add_outcome_rows(table: Table, out: workload.Outcome) -> None:
    """One row per return outcome of the demo, under the orders."""
    if not out.returns:
        return
    table.add_section()
    for status, count in sorted(out.return_counts().items(), key=lambda kv: kv[0]):
        example = next(r for r in out.returns.values() if status_name(r.status) == status)
        cur = example.credited.currency_code
        detail = f"{example.return_id} ({example.rma_number or 'no RMA'}), credited " \
                 f"{money(example.credited.amount_minor, cur)} {cur}"
        if example.status_reason:
            detail += f" — {example.status_reason}"
        table.add_row(OUTCOME_LABELS.get(status, f"return {status.lower()}"), str(count), detail)
