"""Order-to-ship store: the workflow state of each order and its append-only timeline."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, DateTime, Integer, MetaData, String, Table, Text

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
)

# The audit log: one row per step of an order, never updated or deleted.
timeline = Table(
    "timeline",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("order_id", String(64), nullable=False, index=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("source", String(20), nullable=False),
    Column("step", String(64), nullable=False),
    Column("status", String(20), nullable=False),
    Column("detail", Text, nullable=False, default=""),
    Column("trace_id", String(32), nullable=False, default=""),
)

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
