"""The console's people: accounts with a role (optionally bound to one customer),
argon2id password hashes, sessions with an idle timeout, and the throttling of
failed sign-ins. The rules are pure functions (``may``, ``throttle_wait``,
``session_state``, ``check_username``, ``check_password``) with unit tests; the
rest reads and writes the gateway's store."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, func, insert, or_, select, update

from services.mesh.paging import keyset_page
from services.mesh.store import Store, utcnow

from .store import console_sessions, sign_in_failures, users

# ---- roles and what each may do ----

CUSTOMER_SERVICE, SUPPLY_CHAIN, OPERATIONS, ADMIN = "customer-service", "supply-chain", "operations", "admin"
ROLES = (CUSTOMER_SERVICE, SUPPLY_CHAIN, OPERATIONS, ADMIN)
ROLE_TITLES = {CUSTOMER_SERVICE: "Customer service", SUPPLY_CHAIN: "Supply chain", OPERATIONS: "Operations",
               ADMIN: "Administrator"}

# permission -> the roles that have it. The console shows only what the reader may do,
# and every route checks the same table (403 otherwise).
PERMISSIONS: dict[str, frozenset[str]] = {
    "orders.view": frozenset(ROLES),
    "orders.cancel": frozenset({CUSTOMER_SERVICE, ADMIN}),
    "returns.create": frozenset({CUSTOMER_SERVICE, ADMIN}),
    "exceptions.view": frozenset({SUPPLY_CHAIN, OPERATIONS, ADMIN}),
    "exceptions.resolve": frozenset({SUPPLY_CHAIN, ADMIN}),
    "policies.change": frozenset({SUPPLY_CHAIN, ADMIN}),
    "deadletters.view": frozenset({OPERATIONS, ADMIN}),
    "deadletters.act": frozenset({OPERATIONS, ADMIN}),
    "inventory.view": frozenset({SUPPLY_CHAIN, OPERATIONS, ADMIN}),
    "inventory.reconcile": frozenset({OPERATIONS, ADMIN}),
    "replenishment.change": frozenset({SUPPLY_CHAIN, ADMIN}),
    "health.view": frozenset({SUPPLY_CHAIN, OPERATIONS, ADMIN}),
    "audit.view": frozenset({OPERATIONS, ADMIN}),
}
# What a customer's own staff (a user bound to a customer) may have at most: their
# customer's orders and returns. Everything else shows every customer's data.
CUSTOMER_SAFE = frozenset({"orders.view", "orders.cancel", "returns.create"})


@dataclass(frozen=True)
class Person:
    """A signed-in person, as the console's routes see them."""

    username: str
    display_name: str
    role: str
    customer_id: str = ""

    @property
    def client_id(self) -> str:  # the audit log's column for who called
        return f"user:{self.username}"

    @property
    def channel(self) -> str:
        return "console"

    def may(self, permission: str) -> bool:
        return may(self.role, self.customer_id, permission)

    def owns(self, customer_id: str) -> bool:
        return not self.customer_id or self.customer_id == customer_id


def may(role: str, customer_id: str, permission: str) -> bool:
    """Whether a person of ``role`` (bound to ``customer_id``, or to none) has ``permission``."""
    if role not in PERMISSIONS.get(permission, ()):
        return False
    return not customer_id or permission in CUSTOMER_SAFE


# ---- account rules ----

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
CUSTOMER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
MIN_PASSWORD = 12


def check_username(username: str) -> str | None:
    if not USERNAME.match(username):
        return ("2 to 64 characters: lower-case letters, digits, '.', '_' or '-' "
                "(starting with a letter or digit)")
    return None


def check_password(password: str) -> str | None:
    if len(password) < MIN_PASSWORD:
        return f"at least {MIN_PASSWORD} characters"
    if len(password) > 1024:
        return "at most 1024 characters"
    return None


def new_password() -> str:
    return secrets.token_urlsafe(15)  # 20 characters, 120 bits


_hasher = PasswordHasher()  # argon2id, RFC 9106's low-memory profile (64 MiB, t=3)
# Verified against when the username does not exist, so both cost the same.
_DUMMY = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


# ---- throttling of failed sign-ins ----

@dataclass(frozen=True)
class Throttle:
    per_user: int = 5  # failures of one username in the window
    per_address: int = 20  # failures from one address in the window
    window: float = 900.0  # seconds


def throttle_wait(user_failures: list[datetime], address_failures: list[datetime], now: datetime,
                  rule: Throttle) -> float:
    """Seconds until another sign-in may be tried (0: now). Only failures inside the window count:
    at the limit, the wait lasts until the oldest of the last ``limit`` failures leaves the window."""
    window = timedelta(seconds=rule.window)
    wait = 0.0
    for failures, limit in ((user_failures, rule.per_user), (address_failures, rule.per_address)):
        recent = sorted(t for t in failures if now - t < window)
        if len(recent) >= limit:
            wait = max(wait, (recent[-limit] + window - now).total_seconds())
    return wait


# ---- sessions ----

@dataclass(frozen=True)
class SessionRules:
    idle_timeout: float = 1800.0  # seconds without a request
    lifetime: float = 12 * 3600.0  # seconds since sign-in, whatever the activity


def session_state(created_at: datetime, last_seen_at: datetime, now: datetime, rules: SessionRules) -> str:
    """"active", "idle" (timed out for inactivity) or "expired" (past its lifetime)."""
    if (now - created_at).total_seconds() >= rules.lifetime:
        return "expired"
    if (now - last_seen_at).total_seconds() >= rules.idle_timeout:
        return "idle"
    return "active"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    person: Person
    csrf_token: str
    time_zone: str
    token_hash: str
    last_seen_at: datetime


class UserExists(Exception):
    pass


class NoSuchUser(Exception):
    pass


# ---- the store ----

async def create_user(store: Store, *, username: str, display_name: str, role: str, customer_id: str,
                      password: str) -> dict:
    now = utcnow()
    async with store.transaction() as tx:
        found = (await tx.conn.execute(select(users.c.username).where(users.c.username == username))).first()
        if found:
            raise UserExists(username)
        await tx.conn.execute(insert(users).values(
            username=username, display_name=display_name or username, role=role, customer_id=customer_id,
            password_hash=hash_password(password), created_at=now, password_changed_at=now,
            disabled_at=None, last_sign_in_at=None))
    return await get_user(store, username)


async def get_user(store: Store, username: str) -> dict | None:
    async with store.read() as conn:
        row = (await conn.execute(select(users).where(users.c.username == username))).mappings().first()
    return dict(row) if row else None


async def list_users(store: Store, page_size: int = 0, page_token: str = "") -> tuple[list[dict], str]:
    async with store.read() as conn:
        rows, token = await keyset_page(conn, select(users), [users.c.username], page_size, page_token)
    return [dict(r._mapping) for r in rows], token


async def disable_user(store: Store, username: str) -> dict:
    async with store.transaction() as tx:
        r = await tx.conn.execute(update(users).where(users.c.username == username).values(
            disabled_at=func.coalesce(users.c.disabled_at, utcnow())))
        if r.rowcount != 1:
            raise NoSuchUser(username)
        await tx.conn.execute(delete(console_sessions).where(console_sessions.c.username == username))
    return await get_user(store, username)


async def reset_password(store: Store, username: str, password: str) -> dict:
    async with store.transaction() as tx:
        r = await tx.conn.execute(update(users).where(users.c.username == username).values(
            password_hash=hash_password(password), password_changed_at=utcnow(), disabled_at=None))
        if r.rowcount != 1:
            raise NoSuchUser(username)
        await tx.conn.execute(delete(console_sessions).where(console_sessions.c.username == username))
        await tx.conn.execute(delete(sign_in_failures).where(sign_in_failures.c.username == username))
    return await get_user(store, username)


async def sign_in_wait(store: Store, username: str, address: str, rule: Throttle) -> float:
    now = utcnow()
    since = now - timedelta(seconds=rule.window)
    async with store.read() as conn:
        rows = (await conn.execute(select(sign_in_failures.c.username, sign_in_failures.c.address,
                                          sign_in_failures.c.at).where(
            sign_in_failures.c.at > since,
            or_(sign_in_failures.c.username == username, sign_in_failures.c.address == address)))).all()
    return throttle_wait([_aware(r.at) for r in rows if r.username == username],
                         [_aware(r.at) for r in rows if r.address == address], now, rule)


async def record_failure(store: Store, username: str, address: str, rule: Throttle) -> None:
    now = utcnow()
    async with store.transaction() as tx:
        await tx.conn.execute(delete(sign_in_failures).where(
            sign_in_failures.c.at < now - timedelta(seconds=rule.window)))
        await tx.conn.execute(insert(sign_in_failures).values(username=username[:64], address=address[:64],
                                                              at=now))


async def authenticate(store: Store, username: str, password: str) -> Person | None:
    """The person when the username and password match an enabled account."""
    row = await get_user(store, username) if USERNAME.match(username) else None
    if row is None:
        verify_password(_DUMMY, password)  # the same cost as for a real account
        return None
    if not verify_password(row["password_hash"], password) or row["disabled_at"] is not None:
        return None
    return Person(row["username"], row["display_name"], row["role"], row["customer_id"])


async def open_session(store: Store, person: Person, time_zone: str) -> tuple[str, str]:
    """A new session: (cookie token, CSRF token). Only the token's hash is stored."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    now = utcnow()
    async with store.transaction() as tx:
        await tx.conn.execute(insert(console_sessions).values(
            token_hash=token_hash(token), username=person.username, csrf_token=csrf,
            time_zone=time_zone[:64] or "UTC", created_at=now, last_seen_at=now))
        await tx.conn.execute(update(users).where(users.c.username == person.username).values(
            last_sign_in_at=now))
        await tx.conn.execute(delete(sign_in_failures).where(sign_in_failures.c.username == person.username))
    return token, csrf


async def find_session(store: Store, token: str, rules: SessionRules) -> tuple[str, Session | None]:
    """("active", session), or ("idle"|"expired"|"none", None) — an ended session is deleted."""
    if not token or len(token) > 100:
        return "none", None
    h = token_hash(token)
    async with store.read() as conn:
        row = (await conn.execute(
            select(console_sessions, users.c.display_name, users.c.role, users.c.customer_id,
                   users.c.disabled_at)
            .join(users, users.c.username == console_sessions.c.username)
            .where(console_sessions.c.token_hash == h))).mappings().first()
    if row is None or row["disabled_at"] is not None:
        return "none", None
    now = utcnow()
    state = session_state(_aware(row["created_at"]), _aware(row["last_seen_at"]), now, rules)
    if state != "active":
        await close_session(store, h)
        return state, None
    person = Person(row["username"], row["display_name"], row["role"], row["customer_id"])
    return "active", Session(person, row["csrf_token"], row["time_zone"], h, _aware(row["last_seen_at"]))


async def touch_session(store: Store, session: Session) -> None:
    """Keeps the session alive (written at most every 10 s)."""
    now = utcnow()
    if (now - session.last_seen_at).total_seconds() < 10:
        return
    async with store.transaction() as tx:
        await tx.conn.execute(update(console_sessions).where(
            console_sessions.c.token_hash == session.token_hash).values(last_seen_at=now))


async def close_session(store: Store, hashed: str) -> None:
    async with store.transaction() as tx:
        await tx.conn.execute(delete(console_sessions).where(console_sessions.c.token_hash == hashed))


def _aware(when: datetime) -> datetime:
    # SQLite gives naive datetimes back (stored as UTC).
    from datetime import UTC

    return when if when.tzinfo else when.replace(tzinfo=UTC)
