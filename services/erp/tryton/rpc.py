"""Tryton's JSON-RPC API over HTTP (httpx), as the integration user.

- ``POST /<database>/rpc/`` with ``{"id", "method", "params"}``; a session from
  ``common.db.login`` is sent as ``Authorization: Session base64(login:uid:session)``
  and renewed once when the server forgets it.
- Tryton's own values travel as ``{"__class__": "Decimal", "decimal": "1.00"}`` and
  the like (trytond.protocols.jsonrpc): encoded and decoded here.
- Errors keep their kind: a ``UserError`` (Tryton refused: a credit limit, a missing
  fiscal period, an unknown product) and a ``UserWarning`` (it asks a person to
  confirm) are permanent answers with Tryton's message; a ``ConcurrencyException``,
  a locked database, a timeout or a server that is away are transient (retried).
- At most ``max_concurrency`` calls are in flight at once, so a burst of postings
  queues here (and in JetStream) instead of overloading Tryton.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import itertools
import json
from decimal import Decimal
from typing import Any

import httpx
import structlog

log = structlog.get_logger()


class TrytonError(Exception):
    """Anything Tryton answered with an error."""


class TrytonUserError(TrytonError):
    """Tryton refused the call (its business rules): permanent, with Tryton's message."""

    def __init__(self, message: str, description: str = "") -> None:
        super().__init__(message + (f" ({description})" if description else ""))
        self.message = message
        self.description = description


class TrytonUserWarning(TrytonError):
    """Tryton asks a person to confirm (``name`` identifies the warning). Never skipped
    silently: a caller that accepts one says so explicitly (``Tryton.accept_warning``)."""

    def __init__(self, name: str, message: str, description: str = "") -> None:
        super().__init__(message + (f" ({description})" if description else ""))
        self.name = name
        self.message = message


class TrytonUnavailable(TrytonError):
    """Tryton is away, busy or timed out, or a concurrent write won: try again later."""


def _encode(value: Any) -> Any:
    if isinstance(value, Decimal):
        return {"__class__": "Decimal", "decimal": str(value)}
    if isinstance(value, dt.datetime):
        return {
            "__class__": "datetime",
            "year": value.year,
            "month": value.month,
            "day": value.day,
            "hour": value.hour,
            "minute": value.minute,
            "second": value.second,
            "microsecond": value.microsecond,
        }
    if isinstance(value, dt.date):
        return {"__class__": "date", "year": value.year, "month": value.month, "day": value.day}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    return value


def _decode(obj: dict) -> Any:
    kind = obj.get("__class__")
    if kind == "Decimal":
        return Decimal(obj["decimal"])
    if kind == "datetime":
        return dt.datetime(
            obj["year"],
            obj["month"],
            obj["day"],
            obj["hour"],
            obj["minute"],
            obj["second"],
            obj.get("microsecond", 0),
        )
    if kind == "date":
        return dt.date(obj["year"], obj["month"], obj["day"])
    if kind == "bytes":
        return base64.b64decode(obj["base64"])
    return obj


def error_of(error: Any) -> TrytonError:
    """The exception of a JSON-RPC ``error`` member."""
    if isinstance(error, list | tuple) and error:
        kind, args = error[0], error[1] if len(error) > 1 else []
        if kind == "UserError":
            return TrytonUserError(str(args[0]), str(args[1] or "") if len(args) > 1 else "")
        if kind == "UserWarning":
            return TrytonUserWarning(str(args[0]), str(args[1]), str(args[2] or "") if len(args) > 2 else "")
        if kind == "ConcurrencyException":
            return TrytonUnavailable(f"concurrent modification: {args}")
        text = str(kind)
        if "database is locked" in text or "could not serialize" in text or "deadlock" in text:
            return TrytonUnavailable(text)
        return TrytonError(text)
    return TrytonError(str(error))


class Tryton:
    def __init__(
        self,
        url: str,
        database: str,
        login: str,
        password: str,
        *,
        max_concurrency: int = 4,
        timeout: float = 120.0,
    ) -> None:
        self.endpoint = f"{url.rstrip('/')}/{database}/rpc/"
        self.login_name = login
        self.password = password
        self._http = httpx.AsyncClient(timeout=timeout)
        self._limit = asyncio.Semaphore(max_concurrency)
        self._session: str | None = None
        self._context: dict = {}
        self._login_lock = asyncio.Lock()
        self._ids = itertools.count(1)
        self.calls = 0

    async def close(self) -> None:
        await self._http.aclose()

    async def _post(self, method: str, params: list, session: str | None) -> Any:
        headers = {"Content-Type": "application/json"}
        if session:
            headers["Authorization"] = "Session " + base64.b64encode(session.encode()).decode()
        body = json.dumps({"id": next(self._ids), "method": method, "params": _encode(params)})
        try:
            async with self._limit:
                self.calls += 1
                resp = await self._http.post(self.endpoint, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise TrytonUnavailable(f"{method}: {exc!r}") from None
        if resp.status_code in (401, 403):
            raise PermissionError(resp.status_code)
        if resp.status_code in (429, 502, 503, 504) or resp.status_code >= 500:
            raise TrytonUnavailable(f"{method}: HTTP {resp.status_code}")
        data = json.loads(resp.content, object_hook=_decode)
        if "error" in data and data["error"] is not None:
            raise error_of(data["error"])
        return data.get("result")

    async def _login(self) -> None:
        async with self._login_lock:
            if self._session is not None:
                return
            result = await self._post(
                "common.db.login", [self.login_name, {"password": self.password}, "en"], None
            )
            if not result:
                raise TrytonUserError(f"Tryton refused the login of {self.login_name!r}")
            uid, key = result[0], result[1]
            self._session = f"{self.login_name}:{uid}:{key}"
            self._context = await self._post("model.res.user.get_preferences", [True, {}], self._session)

    @property
    def context(self) -> dict:
        return dict(self._context)

    async def call(self, method: str, *args: Any, context: dict | None = None) -> Any:
        """``method(*args, context)``; the user's preferences are the context's base."""
        for attempt in range(2):
            if self._session is None:
                try:
                    await self._login()
                except PermissionError as exc:
                    raise TrytonUnavailable(f"login refused ({exc})") from None
            session = self._session
            try:
                return await self._post(method, [*args, {**self._context, **(context or {})}], session)
            except PermissionError:
                if attempt:
                    raise TrytonUnavailable(f"{method}: session refused twice") from None
                if self._session == session:
                    self._session = None  # the server forgot it (a restart): log in again
        raise AssertionError("unreachable")

    async def model(self, model: str, method: str, *args: Any, context: dict | None = None) -> Any:
        return await self.call(f"model.{model}.{method}", *args, context=context)

    async def search_read(
        self,
        model: str,
        domain: list,
        fields: list[str],
        *,
        limit: int | None = None,
        order: list | None = None,
        context: dict | None = None,
    ) -> list[dict]:
        return await self.model(model, "search_read", domain, 0, limit, order, fields, context=context)

    async def wizard(
        self,
        name: str,
        ids: list[int],
        steps: list[tuple[str, dict]],
        *,
        model: str,
        context: dict | None = None,
    ) -> Any:
        """Run a wizard on records: its states in order, each with the data of its form."""
        ctx = {"active_model": model, "active_id": ids[0], "active_ids": ids, **(context or {})}
        session, start, _end = await self.call(f"wizard.{name}.create", context=ctx)
        try:
            result = None
            state = start
            for state_name, data in steps:
                result = await self.call(
                    f"wizard.{name}.execute", session, data, state_name or state, context=ctx
                )
            return result
        finally:
            await self.call(f"wizard.{name}.delete", session, context=ctx)

    async def accept_warning(self, warning: TrytonUserWarning) -> None:
        """Accept a named warning for the next attempt (a deliberate decision of the caller)."""
        log.warning("tryton.warning_accepted", name=warning.name, message=warning.message)
        await self.model(
            "res.user.warning", "create", [{"user": self._session_uid, "name": warning.name, "always": False}]
        )

    @property
    def _session_uid(self) -> int:
        return int((self._session or "::").split(":")[1] or 0)
