"""Dead letters (operations): grouped by consumer, subject and reason with counts; a dead
letter's headers, its body decoded from Protobuf to JSON (services/mesh/contracts.py), its
attempts and the order or return it belongs to; replay one, replay every one matching a
filter (rate-limited, with progress), discard with a reason. Each replay and discard is
audited and written on the timeline of the order or return the message belongs to."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Annotated

from aiolimiter import AsyncLimiter
from fastapi import FastAPI, Path, Request
from google.protobuf import json_format

from crossdock.admin.v1 import admin_pb2
from services.mesh import contracts

from .. import operations
from ..problems import Problem
from .web import Reader, Web, with_notice

DeadLetterId = Annotated[str, Path(pattern=r"^[1-9][0-9]{0,17}$")]
JobId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]
SCAN_LIMIT = 5000


def decoded(dl: admin_pb2.DeadLetter) -> str:
    """The body as readable JSON (proto field names), or '' when it does not decode."""
    try:
        msg = contracts.message_type(dl.subject)()
        msg.ParseFromString(dl.body)
        return json_format.MessageToJson(msg, preserving_proto_field_name=True, indent=2)
    except Exception:  # noqa: BLE001 - an undecodable body is shown as bytes
        return ""


@dataclass
class Job:
    """A "replay all matching" run: its progress, shown while it goes."""

    job_id: str
    owner: str
    total: int
    done: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    finished: bool = False


def matches(dl: admin_pb2.DeadLetter, consumer: str, subject: str, reason: str) -> bool:
    return ((not consumer or dl.consumer == consumer) and (not subject or dl.subject == subject)
            and (not reason or reason.lower() in dl.reason.lower()))


def add(app: FastAPI, web: Web) -> None:
    core = web.core
    jobs: dict[str, Job] = {}

    async def everything(consumer: str = "") -> list[admin_pb2.DeadLetter]:
        out, token = [], ""
        while len(out) < SCAN_LIMIT:
            page = await web.call(core.dead_letters.ListDeadLetters(admin_pb2.ListDeadLettersRequest(
                page_size=500, page_token=token, consumer=consumer)))
            out += page.dead_letters
            if not (token := page.next_page_token):
                break
        return out

    def filters(values) -> tuple[str, str, str]:
        return tuple(str(values.get(k) or "").strip()[:200] for k in ("consumer", "subject", "reason"))

    @app.get("/dead-letters")
    async def listing(request: Request):
        await web.reader(request, "deadletters.view")
        consumer, subject, reason = filters(request.query_params)
        letters = await everything()
        groups = Counter((d.consumer, d.subject, d.reason) for d in letters)
        shown = [d for d in letters if matches(d, consumer, subject, reason)]
        return web.page(request, "dead_letters.html", groups=sorted(groups.items(), key=lambda kv: -kv[1]),
                        letters=shown[:200], shown=len(shown), total=len(letters),
                        q={"consumer": consumer, "subject": subject, "reason": reason})

    async def get(dead_letter_id: str) -> admin_pb2.DeadLetter:
        r = await web.call(core.dead_letters.GetDeadLetter(admin_pb2.GetDeadLetterRequest(
            dead_letter_id=dead_letter_id)), "dead letter", dead_letter_id)
        return r.dead_letter

    @app.get("/dead-letters/{dead_letter_id}")
    async def one(request: Request, dead_letter_id: DeadLetterId):
        await web.reader(request, "deadletters.view")
        dl = await get(dead_letter_id)
        body = decoded(dl)
        kind, owner_id = operations.owner_of(dl.subject, body, dict(dl.headers))
        return web.page(request, "dead_letter.html", dl=dl, body=body, owner=(kind, owner_id),
                        headers=sorted(dl.headers.items()))

    async def note(reader: Reader, dl: admin_pb2.DeadLetter, step: str, text: str) -> None:
        kind, owner_id = operations.owner_of(dl.subject, decoded(dl), dict(dl.headers))
        if kind:
            try:
                await operations.note_on_owner(core.ots, core.returns, kind, owner_id,
                                               actor=reader.person.display_name, step=step, note=text)
            except Exception:  # noqa: BLE001 - the replay is done; the audit log still has it
                core.log.warning("console.timeline_note_failed", owner=owner_id)

    async def replay(reader: Reader, dl: admin_pb2.DeadLetter) -> None:
        await web.call(core.dead_letters.ReplayDeadLetter(admin_pb2.ReplayDeadLetterRequest(
            dead_letter_id=dl.dead_letter_id)), "dead letter", dl.dead_letter_id)
        await note(reader, dl, "dead_letter_replayed",
                   f"dead letter {dl.dead_letter_id} ({dl.subject}, given up by {dl.consumer}: {dl.reason}) "
                   "replayed")

    @app.post("/dead-letters/{dead_letter_id}/replay")
    async def replay_one(request: Request, dead_letter_id: DeadLetterId):
        reader, form = await web.form(request, "deadletters.act")
        request.state.resource = dead_letter_id

        async def act() -> str:
            await replay(reader, await get(dead_letter_id))
            return with_notice("/console/dead-letters", "replayed")

        return await web.once(request, reader, form, act)

    @app.post("/dead-letters/{dead_letter_id}/discard")
    async def discard(request: Request, dead_letter_id: DeadLetterId):
        reader, form = await web.form(request, "deadletters.act")
        reason = str(form.get("reason") or "").strip()[:500]
        if not reason:
            raise Problem(422, "invalid-request",
                          "Say why the message must not be processed: a discard needs a reason, "
                          "kept in the audit log and on the timeline of the order or return.")
        request.state.resource, request.state.detail = dead_letter_id, reason

        async def act() -> str:
            dl = await get(dead_letter_id)
            await web.call(core.dead_letters.DiscardDeadLetter(admin_pb2.DiscardDeadLetterRequest(
                dead_letter_id=dead_letter_id)), "dead letter", dead_letter_id)
            await note(reader, dl, "dead_letter_discarded",
                       f"dead letter {dl.dead_letter_id} ({dl.subject}) discarded: {reason}")
            return with_notice("/console/dead-letters", "discarded")

        return await web.once(request, reader, form, act)

    @app.post("/dead-letters/replay-matching")
    async def replay_matching(request: Request):
        reader, form = await web.form(request, "deadletters.act")
        consumer, subject, reason = filters(form)
        chosen = [d for d in await everything(consumer) if matches(d, consumer, subject, reason)]
        job = Job(uuid.uuid4().hex, reader.person.username, len(chosen))
        jobs[job.job_id] = job
        request.state.resource = f"job {job.job_id[:8]}: {len(chosen)}"
        request.state.detail = f"consumer={consumer} subject={subject} reason={reason}"
        limiter = AsyncLimiter(max(1.0, web.settings.console_replay_rate), 1)

        async def run() -> None:
            try:
                for dl in chosen:
                    async with limiter:
                        try:
                            await replay(reader, dl)
                        except Problem as p:
                            job.failed.append((dl.dead_letter_id, p.detail))
                        job.done += 1
            finally:
                job.finished = True

        task = asyncio.create_task(run())
        app.state.jobs_running = getattr(app.state, "jobs_running", set())
        app.state.jobs_running.add(task)
        task.add_done_callback(app.state.jobs_running.discard)
        from fastapi.responses import RedirectResponse

        return RedirectResponse(f"/console/dead-letters/jobs/{job.job_id}", status_code=303)

    @app.get("/dead-letters/jobs/{job_id}")
    async def progress(request: Request, job_id: JobId):
        reader = await web.reader(request, "deadletters.view")
        job = jobs.get(job_id)
        if job is None or job.owner != reader.person.username:
            raise Problem(404, "not-found", "no such replay run (they are kept while the gateway runs)")
        template = ("replay_progress_part.html" if request.headers.get("hx-request")
                    else "replay_progress.html")
        return web.page(request, template, job=job)
