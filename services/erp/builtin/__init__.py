"""The built-in reference ERP: its own store (``services/erp/store.py``, migrated by
``services/erp/migrations``), the embedded default behind the ERP contract."""

from __future__ import annotations

from services.mesh.config import Settings
from services.mesh.store import Store

from ..backend import ErpBackend
from .invoicing import BuiltinInvoicing
from .ledger import BuiltinLedger
from .masterdata import BuiltinMasterData
from .replenishment import BuiltinReplenishment, delivery_loop
from .returns import BuiltinReturns
from .sales_orders import BuiltinSalesOrders
from .settlement import BuiltinSettlement


def builtin_backend(store: Store, settings: Settings) -> ErpBackend:
    return ErpBackend(
        name="builtin",
        master_data=BuiltinMasterData(store),
        sales_orders=BuiltinSalesOrders(store),
        invoicing=BuiltinInvoicing(store),
        ledger=BuiltinLedger(store),
        returns=BuiltinReturns(store),
        settlement=BuiltinSettlement(store),
        replenishment=BuiltinReplenishment(store, settings),
        loops=[delivery_loop(store, settings)],
    )
