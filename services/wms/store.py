"""WMS store: warehouses, stock and its movement history, receipts, fulfilment
orders, return receipts and the master-data replica."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    false,
    true,
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
    # The shipment being prepared (1, then +1 after each partial shipment).
    Column("wave", Integer, nullable=False, default=1, server_default="1"),
    # While EXCEPTION: what stopped it, and the status a decision resumes.
    Column("exception_kind", String(32), nullable=False, default="", server_default=""),
    Column("exception_detail", Text, nullable=False, default="", server_default=""),
    Column("exception_at", DateTime(timezone=True)),
    Column("resume_status", String(20), nullable=False, default="", server_default=""),
    Index("ix_fulfilments_status_next_step_at", "status", "next_step_at"),
    Index("ix_fulfilments_warehouse_status", "warehouse_id", "status"),
)

fulfilment_lines = Table(
    "fulfilment_lines",
    metadata,
    Column("order_id", String(64), nullable=False),
    Column("line_no", Integer, nullable=False),
    Column("sku", String(64), nullable=False),
    # Ordered. open = quantity - shipped - cancelled; the current shipment
    # (wave) holds wave_quantity of it (allocated); an open exception took
    # exception_quantity away from the wave (written off, waiting for a decision).
    Column("quantity", BigInteger, nullable=False),
    Column("shipped", BigInteger, nullable=False, default=0, server_default="0"),
    Column("cancelled", BigInteger, nullable=False, default=0, server_default="0"),
    Column("wave_quantity", BigInteger, nullable=False, default=0, server_default="0"),
    Column("exception_quantity", BigInteger, nullable=False, default=0, server_default="0"),
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

# Every stock movement, append-only: what was on hand after each sequence of a
# position (inventory reconciliation asks "as of sequence N"), and the event
# that announced it (still in the outbox = not yet published).
stock_movements = Table(
    "stock_movements",
    metadata,
    Column("warehouse_id", String(64), nullable=False),
    Column("sku", String(64), nullable=False),
    Column("sequence", BigInteger, nullable=False),
    Column("delta", BigInteger, nullable=False),
    Column("on_hand_after", BigInteger, nullable=False),
    # RECEIPT, SHIPMENT, ADJUSTMENT, RETURN; BASELINE for history started by a migration.
    Column("reason", String(32), nullable=False),
    Column("reference", String(100), nullable=False, default=""),
    Column("event_id", String(36), nullable=False, default=""),
    Column("at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("warehouse_id", "sku", "sequence"),
)

# Returns announced by an RMA (cmd.wms.return.expect), received at the dock,
# inspected line by line. EXPECTED -> RECEIVED -> INSPECTED, or CANCELLED /
# REJECTED. A cancel that arrives first leaves a CANCELLED tombstone.
return_receipts = Table(
    "return_receipts",
    metadata,
    Column("rma_number", String(100), primary_key=True),
    Column("return_id", String(64), nullable=False, default=""),
    Column("order_id", String(64), nullable=False, default=""),
    Column("warehouse_id", String(64), nullable=False, default=""),
    Column("status", String(20), nullable=False),
    Column("status_reason", Text, nullable=False, default=""),
    # When the returns autopilot moves it on (NULL: it waits for a handheld).
    Column("next_step_at", DateTime(timezone=True)),
    Column("expected_at", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True)),
    Column("inspected_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("traceparent", String(64), nullable=False, default=""),
    Index("ix_return_receipts_status_next_step_at", "status", "next_step_at"),
)

return_receipt_lines = Table(
    "return_receipt_lines",
    metadata,
    Column("rma_number", String(100), nullable=False),
    Column("line_number", Integer, nullable=False),
    Column("sku", String(64), nullable=False),
    Column("reason_code", String(32), nullable=False, default=""),
    Column("expected_quantity", BigInteger, nullable=False),
    Column("received_quantity", BigInteger, nullable=False, default=0),
    Column("restocked_quantity", BigInteger, nullable=False, default=0),
    Column("scrapped_quantity", BigInteger, nullable=False, default=0),
    Column("refused_quantity", BigInteger, nullable=False, default=0),
    Column("note", Text, nullable=False, default=""),
    PrimaryKeyConstraint("rma_number", "line_number"),
)

# Replica of the ERP item master (erp.item.upserted); ``revision`` orders the
# changes, so a stale event never overwrites a newer one.
items = Table(
    "items",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("weight_grams", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("description", Text, nullable=False, default="", server_default=""),
    Column("uom", String(16), nullable=False, default="", server_default=""),
    Column("currency_code", String(3), nullable=False, default="", server_default=""),
    Column("unit_price_minor", BigInteger, nullable=False, default=0, server_default="0"),
    Column("active", Boolean, nullable=False, default=True, server_default=true()),
    Column("revision", BigInteger, nullable=False, default=0, server_default="0"),
)

# Replica of the ERP customers (erp.customer.upserted).
customers = Table(
    "customers",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False, default=""),
    Column("currency_code", String(3), nullable=False, default=""),
    Column("credit_limit_minor", BigInteger, nullable=False, default=0),
    Column("blocked", Boolean, nullable=False, default=False, server_default=false()),
    Column("revision", BigInteger, nullable=False, default=0),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Replica of the ERP reorder points (erp.reorderpoint.upserted, ordered by
# ``revision``) and the replenishment trigger of each position: ``below`` is
# set when the inventory position crosses below the reorder point (one
# wms.replenishment.requested, ``request_id``) and cleared when it is back at
# or above it, or when the replenishment answering that request is received.
reorder_points = Table(
    "reorder_points",
    metadata,
    Column("warehouse_id", String(64), nullable=False),
    Column("sku", String(64), nullable=False),
    Column("reorder_point", BigInteger, nullable=False),
    Column("reorder_quantity", BigInteger, nullable=False),
    Column("revision", BigInteger, nullable=False, default=0),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("below", Boolean, nullable=False, default=False, server_default=false()),
    Column("request_id", String(64), nullable=False, default="", server_default=""),
    Column("requested_at", DateTime(timezone=True)),
    PrimaryKeyConstraint("warehouse_id", "sku"),
)

# Transfers issued from a warehouse (cmd.wms.stock.transfer_out is idempotent
# on transfer_id): ISSUED or REFUSED.
stock_transfers = Table(
    "stock_transfers",
    metadata,
    Column("transfer_id", String(64), primary_key=True),
    Column("warehouse_id", String(64), nullable=False),
    Column("destination_warehouse_id", String(64), nullable=False, default=""),
    Column("status", String(20), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)
