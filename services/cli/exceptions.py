"""`crossdock exceptions list|show|resolve|policy`: the exception work list of
order-to-ship (short picks, damage, stock discrepancies, carrier failures) and
the exception policies of customers and channels (CROSSDOCK_ORDERTOSHIP_ADDR)."""

from __future__ import annotations

import getpass
from typing import Annotated

import typer
from rich.table import Table

from crossdock.ordertoship.v1 import order_to_ship_pb2 as pb

from .rpc import Stubs, console, run

app = typer.Typer(help=__doc__, no_args_is_help=True)
policy_app = typer.Typer(help="Exception policies: SHIP_PARTIAL, HOLD or CANCEL_LINES.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")

ACTIONS = [n.removeprefix("RESOLUTION_ACTION_") for n in pb.ResolutionAction.keys()
           if not n.endswith("UNSPECIFIED")]
POLICIES = [n.removeprefix("EXCEPTION_POLICY_") for n in pb.ExceptionPolicy.keys()
            if not n.endswith("UNSPECIFIED")]


def _name(enum, value: int, prefix: str) -> str:
    return enum.Name(value).removeprefix(prefix) if value else "-"


def _lines(items) -> str:
    return ", ".join(f"{q.sku} x{q.quantity}" for q in items) or "-"


def print_exception(e: pb.OrderException) -> None:
    console.print(f"[bold]{e.exception_id}[/bold] {_name(pb.ExceptionKind, e.kind, 'EXCEPTION_KIND_')} "
                  f"on order {e.order_id} ({e.customer_id}), shipment {e.wave} — "
                  f"{_name(pb.ExceptionStatus, e.status, 'EXCEPTION_STATUS_')}")
    console.print(f"  missing: {_lines(e.lines)}; {e.detail}")
    action = _name(pb.ResolutionAction, e.action, "RESOLUTION_ACTION_")
    decided = (f"; resolved by {e.resolved_by}: {action}" + (f" ({e.note})" if e.note else "")
               if e.resolved_by else "; waiting for a decision")
    console.print(f"  policy {_name(pb.ExceptionPolicy, e.policy, 'EXCEPTION_POLICY_')}{decided}")


@app.command("list")
def list_(
    all_: Annotated[bool, typer.Option("--all", help="resolved ones too (default: open only)")] = False,
    order_id: Annotated[str, typer.Option(help="only this order's")] = "",
    limit: Annotated[int, typer.Option(help="at most this many")] = 50,
) -> None:
    """The work list: open exceptions, oldest first."""
    async def main() -> None:
        async with Stubs() as s:
            r = await s.ots.ListExceptions(pb.ListExceptionsRequest(
                page_size=limit, order_id=order_id, status=0 if all_ else pb.EXCEPTION_STATUS_OPEN))
        t = Table("exception", "order", "kind", "missing", "status", "decided by", "action")
        for e in r.exceptions:
            t.add_row(e.exception_id, e.order_id, _name(pb.ExceptionKind, e.kind, "EXCEPTION_KIND_"),
                      _lines(e.lines), _name(pb.ExceptionStatus, e.status, "EXCEPTION_STATUS_"),
                      e.resolved_by or "-", _name(pb.ResolutionAction, e.action, "RESOLUTION_ACTION_"))
        console.print(t)
        if not r.exceptions:
            console.print("nothing waits for a decision" if not all_ else "no exceptions")
    run(main())


@app.command()
def show(exception_id: str) -> None:
    """One exception and the state of its order."""
    async def main() -> None:
        async with Stubs() as s:
            r = await s.ots.GetException(pb.GetExceptionRequest(exception_id=exception_id))
        print_exception(r.exception)
        status = pb.OrderStatus.Name(r.order.status).removeprefix("ORDER_STATUS_")
        console.print(f"order {r.order.order_id}: {status} ({r.order.status_reason or '-'})")
    run(main())


@app.command()
def resolve(
    exception_id: str,
    action: Annotated[str, typer.Argument(help="|".join(ACTIONS))],
    carrier: Annotated[str, typer.Option(help="the carrier for REASSIGN_CARRIER")] = "",
    note: Annotated[str, typer.Option(help="why (kept in the audit trail)")] = "",
    by: Annotated[str, typer.Option(help="who decides (default: the login name)")] = "",
) -> None:
    """Decide an open exception; the order's workflow resumes."""
    action = action.upper().replace("-", "_")
    if action not in ACTIONS:
        raise typer.BadParameter(f"one of {', '.join(ACTIONS)}", param_hint="ACTION")

    async def main() -> None:
        async with Stubs() as s:
            r = await s.ots.ResolveException(pb.ResolveExceptionRequest(
                exception_id=exception_id, action=pb.ResolutionAction.Value(f"RESOLUTION_ACTION_{action}"),
                resolved_by=by or getpass.getuser(), carrier_id=carrier, note=note))
        print_exception(r.exception)
        console.print(f"order {r.order.order_id} is now "
                      f"{pb.OrderStatus.Name(r.order.status).removeprefix('ORDER_STATUS_')}")
    run(main())


@policy_app.command("set")
def policy_set(
    policy: Annotated[str, typer.Argument(help="|".join(POLICIES) + ", or NONE to remove a customer's "
                                               "or channel's own policy")],
    customer: Annotated[str, typer.Option(help="for this customer")] = "",
    channel_: Annotated[str, typer.Option("--channel", help="for this channel")] = "",
) -> None:
    """Set the policy of a customer, a channel, or (neither given) the default. Orders keep the
    policy in force when they were submitted."""
    policy = policy.upper().replace("-", "_")
    if policy not in POLICIES + ["NONE"]:
        raise typer.BadParameter(f"one of {', '.join(POLICIES)} or NONE", param_hint="POLICY")

    async def main() -> None:
        async with Stubs() as s:
            r = await s.ots.SetExceptionPolicy(pb.SetExceptionPolicyRequest(
                customer_id=customer, channel=channel_,
                policy=0 if policy == "NONE" else pb.ExceptionPolicy.Value(f"EXCEPTION_POLICY_{policy}")))
        policy_name = _name(pb.ExceptionPolicy, r.rule.policy, "EXCEPTION_POLICY_")
        console.print(f"{r.rule.scope} {r.rule.key or ''}: {policy_name}")
    run(main())


@policy_app.command("list")
def policy_list() -> None:
    """Every policy: the default, then per customer and per channel."""
    async def main() -> None:
        async with Stubs() as s:
            r = await s.ots.ListExceptionPolicies(pb.ListExceptionPoliciesRequest())
        t = Table("scope", "key", "policy")
        for rule in r.rules:
            t.add_row(rule.scope, rule.key or "-",
                      _name(pb.ExceptionPolicy, rule.policy, "EXCEPTION_POLICY_"))
        console.print(t)
    run(main())
