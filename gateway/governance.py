"""API governance shared by the HTTP API and the gRPC edge: API clients and
their keys, scopes, per-client rate limits, idempotency records, audit log."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from aiolimiter import AsyncLimiter
from sqlalchemy import delete, insert, select, update

from services.mesh import operator_token
from services.mesh.config import Settings
from services.mesh.paging import keyset_page
from services.mesh.store import Store, insert_ignore, utcnow

from .store import api_clients, audit_log, idempotency

SCOPES = ("orders:read", "orders:write", "returns:read", "returns:write", "lookups", "admin")
TOKEN_PREFIX = "cdk_"
# The operator token's client (services/mesh/operator_token.py): internal, every scope.
OPERATOR = "operator"


@dataclass(frozen=True)
class ApiClient:
    client_id: str
    name: str
    channel: str
    customer_id: str
    scopes: frozenset[str]
    rate_limit: float

    def owns(self, customer_id: str) -> bool:
        """Whether this client may see the customer's records (tenant isolation)."""
        return not self.customer_id or self.customer_id == customer_id


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_token(token: str) -> tuple[str, str] | None:
    """``cdk_<client_id>.<secret>`` -> (client_id, secret)."""
    if not token.startswith(TOKEN_PREFIX) or "." not in token:
        return None
    client_id, _, secret = token[len(TOKEN_PREFIX):].partition(".")
    if not client_id or not secret or len(token) > 200:
        return None
    return client_id, secret


async def create_client(store: Store, *, name: str, channel: str, customer_id: str,
                        scopes: list[str], rate_limit: float = 0) -> tuple[str, str]:
    """A new API client; returns (client_id, token). The token is never stored."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s) {unknown}; known: {', '.join(SCOPES)}")
    client_id = "cl_" + uuid.uuid4().hex[:16]
    secret = secrets.token_urlsafe(32)
    async with store.transaction() as tx:
        await tx.conn.execute(insert(api_clients).values(
            client_id=client_id, name=name, channel=channel, customer_id=customer_id,
            scopes=" ".join(sorted(set(scopes))), key_hash=hash_secret(secret),
            rate_limit=rate_limit, created_at=utcnow(), revoked_at=None))
    return client_id, f"{TOKEN_PREFIX}{client_id}.{secret}"


async def get_client(store: Store, client_id: str) -> dict | None:
    async with store.read() as conn:
        row = (await conn.execute(select(api_clients).where(
            api_clients.c.client_id == client_id))).mappings().first()
    return dict(row) if row else None


async def revoke_client(store: Store, client_id: str) -> bool:
    """Whether the client was active (and is revoked now)."""
    async with store.transaction() as tx:
        r = await tx.conn.execute(update(api_clients).where(
            api_clients.c.client_id == client_id, api_clients.c.revoked_at.is_(None)
        ).values(revoked_at=utcnow()))
    return r.rowcount == 1


async def list_clients(store: Store, page_size: int = 0, page_token: str = "") -> tuple[list[dict], str]:
    """One page of clients in client_id order, and the next page's token."""
    async with store.read() as conn:
        rows, token = await keyset_page(conn, select(api_clients), [api_clients.c.client_id],
                                        page_size, page_token)
    return [dict(r._mapping) for r in rows], token


class Governance:
    # Seconds a looked-up client is trusted before it is read again (a
    # revocation takes effect within this time).
    CACHE_TTL = 2.0

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._cache: dict[str, tuple[float, str, ApiClient | None]] = {}
        self._limiters: dict[str, AsyncLimiter] = {}
        self._operator = settings.gateway_operator_token
        if self._operator and not operator_token.is_well_formed(self._operator):
            raise RuntimeError(f"{operator_token.VARIABLE}: expected {operator_token.PREFIX}<at least 32 "
                               "URL-safe characters>, as `crossdock up` or create-secrets.sh make it")

    # ---- authentication ----

    async def authenticate(self, token: str) -> ApiClient | None:
        parsed = parse_token(token)
        if parsed is None:
            return None
        client_id, secret = parsed
        if client_id == OPERATOR:
            if self._operator and hmac.compare_digest(token.encode(), self._operator.encode()):
                return ApiClient(OPERATOR, OPERATOR, "operations", "", frozenset(SCOPES), 0)
            return None
        now = time.monotonic()
        cached = self._cache.get(client_id)
        if cached is None or now - cached[0] > self.CACHE_TTL:
            async with self.store.read() as conn:
                row = (await conn.execute(select(api_clients).where(
                    api_clients.c.client_id == client_id))).mappings().first()
            client = None
            key_hash = ""
            if row is not None and row["revoked_at"] is None:
                key_hash = row["key_hash"]
                client = ApiClient(row["client_id"], row["name"], row["channel"], row["customer_id"],
                                   frozenset(row["scopes"].split()), row["rate_limit"])
            cached = (now, key_hash, client)
            self._cache[client_id] = cached
        _, key_hash, client = cached
        if client is None or not hmac.compare_digest(key_hash, hash_secret(secret)):
            return None
        return client

    # ---- quotas ----

    def over_quota(self, client: ApiClient) -> int | None:
        """None when the call may go on, else the seconds to wait (Retry-After)."""
        rate = client.rate_limit or self.settings.gateway_rate_limit
        limiter = self._limiters.get(client.client_id)
        if limiter is None:
            limiter = self._limiters[client.client_id] = AsyncLimiter(max(rate, 1), max(rate, 1) / rate)
        if not limiter.has_capacity():
            return max(1, math.ceil(1 / rate))
        limiter._level += 1  # noqa: SLF001 - take the capacity without awaiting
        return None

    # ---- idempotency ----

    async def idempotency_begin(self, client_id: str, key: str, fingerprint: str,
                                wait: float = 10.0) -> tuple[str, int, str]:
        """("new", 0, "") for the first request with this key; ("replay",
        status, body) for a repeat of a finished one; ("mismatch", 0, "") for
        the key reused with another request; ("pending", 0, "") when the first
        is still running after ``wait`` seconds."""
        deadline = time.monotonic() + wait
        while True:
            async with self.store.transaction() as tx:
                cutoff = utcnow() - timedelta(seconds=self.settings.gateway_idempotency_ttl)
                await tx.conn.execute(delete(idempotency).where(
                    idempotency.c.client_id == client_id, idempotency.c.key == key,
                    idempotency.c.created_at < cutoff))
                added = await insert_ignore(tx.conn, idempotency, dict(
                    client_id=client_id, key=key, fingerprint=fingerprint, state="pending",
                    status_code=0, response="", created_at=utcnow()))
                if added:
                    return "new", 0, ""
                row = (await tx.conn.execute(select(idempotency).where(
                    idempotency.c.client_id == client_id, idempotency.c.key == key))).mappings().first()
            if row is None:
                continue
            if row["fingerprint"] != fingerprint:
                return "mismatch", 0, ""
            if row["state"] == "done":
                return "replay", row["status_code"], row["response"]
            if time.monotonic() > deadline:
                return "pending", 0, ""
            await asyncio.sleep(0.05)

    async def idempotency_finish(self, client_id: str, key: str, status: int, body: str) -> None:
        async with self.store.transaction() as tx:
            if status >= 500 or status in (429,):
                # Not a final answer: the client may retry with the same key.
                await tx.conn.execute(delete(idempotency).where(
                    idempotency.c.client_id == client_id, idempotency.c.key == key))
            else:
                await tx.conn.execute(update(idempotency).where(
                    idempotency.c.client_id == client_id, idempotency.c.key == key
                ).values(state="done", status_code=status, response=body))

    # ---- audit ----

    async def audit(self, *, client: ApiClient | None, transport: str, method: str, route: str,
                    resource: str, status: int, outcome: str, trace_id: str, actor: str = "",
                    detail: str = "") -> None:
        """``client``: an API client, or a console person (``users.Person``: the same
        ``client_id``/``channel``); ``actor``: the person's name; ``detail``: their note or reason."""
        async with self.store.transaction() as tx:
            await tx.conn.execute(insert(audit_log).values(
                at=utcnow(), client_id=client.client_id if client else "",
                channel=client.channel if client else "", transport=transport, method=method,
                route=route, resource=resource[:128], status=status, outcome=outcome[:64],
                trace_id=trace_id, actor=actor[:200], detail=detail[:2000]))

    async def audit_page(self, *, limit: int, before_id: int | None, client_id: str,
                         transport: str = "", resource: str = "") -> list[dict]:
        q = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        if before_id is not None:
            q = q.where(audit_log.c.id < before_id)
        if client_id:
            q = q.where(audit_log.c.client_id == client_id)
        if transport:
            q = q.where(audit_log.c.transport == transport)
        if resource:
            q = q.where(audit_log.c.resource == resource)
        async with self.store.read() as conn:
            rows = (await conn.execute(q)).mappings().all()
        return [dict(r) for r in rows]


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def trace_id_from(traceparent: str | None) -> str:
    """The trace id of a W3C traceparent header, or a new one."""
    if traceparent:
        bits = traceparent.split("-")
        if len(bits) >= 3 and len(bits[1]) == 32:
            return bits[1].lower()
    return uuid.uuid4().hex
