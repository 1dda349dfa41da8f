"""ERP replenishment rules (pure, shared by every backend): planning a purchase or a
transfer for each WMS replenishment request, and when the simulated supplier and
carrier deliver it.

Rules (unit-tested; the built-in ERP applies them in ``builtin/replenishment.py``):

- **Purchase or transfer.** A request for Q units of a SKU in warehouse W is
  a TRANSFER from another warehouse S when S's *spare* stock covers all of Q:
  spare = S's on hand in the ERP inventory ledger - S's own reorder point for
  the SKU (0 without one) - what planned transfers not yet issued already
  take from S. Of several such warehouses the one with the most spare wins
  (then the lowest warehouse id). Otherwise (no warehouse covers the whole
  quantity: transfers are never split) it is a PURCHASE requisition to the
  supplier.
- **Expected receipt.** A purchase is delivered CROSSDOCK_ERP_SUPPLIER_LEAD_TIME
  seconds after it is planned. A transfer first asks the source warehouse to
  issue the stock (``cmd.wms.stock.transfer_out``: a TRANSFER movement the
  ledger follows); it arrives CROSSDOCK_ERP_TRANSFER_LEAD_TIME seconds after
  it left. If the source cannot issue it all (its available stock is lower
  than the ledger's on hand, e.g. allocated to orders), the transfer falls
  back to a purchase (published again as ``erp.replenishment.planned``).
- **Delivery.** A loop in the ERP process sends ``cmd.wms.stock.receive``
  (receipt id = replenishment id, idempotent in WMS) for every replenishment
  that is due; WMS books it like any receipt, allocating backorders first
  come, first served, and answers ``wms.stock.received`` (status RECEIVED).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from services.mesh.config import Settings

PURCHASE, TRANSFER = "PURCHASE", "TRANSFER"


@dataclass(frozen=True)
class Source:
    """Another warehouse's stock of the SKU, as ERP sees it."""

    warehouse_id: str
    on_hand: int  # ledger
    reorder_point: int = 0
    committed: int = 0  # planned transfers out of it, not yet issued

    @property
    def spare(self) -> int:
        return self.on_hand - self.reorder_point - self.committed


@dataclass(frozen=True)
class Plan:
    kind: str
    source_warehouse_id: str
    note: str


def plan_replenishment(warehouse_id: str, quantity: int, sources: Iterable[Source]) -> Plan:
    """TRANSFER from the other warehouse with the most spare stock when its spare
    covers the whole quantity (ties: lowest warehouse id); else PURCHASE."""
    covering = sorted((s for s in sources if s.warehouse_id != warehouse_id and s.spare >= quantity),
                      key=lambda s: (-s.spare, s.warehouse_id))
    if covering:
        best = covering[0]
        return Plan(TRANSFER, best.warehouse_id, f"{best.warehouse_id} has {best.spare} spare")
    return Plan(PURCHASE, "", f"no other warehouse has {quantity} spare")


def lead_time(kind: str, settings: Settings) -> float:
    return settings.erp_transfer_lead_time if kind == TRANSFER else settings.erp_supplier_lead_time


def planned_request_problem(request_id: str, sku: str, warehouse_id: str, quantity: int) -> str:
    """Why a replenishment request cannot be planned ("" when it can)."""
    if not request_id or not sku or not warehouse_id or quantity < 1:
        return "a replenishment request needs request_id, sku, warehouse_id and a quantity > 0"
    return ""
