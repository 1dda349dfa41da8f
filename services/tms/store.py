"""TMS store: carriers and rate tables, shipments, and the master-data replica."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
)

from services.mesh.store import BigId, runtime_tables

metadata = MetaData()
outbox, inbox = runtime_tables(metadata)

carriers = Table(
    "carriers",
    metadata,
    Column("carrier_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("active", Boolean, nullable=False, default=True),
    # Simulated outage of the carrier's booking system: it refuses bookings.
    Column("suspended", Boolean, nullable=False, default=False, server_default=false()),
)

rates = Table(
    "rates",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("carrier_id", String(64), nullable=False, index=True),
    Column("service_level", String(64), nullable=False),
    # Comma-separated ISO country codes; empty = all destinations.
    Column("country_codes", Text, nullable=False, default=""),
    Column("currency_code", String(3), nullable=False),
    Column("base_minor", BigInteger, nullable=False),
    Column("per_kg_minor", BigInteger, nullable=False),
    Column("transit_days", Integer, nullable=False),
    Column("max_weight_grams", BigInteger, nullable=False, default=0),
)

shipments = Table(
    "shipments",
    metadata,
    Column("shipment_id", String(64), primary_key=True),
    # An order ships in one shipment, or several after a partial shipment.
    Column("order_id", String(64), nullable=False, index=True),
    Column("carrier_id", String(64), nullable=False),
    Column("service_level", String(64), nullable=False),
    Column("tracking_number", String(64), nullable=False, unique=True),
    Column("currency_code", String(3), nullable=False),
    Column("price_minor", BigInteger, nullable=False),
    Column("status", String(20), nullable=False),
    Column("book_time", DateTime(timezone=True), nullable=False),
    Column("dispatch_time", DateTime(timezone=True)),
    # Carriers that refused before this one took it: "carrier/level: reason" lines.
    Column("refused_attempts", Text, nullable=False, default="", server_default=""),
)

# Replica of ERP master data (erp.item.upserted / erp.customer.upserted);
# ``revision`` orders the changes, so a stale event never overwrites a newer one.
# The unit price is the declared value of a parcel's contents (insurance, customs).
items = Table(
    "items",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("weight_grams", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("currency_code", String(3), nullable=False, default="", server_default=""),
    Column("unit_price_minor", BigInteger, nullable=False, default=0, server_default="0"),
    Column("revision", BigInteger, nullable=False, default=0, server_default="0"),
)

customers = Table(
    "customers",
    metadata,
    Column("customer_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("country_code", String(2), nullable=False, default=""),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("currency_code", String(3), nullable=False, default="", server_default=""),
    Column("credit_limit_minor", BigInteger, nullable=False, default=0, server_default="0"),
    Column("blocked", Boolean, nullable=False, default=False, server_default=false()),
    Column("revision", BigInteger, nullable=False, default=0, server_default="0"),
)
