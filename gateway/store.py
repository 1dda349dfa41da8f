"""Gateway store: API clients (hashed keys), idempotency records, the audit log, and the
console's people (argon2id password hashes), their sessions and failed sign-ins."""

from __future__ import annotations

from sqlalchemy import (
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from services.mesh.store import BigId, runtime_tables

metadata = MetaData()
outbox, inbox = runtime_tables(metadata)

# An API client of a channel: the token is shown once; only its SHA-256 is kept
# (the secret is 32 random bytes, so a fast hash is enough; no password stretching needed).
api_clients = Table(
    "api_clients",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False, default=""),
    Column("channel", String(64), nullable=False),
    # The tenant: the client sees and changes only this customer's orders and
    # returns. Empty = every customer (an internal desk).
    Column("customer_id", String(64), nullable=False, default=""),
    # Space-separated: orders:read orders:write returns:read returns:write lookups admin
    Column("scopes", Text, nullable=False),
    Column("key_hash", String(64), nullable=False),
    # Requests per second; 0 = the gateway default.
    Column("rate_limit", Float, nullable=False, default=0),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

# One row per (client, Idempotency-Key): the fingerprint of the request and,
# once done, the response to replay.
idempotency = Table(
    "idempotency",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("client_id", String(64), nullable=False),
    Column("key", String(255), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    # "pending" while the first request runs, then "done".
    Column("state", String(10), nullable=False),
    Column("status_code", Integer, nullable=False, default=0),
    Column("response", Text, nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("client_id", "key", name="uq_idempotency_client_key"),
)

# Every state-changing call (HTTP and gRPC edge), never updated or deleted.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False, index=True),
    Column("client_id", String(64), nullable=False, default="", index=True),
    Column("channel", String(64), nullable=False, default=""),
    Column("transport", String(8), nullable=False),
    Column("method", String(10), nullable=False),
    Column("route", String(200), nullable=False),
    Column("resource", String(128), nullable=False, default=""),
    Column("status", Integer, nullable=False),
    Column("outcome", String(64), nullable=False),
    Column("trace_id", String(32), nullable=False, default=""),
    # The person who acted (console): their display name; and what they wrote (a note, a reason).
    Column("actor", String(200), nullable=False, default="", server_default=""),
    Column("detail", Text, nullable=False, default="", server_default=""),
)

# The people who sign in to the console. Only an argon2id hash of the password is kept.
users = Table(
    "users",
    metadata,
    Column("username", String(64), primary_key=True),
    Column("display_name", String(200), nullable=False),
    # customer-service, supply-chain, operations, admin (gateway/users.py ROLES)
    Column("role", String(32), nullable=False),
    # Bound to this customer (sees only its records); empty = every customer.
    Column("customer_id", String(64), nullable=False, default=""),
    Column("password_hash", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("password_changed_at", DateTime(timezone=True), nullable=False),
    Column("disabled_at", DateTime(timezone=True), nullable=True),
    Column("last_sign_in_at", DateTime(timezone=True), nullable=True),
)

# A signed-in person: the cookie holds a random token, the store only its SHA-256.
console_sessions = Table(
    "console_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("username", String(64), nullable=False, index=True),
    # The synchronizer token every state-changing form carries.
    Column("csrf_token", String(64), nullable=False),
    # The reader's IANA time zone (from the browser at sign-in), for every time shown.
    Column("time_zone", String(64), nullable=False, default="UTC"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=False),
)

# Failed sign-ins, per username and per address, for throttling (old rows are pruned).
sign_in_failures = Table(
    "sign_in_failures",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False, index=True),
    Column("address", String(64), nullable=False, index=True),
    Column("at", DateTime(timezone=True), nullable=False),
)
