"""The Tryton adapter's own store: only what an integration layer owns.

- ``outbox`` / ``inbox``: the mesh's transactional outbox and idempotent consumer;
- ``id_map``: canonical ids (customer id, SKU, warehouse id, order id, shipment id,
  return id) to Tryton record ids, written once a Tryton record is known to exist
  (every write is also looked up by its business key in Tryton before it is made, so a
  lost id-map row costs a search, never a duplicate);
- ``cursors``: the position of the adapter in Tryton's change feed (``crossdock_change``
  ids), and in WMS's per-position movement sequence (the ledger's idempotency: a
  movement at or below a position's applied sequence is stale).
Everything else (customers, items, sales, invoices, stock, credit notes) is Tryton's.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

from services.mesh.store import runtime_tables

metadata = MetaData()
outbox, inbox = runtime_tables(metadata)

id_map = Table(
    "id_map",
    metadata,
    Column("kind", String(32), nullable=False),
    Column("canonical_id", String(100), nullable=False),
    Column("tryton_id", BigInteger, nullable=False),
    # What the adapter last published for the record (a revision, a status), as text.
    Column("note", Text, nullable=False, default=""),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("kind", "canonical_id"),
)

cursors = Table(
    "cursors",
    metadata,
    # "feed" (Tryton's change rows), or "ledger:<warehouse>/<sku>" (WMS's movement sequence).
    Column("name", String(200), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
