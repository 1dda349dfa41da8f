"""crossdock_outbox: a Tryton module shipped with Crossdock (an outbox inside Tryton).

Every create, write and delete of the records Crossdock publishes (parties and their
addresses, products and templates, sales, invoices, order points) inserts a row into
``crossdock_change`` in the SAME transaction as the change: a change that rolls back
(a refused confirmation) leaves nothing, a committed one leaves exactly one row. The
ERP adapter tails the table by id (``services/erp/tryton/feed.py``) and publishes the
canonical ``erp.*`` events. It also carries the two canonical item attributes that
Tryton's base modules do not (the unit of measure code and the weight in grams).
"""
