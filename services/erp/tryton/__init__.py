"""The ERP adapter to Tryton (8.2): the ERP contract served from a Tryton server over its
JSON-RPC API, as non-admin integration users. Its own store (``store.py``) keeps only the
outbox and inbox, the id map and its cursors; the records are Tryton's.

- ``server.py``, ``setup.py``: trytond under gunicorn on its own database, set up once;
- ``module/``: the crossdock_outbox Tryton module (change rows, an outbox inside Tryton);
- ``rpc.py``: JSON-RPC, Tryton's errors, a bound on concurrent calls;
- ``masterdata.py``, ``sales.py``, ``ledger.py``, ``settlement.py``: the nouns;
- ``feed.py``: Tryton's changes, whoever made them, as ``erp.*`` events.
"""

from __future__ import annotations

from services.mesh.config import Settings
from services.mesh.store import Store

from ..backend import ErpBackend
from .base import TrytonErp
from .feed import ChangeFeed
from .ledger import TrytonLedger
from .masterdata import TrytonMasterData
from .replenishment import TrytonReplenishment
from .returns import TrytonReturns
from .sales import TrytonInvoicing, TrytonOrders, TrytonSalesOrders
from .settlement import TrytonSettlement


def tryton_backend(store: Store, settings: Settings) -> ErpBackend:
    erp = TrytonErp(store, settings)
    orders = TrytonOrders(erp)
    replenishment = TrytonReplenishment(erp)
    return ErpBackend(
        name="tryton",
        master_data=TrytonMasterData(erp),
        sales_orders=TrytonSalesOrders(erp, orders),
        invoicing=TrytonInvoicing(erp, orders),
        ledger=TrytonLedger(erp),
        returns=TrytonReturns(erp, orders),
        settlement=TrytonSettlement(erp, orders),
        replenishment=replenishment,
        loops=[ChangeFeed(erp, store).loop(), replenishment.loop()],
    )
