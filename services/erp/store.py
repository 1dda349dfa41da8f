"""ERP store: customers, item master, sales orders, invoices, return authorisations,
credit memos and the inventory ledger."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

from services.mesh.store import BigId, runtime_tables

metadata = MetaData()
outbox, inbox = runtime_tables(metadata)

customers = Table(
    "customers",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("currency_code", String(3), nullable=False),
    Column("credit_limit_minor", BigInteger, nullable=False),
    # Computed by ERP (invoiced and unpaid; accepted and not yet invoiced).
    Column("open_balance_minor", BigInteger, nullable=False, default=0),
    Column("open_orders_minor", BigInteger, nullable=False, default=0),
    Column("ship_to_name", String(200), nullable=False, default=""),
    Column("ship_to_line1", String(200), nullable=False, default=""),
    Column("ship_to_city", String(100), nullable=False, default=""),
    Column("ship_to_postal_code", String(20), nullable=False, default=""),
    Column("ship_to_country_code", String(2), nullable=False, default=""),
    Column("blocked", Boolean, nullable=False, default=False),
    # +1 per change: replicas recognise a stale erp.customer.upserted.
    Column("revision", BigInteger, nullable=False, default=0, server_default="0"),
)

items = Table(
    "items",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("description", Text, nullable=False, default=""),
    Column("uom", String(16), nullable=False),
    Column("currency_code", String(3), nullable=False),
    Column("unit_price_minor", BigInteger, nullable=False),
    Column("weight_grams", BigInteger, nullable=False),
    Column("active", Boolean, nullable=False, default=True),
    # +1 per change: replicas recognise a stale erp.item.upserted.
    Column("revision", BigInteger, nullable=False, default=0, server_default="0"),
)

sales_orders = Table(
    "sales_orders",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("customer_id", String(64), nullable=False, index=True),
    Column("currency_code", String(3), nullable=False),
    Column("total_minor", BigInteger, nullable=False),
    # ACCEPTED / REJECTED / CANCELLED / INVOICED
    Column("status", String(20), nullable=False),
    Column("status_reason", Text, nullable=False, default=""),
    # Stable machine code of a rejection, e.g. CREDIT_LIMIT_EXCEEDED.
    Column("reason_code", String(64), nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

sales_order_lines = Table(
    "sales_order_lines",
    metadata,
    Column("order_id", String(64), nullable=False),
    Column("line_number", Integer, nullable=False),
    Column("sku", String(64), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("unit_price_minor", BigInteger, nullable=False),
    # Invoiced so far (one invoice per shipment) and cancelled by a warehouse
    # exception decision; the rest is still open (holds credit).
    Column("invoiced_quantity", BigInteger, nullable=False, default=0, server_default="0"),
    Column("cancelled_quantity", BigInteger, nullable=False, default=0, server_default="0"),
    PrimaryKeyConstraint("order_id", "line_number"),
)

invoices = Table(
    "invoices",
    metadata,
    Column("invoice_id", String(100), primary_key=True),
    Column("order_id", String(64), nullable=False, index=True),
    # Exactly one invoice per shipment.
    Column("shipment_id", String(64), nullable=False, unique=True),
    Column("customer_id", String(64), nullable=False),
    Column("currency_code", String(3), nullable=False),
    Column("total_minor", BigInteger, nullable=False),
    Column("posted_at", DateTime(timezone=True), nullable=False, index=True),
)

invoice_lines = Table(
    "invoice_lines",
    metadata,
    Column("invoice_id", String(100), nullable=False),
    Column("line_number", Integer, nullable=False),
    Column("sku", String(64), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("unit_price_minor", BigInteger, nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    PrimaryKeyConstraint("invoice_id", "line_number"),
)

# ERP's view of stock, kept from wms.inventory.adjusted (WMS is the truth).
ledger_positions = Table(
    "ledger_positions",
    metadata,
    Column("sku", String(64), nullable=False),
    Column("warehouse_id", String(64), nullable=False),
    Column("on_hand", BigInteger, nullable=False),
    Column("last_sequence", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("sku", "warehouse_id"),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("sku", String(64), nullable=False),
    Column("warehouse_id", String(64), nullable=False),
    Column("delta", BigInteger, nullable=False),
    Column("on_hand_after", BigInteger, nullable=False),
    Column("sequence", BigInteger, nullable=False),
    Column("reason", String(32), nullable=False),
    Column("reference", String(100), nullable=False, default=""),
    Column("event_id", String(100), nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
    Index("ix_ledger_entries_position", "sku", "warehouse_id", "sequence"),
)

# One row per return (of the returns process): AUTHORIZED (with an RMA
# number), REFUSED, CANCELLED (also a tombstone when a cancel came first) or
# CREDITED (its one credit memo posted).
return_authorizations = Table(
    "return_authorizations",
    metadata,
    Column("return_id", String(64), primary_key=True),
    Column("rma_number", String(100), unique=True),
    Column("order_id", String(64), nullable=False, default="", index=True),
    Column("customer_id", String(64), nullable=False, default=""),
    Column("currency_code", String(3), nullable=False, default=""),
    Column("expected_credit_minor", BigInteger, nullable=False, default=0),
    Column("status", String(20), nullable=False),
    Column("reason_code", String(64), nullable=False, default=""),
    Column("status_reason", Text, nullable=False, default=""),
    Column("credit_memo_id", String(100), nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

return_authorization_lines = Table(
    "return_authorization_lines",
    metadata,
    Column("return_id", String(64), nullable=False),
    Column("line_number", Integer, nullable=False),
    Column("sku", String(64), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    # The price it was invoiced at.
    Column("unit_price_minor", BigInteger, nullable=False),
    PrimaryKeyConstraint("return_id", "line_number"),
)

# Exactly one credit memo per return authorisation (unique return_id).
credit_memos = Table(
    "credit_memos",
    metadata,
    Column("credit_memo_id", String(100), primary_key=True),
    Column("return_id", String(64), nullable=False, unique=True),
    Column("rma_number", String(100), nullable=False, unique=True),
    Column("order_id", String(64), nullable=False, index=True),
    Column("customer_id", String(64), nullable=False, index=True),
    Column("currency_code", String(3), nullable=False),
    Column("total_minor", BigInteger, nullable=False),
    Column("posted_at", DateTime(timezone=True), nullable=False, index=True),
)

credit_memo_lines = Table(
    "credit_memo_lines",
    metadata,
    Column("credit_memo_id", String(100), nullable=False),
    Column("line_number", Integer, nullable=False),
    Column("sku", String(64), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("unit_price_minor", BigInteger, nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    PrimaryKeyConstraint("credit_memo_id", "line_number"),
)

# Reorder points: master data per SKU and warehouse (erp.reorderpoint.upserted
# to the WMS replica; ``revision`` +1 per change).
reorder_points = Table(
    "reorder_points",
    metadata,
    Column("sku", String(64), nullable=False),
    Column("warehouse_id", String(64), nullable=False),
    Column("reorder_point", BigInteger, nullable=False),
    Column("reorder_quantity", BigInteger, nullable=False),
    Column("revision", BigInteger, nullable=False, default=1),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("sku", "warehouse_id"),
)

# One replenishment per WMS request (unique request_id): a PURCHASE or a
# TRANSFER (from source_warehouse_id). PLANNED -> (IN_TRANSIT for a transfer)
# -> DELIVERED (cmd.wms.stock.receive sent when due_at passed) -> RECEIVED.
replenishments = Table(
    "replenishments",
    metadata,
    Column("replenishment_id", String(64), primary_key=True),
    Column("request_id", String(64), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),
    Column("sku", String(64), nullable=False),
    Column("warehouse_id", String(64), nullable=False),
    Column("source_warehouse_id", String(64), nullable=False, default=""),
    Column("quantity", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("position", BigInteger, nullable=False, default=0),
    Column("reorder_point", BigInteger, nullable=False, default=0),
    Column("note", Text, nullable=False, default=""),
    # When the delivery loop delivers it (expected receipt); NULL while a
    # transfer waits for its source warehouse.
    Column("due_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True)),
    Index("ix_replenishments_status_due_at", "status", "due_at"),
    Index("ix_replenishments_warehouse_sku", "warehouse_id", "sku"),
)
