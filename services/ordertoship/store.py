"""Order-to-ship store: the workflow state of each order and its append-only timeline."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, DateTime, Integer, MetaData, String, Table, Text

from services.mesh.process import timeline_table
from services.mesh.store import BigId, runtime_tables

metadata = MetaData()
outbox, inbox = runtime_tables(metadata)

orders = Table(
    "orders",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=True),  # stable paging order
    Column("order_id", String(64), nullable=False, unique=True),
    Column("request_id", String(128), nullable=False, unique=True),
    # Fingerprint of the submission: a reused request_id with another body is refused.
    Column("request_hash", String(64), nullable=False),
    Column("customer_id", String(64), nullable=False, index=True),
    Column("warehouse_id", String(64), nullable=False),
    Column("ship_to_name", String(200), nullable=False, default=""),
    Column("ship_to_line1", String(200), nullable=False, default=""),
    Column("ship_to_city", String(100), nullable=False, default=""),
    Column("ship_to_postal_code", String(20), nullable=False, default=""),
    Column("ship_to_country_code", String(2), nullable=False, default=""),
    Column("shortage_policy", String(20), nullable=False),
    Column("service_level", String(64), nullable=False, default=""),
    Column("currency_code", String(3), nullable=False),
    Column("total_minor", BigInteger, nullable=False),
    Column("status", String(20), nullable=False, index=True),
    Column("status_reason", Text, nullable=False, default=""),
    Column("shipment_id", String(64), nullable=False, default=""),
    Column("carrier_id", String(64), nullable=False, default=""),
    Column("tracking_number", String(64), nullable=False, default=""),
    Column("invoice_id", String(64), nullable=False, default=""),
    Column("trace_id", String(32), nullable=False, default=""),
    # Optimistic lock: every update bumps it and checks the value it read.
    Column("version", Integer, nullable=False, default=1),
    # The submitting channel, and the exception policy fixed at submission.
    Column("channel", String(64), nullable=False, default="", server_default=""),
    Column("exception_policy", String(20), nullable=False, default="SHIP_PARTIAL",
           server_default="SHIP_PARTIAL"),
    # The shipment (wave) the warehouse works on; the status an ON_HOLD order returns to.
    Column("wave", Integer, nullable=False, default=1, server_default="1"),
    Column("held_from", String(20), nullable=False, default="", server_default=""),
    Column("package_weight_grams", BigInteger, nullable=False, default=0, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

order_lines = Table(
    "order_lines",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("line_number", Integer, primary_key=True),
    Column("sku", String(64), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("unit_price_minor", BigInteger, nullable=False),
    # Cancelled by exception decisions (never shipped, never invoiced).
    Column("cancelled_quantity", BigInteger, nullable=False, default=0, server_default="0"),
)

# Every shipment of an order (several after a partial shipment), and its invoice.
order_shipments = Table(
    "order_shipments",
    metadata,
    Column("shipment_id", String(80), primary_key=True),
    Column("order_id", String(64), nullable=False, index=True),
    Column("wave", Integer, nullable=False),
    # "SKU=qty" pairs, comma-separated.
    Column("lines", Text, nullable=False),
    Column("carrier_id", String(64), nullable=False, default=""),
    Column("tracking_number", String(64), nullable=False, default=""),
    Column("invoice_id", String(100), nullable=False, default=""),
    Column("shipped_at", DateTime(timezone=True), nullable=False),
)

# The exception work list: what stopped an order in the warehouse or at the
# carrier, what was decided, by whom (a person, or "policy").
exceptions = Table(
    "exceptions",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=True),  # stable paging order
    Column("exception_id", String(64), nullable=False, unique=True),
    Column("order_id", String(64), nullable=False, index=True),
    Column("customer_id", String(64), nullable=False),
    # SHORT_PICK, DAMAGED, STOCK_DISCREPANCY, CARRIER_FAILED
    Column("kind", String(32), nullable=False),
    # OPEN, RESOLVED
    Column("status", String(16), nullable=False, index=True),
    Column("lines", Text, nullable=False, default=""),
    Column("detail", Text, nullable=False, default=""),
    Column("wave", Integer, nullable=False, default=1),
    Column("policy", String(20), nullable=False),
    Column("action", String(32), nullable=False, default=""),
    Column("resolved_by", String(200), nullable=False, default=""),
    Column("note", Text, nullable=False, default=""),
    Column("raised_at", DateTime(timezone=True), nullable=False),
    Column("resolved_at", DateTime(timezone=True)),
)

# Exception policies of customers and channels (scope "customer"/"channel"),
# and the default (scope "default", key "").
exception_policies = Table(
    "exception_policies",
    metadata,
    Column("scope", String(16), primary_key=True),
    Column("key", String(64), primary_key=True),
    Column("policy", String(20), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# The audit log: one row per step of an order, never updated or deleted.
timeline = timeline_table(metadata, "order_id")

# Replica of ERP master data (erp.customer.upserted / erp.item.upserted), so
# that orders are taken while ERP is down.
customers = Table(
    "customers",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("currency_code", String(3), nullable=False),
    Column("blocked", Boolean, nullable=False, default=False),
    Column("ship_to_name", String(200), nullable=False, default=""),
    Column("ship_to_line1", String(200), nullable=False, default=""),
    Column("ship_to_city", String(100), nullable=False, default=""),
    Column("ship_to_postal_code", String(20), nullable=False, default=""),
    Column("ship_to_country_code", String(2), nullable=False, default=""),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

items = Table(
    "items",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("currency_code", String(3), nullable=False),
    Column("unit_price_minor", BigInteger, nullable=False),
    Column("active", Boolean, nullable=False, default=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
