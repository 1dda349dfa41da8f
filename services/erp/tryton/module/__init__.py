"""crossdock_outbox: a Tryton module shipped with Crossdock (an outbox inside Tryton).

Every create, write and delete of the records Crossdock publishes (parties and their
addresses, products and templates, sales, invoices, order points) inserts a row into
``crossdock_change`` in the SAME transaction as the change: a change that rolls back
(a refused confirmation) leaves nothing, a committed one leaves exactly one row. The
ERP adapter tails the table by id (``services/erp/tryton/feed.py``) and publishes the
canonical ``erp.*`` events. It also carries the two canonical item attributes that
Tryton's base modules do not (the unit of measure code and the weight in grams).
"""

from trytond import backend as _backend
from trytond.transaction import Transaction as _Transaction

if _backend.name == "sqlite":
    # SQLite has one writer at a time and Crossdock serves a SQLite database with ONE
    # worker process, so a table or record lock would add nothing; and Tryton's way of
    # taking one (raise, roll back, start the call again with the lock) is unsafe on
    # SQLite: writes made before a savepoint's release are already committed, so the
    # first attempt's effects stay (seen here: an invoice posted twice, its move doubled).
    def _no_lock_needed(self, *args, **kwargs):
        return None

    _Transaction.lock_table = _no_lock_needed
    _Transaction.lock_records = _no_lock_needed
