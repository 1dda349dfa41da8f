"""`crossdock dlq list|show|replay|discard`: the dead-letter stream, through
the DeadLetterService that every service serves (order-to-ship's address by
default, CROSSDOCK_ORDERTOSHIP_ADDR)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from crossdock.admin.v1 import admin_pb2 as pb

from .rpc import Stubs, console, run

app = typer.Typer(help=__doc__, no_args_is_help=True)


def _run(method: str, request):
    async def call():
        async with Stubs() as s:
            return await getattr(s.dead_letters, method)(request, timeout=10)
    return run(call())


@app.command("list")
def list_(consumer: Annotated[str, typer.Option(help="only this consumer's")] = "",
          limit: int = 100) -> None:
    """Dead letters, oldest first: which consumer gave up on what, and why."""
    resp = _run("ListDeadLetters", pb.ListDeadLettersRequest(consumer=consumer, page_size=limit))
    t = Table("id", "when", "consumer", "subject", "attempts", "kind", "reason",
              title=f"{resp.total} dead letter(s)")
    for d in resp.dead_letters:
        t.add_row(d.dead_letter_id, d.dead_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"), d.consumer,
                  d.subject, str(d.attempts), "permanent" if d.permanent else "retries exhausted",
                  d.reason[:80])
    console.print(t)


@app.command()
def show(dead_letter_id: str) -> None:
    """One dead letter with its headers and decoded body."""
    d = _run("GetDeadLetter", pb.GetDeadLetterRequest(dead_letter_id=dead_letter_id)).dead_letter
    console.print(f"[bold]dead letter {d.dead_letter_id}[/bold]: {d.subject} → {d.consumer}, "
                  f"{d.attempts} attempt(s), {'permanent' if d.permanent else 'retries exhausted'}")
    console.print(f"reason: {d.reason}")
    console.print_json(json.dumps(dict(d.headers)))
    if d.body_json:
        console.print_json(d.body_json)
    else:
        console.print(f"body: {len(d.body)} bytes that do not decode as {d.event_type or 'the subject type'}")


@app.command()
def replay(dead_letter_ids: list[str]) -> None:
    """Publish dead letters again to their subjects once the cause is fixed (one effect at most)."""
    for dead_letter_id in dead_letter_ids:
        r = _run("ReplayDeadLetter", pb.ReplayDeadLetterRequest(dead_letter_id=dead_letter_id))
        console.print(f"{dead_letter_id}: replayed to {r.subject} as {r.message_id}")


@app.command()
def discard(dead_letter_ids: list[str]) -> None:
    """Delete dead letters that must not be processed."""
    for dead_letter_id in dead_letter_ids:
        _run("DiscardDeadLetter", pb.DiscardDeadLetterRequest(dead_letter_id=dead_letter_id))
        console.print(f"{dead_letter_id}: discarded")
