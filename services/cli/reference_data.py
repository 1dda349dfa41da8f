"""Reference data for an empty mesh: customers, items, warehouses with stock,
carriers and rates. Loading is idempotent (upserts, fixed receipt ids)."""

from __future__ import annotations

from crossdock.common.v1.common_pb2 import Address, Money, SkuQuantity
from crossdock.erp.v1 import erp_pb2
from crossdock.tms.v1 import tms_pb2
from crossdock.wms.v1 import wms_pb2


def usd(minor: int) -> Money:
    return Money(currency_code="USD", amount_minor=minor)


WAREHOUSES = [
    wms_pb2.Warehouse(warehouse_id="WH-EAST", name="Newark DC",
                      address=Address(line1="1 Port St", city="Newark", postal_code="07114",
                                      country_code="US")),
    wms_pb2.Warehouse(warehouse_id="WH-WEST", name="Reno DC",
                      address=Address(line1="9 Desert Rd", city="Reno", postal_code="89502",
                                      country_code="US")),
]

CUSTOMERS = [
    erp_pb2.Customer(customer_id="C-ACME", name="Acme Retail", currency_code="USD",
                     credit_limit=usd(500_000_000),
                     ship_to=Address(name="Acme Retail", line1="100 Main St", city="Chicago",
                                     postal_code="60601", country_code="US")),
    erp_pb2.Customer(customer_id="C-GLOBEX", name="Globex Stores", currency_code="USD",
                     credit_limit=usd(200_000_000),
                     ship_to=Address(name="Globex Stores", line1="5 Bay Rd", city="Toronto",
                                     postal_code="M5V 2T6", country_code="CA")),
    # A small credit line: the demo's credit refusal.
    erp_pb2.Customer(customer_id="C-INITECH", name="Initech", currency_code="USD",
                     credit_limit=usd(5_000),
                     ship_to=Address(name="Initech", line1="4120 Freidrich Ln", city="Austin",
                                     postal_code="78744", country_code="US")),
]

ITEMS = [
    erp_pb2.Item(sku="SKU-1001", description="Pallet wrap 500mm", uom="ROLL",
                 unit_price=usd(1_899), weight_grams=2_400),
    erp_pb2.Item(sku="SKU-1002", description="Carton 40x30x30", uom="EA",
                 unit_price=usd(149), weight_grams=450),
    erp_pb2.Item(sku="SKU-1003", description="Label printer ribbon", uom="EA",
                 unit_price=usd(2_450), weight_grams=300),
    erp_pb2.Item(sku="SKU-1004", description="Safety gloves (pair)", uom="PR",
                 unit_price=usd(799), weight_grams=150),
    erp_pb2.Item(sku="SKU-1005", description="Barcode scanner", uom="EA",
                 unit_price=usd(18_900), weight_grams=900),
    erp_pb2.Item(sku="SKU-1006", description="Packing tape 48mm", uom="EA",
                 unit_price=usd(399), weight_grams=250),
    erp_pb2.Item(sku="SKU-1007", description="Hand truck", uom="EA",
                 unit_price=usd(12_999), weight_grams=14_000),
    erp_pb2.Item(sku="SKU-1008", description="Stretch film dispenser", uom="EA",
                 unit_price=usd(3_499), weight_grams=1_800),
    # Scarce: the demo's shortage.
    erp_pb2.Item(sku="SKU-RARE", description="Forklift battery", uom="EA",
                 unit_price=usd(95_000), weight_grams=25_000),
]
for _item in ITEMS:
    _item.active = True

# (warehouse, sku, quantity)
STOCK = [(wh.warehouse_id, item.sku, 10_000) for wh in WAREHOUSES for item in ITEMS if item.sku != "SKU-RARE"]
STOCK.append(("WH-EAST", "SKU-RARE", 3))

# (warehouse, sku, reorder point, reorder quantity), loaded by `crossdock seed`
# through ERP's ReplenishmentService: the demo's backordered SKU-RARE order
# takes the position below 2, a purchase of the missing quantity + 22 arrives
# after CROSSDOCK_ERP_SUPPLIER_LEAD_TIME and releases it.
REORDER_POINTS = [("WH-EAST", "SKU-RARE", 2, 20)]

CARRIERS = [
    tms_pb2.Carrier(carrier_id="PARCELCO", name="ParcelCo", active=True, rates=[
        tms_pb2.Rate(service_level="GROUND", country_codes=["US", "CA"], base=usd(650), per_kg=usd(85),
                     transit_days=3, max_weight_grams=30_000),
        tms_pb2.Rate(service_level="EXPRESS", country_codes=["US", "CA"], base=usd(1_500), per_kg=usd(150),
                     transit_days=1, max_weight_grams=30_000),
    ]),
    tms_pb2.Carrier(carrier_id="FREIGHTLINE", name="Freightline LTL", active=True, rates=[
        tms_pb2.Rate(service_level="FREIGHT", country_codes=["US", "CA", "MX"], base=usd(6_000),
                     per_kg=usd(20), transit_days=5),
    ]),
]


async def load(erp, wms, tms, *, timeout: float = 10.0) -> dict[str, int]:
    """Load everything through the services' own APIs; returns counts."""
    for wh in WAREHOUSES:
        await wms.UpsertWarehouse(wms_pb2.UpsertWarehouseRequest(warehouse=wh), timeout=timeout)
    for c in CUSTOMERS:
        await erp.UpsertCustomer(erp_pb2.UpsertCustomerRequest(customer=c), timeout=timeout)
    for item in ITEMS:
        await erp.UpsertItem(erp_pb2.UpsertItemRequest(item=item), timeout=timeout)
    for carrier in CARRIERS:
        await tms.UpsertCarrier(tms_pb2.UpsertCarrierRequest(carrier=carrier), timeout=timeout)
    for wh in WAREHOUSES:
        lines = [SkuQuantity(sku=sku, quantity=q) for w, sku, q in STOCK if w == wh.warehouse_id]
        await wms.ReceiveStock(wms_pb2.ReceiveStockRequest(
            receipt_id=f"SEED-{wh.warehouse_id}", warehouse_id=wh.warehouse_id, lines=lines), timeout=timeout)
    return {"warehouses": len(WAREHOUSES), "customers": len(CUSTOMERS), "items": len(ITEMS),
            "carriers": len(CARRIERS), "stock_lines": len(STOCK)}
