"""WMS store: warehouses, stock, receipts, fulfilment orders and the item replica."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
)

from services.mesh.store import BigId, runtime_tables

metadata = MetaData()
outbox, inbox = runtime_tables(metadata)


def _address(prefix: str) -> list[Column]:
    return [
        Column(f"{prefix}name", String(200), nullable=False, default=""),
        Column(f"{prefix}line1", String(200), nullable=False, default=""),
        Column(f"{prefix}city", String(100), nullable=False, default=""),
        Column(f"{prefix}postal_code", String(20), nullable=False, default=""),
        Column(f"{prefix}country_code", String(2), nullable=False, default=""),
    ]


warehouses = Table(
    "warehouses",
    metadata,
    Column("warehouse_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False, default=""),
    *_address("address_"),
)

# One position per SKU and warehouse. The store itself refuses an oversold
# position: allocated never exceeds on_hand.
stock = Table(
    "stock",
    metadata,
    Column("sku", String(64), nullable=False),
    Column("warehouse_id", String(64), nullable=False),
    Column("on_hand", BigInteger, nullable=False, default=0),
    Column("allocated", BigInteger, nullable=False, default=0),
    Column("sequence", BigInteger, nullable=False, default=0),
    PrimaryKeyConstraint("sku", "warehouse_id"),
    CheckConstraint("allocated >= 0 AND allocated <= on_hand", name="ck_stock_not_oversold"),
)

# Receipts already booked (ReceiveStock is idempotent on receipt_id).
receipts = Table(
    "receipts",
    metadata,
    Column("receipt_id", String(64), primary_key=True),
    Column("warehouse_id", String(64), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
)

fulfilments = Table(
    "fulfilments",
    metadata,
    Column("fulfilment_id", String(80), primary_key=True),
    Column("order_id", String(64), nullable=False, unique=True),
    Column("warehouse_id", String(64), nullable=False),
    Column("status", String(20), nullable=False),
    Column("shortage_policy", String(20), nullable=False),
    *_address("ship_to_"),
    Column("shipment_id", String(64), nullable=False, default=""),
    Column("carrier_id", String(64), nullable=False, default=""),
    Column("tracking_number", String(64), nullable=False, default=""),
    Column("package_weight_grams", BigInteger, nullable=False, default=0),
    # When the autopilot moves it on (NULL: it waits for someone else).
    Column("next_step_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # W3C traceparent of the command that created it: its later events join
    # the order's trace, whoever (autopilot, handheld, receipt) moves it on.
    Column("traceparent", String(64), nullable=False, default=""),
    Index("ix_fulfilments_status_next_step_at", "status", "next_step_at"),
    Index("ix_fulfilments_warehouse_status", "warehouse_id", "status"),
)

fulfilment_lines = Table(
    "fulfilment_lines",
    metadata,
    Column("order_id", String(64), nullable=False),
    Column("line_no", Integer, nullable=False),
    Column("sku", String(64), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    PrimaryKeyConstraint("order_id", "line_no"),
)

milestones = Table(
    "milestones",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("order_id", String(64), nullable=False, index=True),
    Column("status", String(20), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)

# Replica of the ERP item master (erp.item.upserted).
items = Table(
    "items",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("weight_grams", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
