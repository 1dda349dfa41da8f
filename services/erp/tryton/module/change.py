"""The change rows (one per record and modification, written in the modifying
transaction) and the models that write them."""

from sql import Table
from trytond.model import ModelSQL, ModelView, fields
from trytond.pool import PoolMeta
from trytond.transaction import Transaction


class Change(ModelSQL, ModelView):
    "Crossdock change"

    __name__ = "crossdock.change"

    model = fields.Char("Model", required=True)
    record = fields.Integer("Record", required=True)
    mode = fields.Char("Mode", required=True)
    field_names = fields.Char("Fields")


def record_changes(model, mode, ids, field_names):
    """Insert the change rows with one statement (no ORM: no recursion, little cost)."""
    if not ids:
        return
    table = Table("crossdock_change")
    transaction = Transaction()
    names = ",".join(sorted(field_names or ()))
    cursor = transaction.connection.cursor()
    cursor.execute(
        *table.insert(
            [table.model, table.record, table.mode, table.field_names, table.create_uid, table.create_date],
            [[model, i, mode, names, transaction.user, _now()] for i in ids],
        )
    )


def _now():
    import datetime

    return datetime.datetime.now()


class _Tracked:
    # The record a change is published as: itself, or its owner (an address -> its party).
    @classmethod
    def _crossdock_targets(cls, records):
        return cls.__name__, [r.id for r in records]

    @classmethod
    def on_modification(cls, mode, records, field_names=None):
        super().on_modification(mode, records, field_names=field_names)
        model, ids = cls._crossdock_targets(records)
        record_changes(model, mode, ids, field_names)


class Party(_Tracked, metaclass=PoolMeta):
    __name__ = "party.party"


class Address(metaclass=PoolMeta):
    __name__ = "party.address"

    @classmethod
    def on_modification(cls, mode, records, field_names=None):
        super().on_modification(mode, records, field_names=field_names)
        try:
            parties = sorted({r.party.id for r in records if r.party})
        except Exception:  # a record already gone
            parties = []
        record_changes("party.party", "write", parties, {"addresses"})


class Template(_Tracked, metaclass=PoolMeta):
    __name__ = "product.template"

    crossdock_uom = fields.Char("Crossdock unit of measure")
    crossdock_weight_grams = fields.Integer("Crossdock weight (g)")


class Product(_Tracked, metaclass=PoolMeta):
    __name__ = "product.product"


class Sale(_Tracked, metaclass=PoolMeta):
    __name__ = "sale.sale"

    def must_check_credit_limit(self):
        # Crossdock's sales ship through the WMS (shipment method "manual" in Tryton):
        # Tryton's credit-limit rule applies to them as to the sales it ships itself.
        return super().must_check_credit_limit() or self.shipment_method == "manual"


class Invoice(_Tracked, metaclass=PoolMeta):
    __name__ = "account.invoice"


class OrderPoint(_Tracked, metaclass=PoolMeta):
    __name__ = "stock.order_point"


class Move(metaclass=PoolMeta):
    __name__ = "stock.move"

    crossdock_key = fields.Char("Crossdock key")


class Booking(ModelSQL, ModelView):
    "Crossdock booking"

    __name__ = "crossdock.booking"

    # The business key of a WMS movement (or a correction) an inventory books, made in
    # the same transaction as the inventory: looked up before a retry, so a movement is
    # booked once however often it is delivered and however the batches are cut.
    key = fields.Char("Key", required=True)
    inventory = fields.Many2One("stock.inventory", "Inventory", required=True, ondelete="CASCADE")


class Inventory(metaclass=PoolMeta):
    __name__ = "stock.inventory"

    crossdock_bookings = fields.One2Many("crossdock.booking", "inventory", "Crossdock bookings")


class Replenishment(ModelSQL, ModelView):
    "Crossdock replenishment"

    __name__ = "crossdock.replenishment"

    # One per WMS replenishment request (Crossdock's planning rule decides purchase or
    # transfer; the record, its state and its due time are kept here, in Tryton).
    replenishment_id = fields.Char("Replenishment", required=True)
    request_id = fields.Char("Request", required=True)
    kind = fields.Char("Kind", required=True)
    sku = fields.Char("SKU", required=True)
    warehouse_id = fields.Char("Warehouse", required=True)
    source_warehouse_id = fields.Char("Source warehouse")
    quantity = fields.Integer("Quantity", required=True)
    status = fields.Char("Status", required=True)
    position = fields.Integer("Position")
    reorder_point = fields.Integer("Reorder point")
    note = fields.Text("Note")
    due_at = fields.DateTime("Due at")
    received_at = fields.DateTime("Received at")
