"""Returns store: each return's workflow state, its lines, its append-only
timeline, the receive-window timers, and the inventory reconciliation runs."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

from services.mesh.process import timeline_table
from services.mesh.store import BigId, runtime_tables

metadata = MetaData()
outbox, inbox = runtime_tables(metadata)

returns = Table(
    "returns",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=True),  # stable paging order
    Column("return_id", String(64), nullable=False, unique=True),
    Column("request_id", String(128), nullable=False, unique=True),
    # Fingerprint of the request: a reused request_id with another body is refused.
    Column("request_hash", String(64), nullable=False),
    Column("order_id", String(64), nullable=False, index=True),
    Column("customer_id", String(64), nullable=False, index=True),
    Column("warehouse_id", String(64), nullable=False),
    Column("currency_code", String(3), nullable=False),
    Column("status", String(20), nullable=False, index=True),
    Column("status_reason", Text, nullable=False, default=""),
    Column("rma_number", String(100), nullable=False, default=""),
    Column("expected_credit_minor", BigInteger, nullable=False, default=0),
    Column("credited_minor", BigInteger, nullable=False, default=0),
    Column("credit_memo_id", String(100), nullable=False, default=""),
    # The receive window of this return, and its durable timer (NULL: none running).
    Column("receive_within_s", Float, nullable=False),
    Column("expires_at", DateTime(timezone=True)),
    Column("trace_id", String(32), nullable=False, default=""),
    # Optimistic lock: every update bumps it and checks the value it read.
    Column("version", Integer, nullable=False, default=1),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_returns_status_expires_at", "status", "expires_at"),
)

return_lines = Table(
    "return_lines",
    metadata,
    Column("return_id", String(64), nullable=False),
    # The order line returned.
    Column("line_number", Integer, nullable=False),
    Column("sku", String(64), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("reason", String(20), nullable=False),
    Column("note", Text, nullable=False, default=""),
    Column("unit_price_minor", BigInteger, nullable=False, default=0),
    Column("received_quantity", BigInteger, nullable=False, default=0),
    Column("restocked_quantity", BigInteger, nullable=False, default=0),
    Column("scrapped_quantity", BigInteger, nullable=False, default=0),
    Column("refused_quantity", BigInteger, nullable=False, default=0),
    Column("credit_minor", BigInteger, nullable=False, default=0),
    PrimaryKeyConstraint("return_id", "line_number"),
)

# The audit log: one row per step of a return, never updated or deleted.
timeline = timeline_table(metadata, "return_id")

# One row per order with returns: locked while a return of that order is
# created, so two concurrent requests cannot both claim the same quantity.
order_locks = Table(
    "order_locks",
    metadata,
    Column("order_id", String(64), primary_key=True),
)

# ---- inventory reconciliation ----

reconciliation_runs = Table(
    "reconciliation_runs",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=True),
    Column("run_id", String(64), nullable=False, unique=True),
    Column("trigger", String(20), nullable=False),
    Column("repair", Boolean, nullable=False),
    Column("warehouse_id", String(64), nullable=False, default=""),
    Column("grace_s", Float, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=False),
    Column("positions_checked", BigInteger, nullable=False),
    Column("in_flight", BigInteger, nullable=False),
    Column("drift_count", BigInteger, nullable=False),
    Column("repaired_count", BigInteger, nullable=False),
)

# What each run found (and whether it repaired it): the reconciliation's audit trail.
reconciliation_findings = Table(
    "reconciliation_findings",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("run_id", String(64), nullable=False, index=True),
    Column("sku", String(64), nullable=False),
    Column("warehouse_id", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("erp_quantity", BigInteger, nullable=False),
    Column("wms_quantity", BigInteger, nullable=False),
    Column("erp_sequence", BigInteger, nullable=False),
    Column("wms_sequence", BigInteger, nullable=False),
    Column("since", DateTime(timezone=True)),
    Column("repaired", Boolean, nullable=False),
    Column("detail", Text, nullable=False, default=""),
)
