"""TMS use cases: each takes a store transaction (or connection) and does one thing."""

from __future__ import annotations

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from crossdock.common.v1.common_pb2 import Money
from crossdock.erp.v1 import erp_pb2
from crossdock.tms.v1 import messages_pb2 as events
from crossdock.tms.v1 import tms_pb2
from crossdock.wms.v1 import wms_pb2
from services.mesh.errors import InvalidArgument, NotFound
from services.mesh.store import Tx, insert_ignore, utcnow

from . import domain
from .store import carriers, customers, items, rates, shipments

STATUS = {
    "BOOKED": tms_pb2.SHIPMENT_STATUS_BOOKED,
    "DISPATCHED": tms_pb2.SHIPMENT_STATUS_DISPATCHED,
}


def validate_carrier(c: tms_pb2.Carrier) -> None:
    problems = []
    if not c.carrier_id:
        problems.append(("carrier.carrier_id", "required"))
    for i, r in enumerate(c.rates):
        if not r.service_level:
            problems.append((f"carrier.rates[{i}].service_level", "required"))
        if r.base.amount_minor < 0 or r.per_kg.amount_minor < 0:
            problems.append((f"carrier.rates[{i}]", "prices must not be negative"))
        if r.base.currency_code != r.per_kg.currency_code or len(r.base.currency_code) != 3:
            problems.append((f"carrier.rates[{i}]", "base and per_kg need the same ISO currency"))
    if problems:
        raise InvalidArgument(problems)


async def upsert_carrier(tx: Tx, c: tms_pb2.Carrier) -> None:
    validate_carrier(c)
    conn = tx.conn
    await conn.execute(delete(rates).where(rates.c.carrier_id == c.carrier_id))
    await conn.execute(delete(carriers).where(carriers.c.carrier_id == c.carrier_id))
    await conn.execute(carriers.insert().values(carrier_id=c.carrier_id, name=c.name, active=c.active,
                                                suspended=c.suspended))
    for r in c.rates:
        await conn.execute(
            rates.insert().values(
                carrier_id=c.carrier_id,
                service_level=r.service_level,
                country_codes=",".join(cc.upper() for cc in r.country_codes),
                currency_code=r.base.currency_code,
                base_minor=r.base.amount_minor,
                per_kg_minor=r.per_kg.amount_minor,
                transit_days=r.transit_days,
                max_weight_grams=r.max_weight_grams,
            )
        )


async def list_carriers(conn: AsyncConnection) -> list[tms_pb2.Carrier]:
    out = []
    for c in (await conn.execute(select(carriers).order_by(carriers.c.carrier_id))).all():
        rows = (await conn.execute(select(rates).where(rates.c.carrier_id == c.carrier_id))).all()
        out.append(
            tms_pb2.Carrier(
                carrier_id=c.carrier_id,
                name=c.name,
                active=c.active,
                suspended=c.suspended,
                rates=[
                    tms_pb2.Rate(
                        service_level=r.service_level,
                        country_codes=[x for x in r.country_codes.split(",") if x],
                        base=Money(currency_code=r.currency_code, amount_minor=r.base_minor),
                        per_kg=Money(currency_code=r.currency_code, amount_minor=r.per_kg_minor),
                        transit_days=r.transit_days,
                        max_weight_grams=r.max_weight_grams,
                    )
                    for r in rows
                ],
            )
        )
    return out


async def load_rates(conn: AsyncConnection) -> list[domain.RateLine]:
    rows = (
        await conn.execute(
            select(rates).join(carriers, carriers.c.carrier_id == rates.c.carrier_id)
            .where(carriers.c.active.is_(True))
        )
    ).all()
    return [
        domain.RateLine(
            carrier_id=r.carrier_id,
            service_level=r.service_level,
            country_codes=tuple(x for x in r.country_codes.split(",") if x),
            currency_code=r.currency_code,
            base_minor=r.base_minor,
            per_kg_minor=r.per_kg_minor,
            transit_days=r.transit_days,
            max_weight_grams=r.max_weight_grams,
        )
        for r in rows
    ]


def option_pb(o: domain.Option) -> tms_pb2.ShippingOption:
    return tms_pb2.ShippingOption(
        carrier_id=o.carrier_id,
        service_level=o.service_level,
        price=Money(currency_code=o.currency_code, amount_minor=o.price_minor),
        transit_days=o.transit_days,
    )


def shipment_pb(row) -> tms_pb2.Shipment:
    s = tms_pb2.Shipment(
        shipment_id=row.shipment_id,
        order_id=row.order_id,
        carrier_id=row.carrier_id,
        service_level=row.service_level,
        tracking_number=row.tracking_number,
        price=Money(currency_code=row.currency_code, amount_minor=row.price_minor),
        status=STATUS[row.status],
    )
    s.book_time.FromDatetime(row.book_time)
    if row.dispatch_time:
        s.dispatch_time.FromDatetime(row.dispatch_time)
    return s


async def get_shipment(conn: AsyncConnection, order_id: str, shipment_id: str = ""):
    """A shipment by id, else the order's latest."""
    if shipment_id:
        query = select(shipments).where(shipments.c.shipment_id == shipment_id)
    else:
        query = (select(shipments).where(shipments.c.order_id == order_id)
                 .order_by(shipments.c.book_time.desc(), shipments.c.shipment_id.desc()).limit(1))
    row = (await conn.execute(query)).first()
    if row is None:
        raise NotFound("shipment", shipment_id or order_id,
                       f"no shipment {shipment_id!r}" if shipment_id
                       else f"no shipment for order {order_id!r}")
    return row


def _attempts_pb(text: str) -> list[events.BookingAttempt]:
    out = []
    for line in filter(None, text.split("\n")):
        who, _, reason = line.partition(": ")
        carrier_id, _, level = who.partition("/")
        out.append(events.BookingAttempt(carrier_id=carrier_id, service_level=level, reason=reason))
    return out


async def book_shipment(tx: Tx, cmd: events.BookShipment) -> None:
    """Book the cheapest eligible option; a carrier that refuses passes it to the next one.

    Idempotent on shipment_id (an order may ship in several shipments). When
    no option is left the booking fails with every refusal listed, and a
    retry of the same command may book later (nothing is recorded for a
    failed booking).
    """
    shipment_id = cmd.shipment_id or f"SHP-{cmd.order_id}"
    existing = (
        await tx.conn.execute(select(shipments).where(shipments.c.shipment_id == shipment_id))
    ).first()
    if existing is not None:
        # A repeated command: say again what was booked.
        await tx.emit("tms.shipment.booked", events.ShipmentBooked(
            shipment=shipment_pb(existing), refused_attempts=_attempts_pb(existing.refused_attempts)),
            key=cmd.order_id)
        return
    options = domain.shipping_options(
        await load_rates(tx.conn),
        country_code=cmd.destination.country_code,
        weight_grams=cmd.weight_grams,
        currency_code=cmd.currency_code,
        service_level=cmd.service_level,
    )
    if cmd.carrier_id:
        options = [o for o in options if o.carrier_id == cmd.carrier_id]
    suspended = set((await tx.conn.execute(
        select(carriers.c.carrier_id).where(carriers.c.suspended.is_(True)))).scalars())
    choice = domain.first_accepting(options, suspended)
    if choice.option is None:
        if options:
            code = "ALL_CARRIERS_REFUSED"
            reason = f"all {len(options)} eligible option(s) refused the booking"
        else:
            code = "NO_CARRIER_SERVICE"
            reason = (f"no active carrier{' ' + cmd.carrier_id if cmd.carrier_id else ''} serves "
                      f"{cmd.destination.country_code or '?'} at {cmd.weight_grams} g"
                      + (f" with service level {cmd.service_level}" if cmd.service_level else ""))
        await tx.emit(
            "tms.shipment.booking_failed",
            events.ShipmentBookingFailed(
                order_id=cmd.order_id, shipment_id=shipment_id, reason_code=code, reason=reason,
                refused_attempts=[events.BookingAttempt(carrier_id=a.carrier_id,
                                                        service_level=a.service_level, reason=a.reason)
                                  for a in choice.refused]),
            key=cmd.order_id,
        )
        return
    best = choice.option
    now = utcnow()
    values = dict(
        shipment_id=shipment_id,
        order_id=cmd.order_id,
        carrier_id=best.carrier_id,
        service_level=best.service_level,
        tracking_number=domain.tracking_number(best.carrier_id, shipment_id),
        currency_code=best.currency_code,
        price_minor=best.price_minor,
        status="BOOKED",
        book_time=now,
        dispatch_time=None,
        refused_attempts="\n".join(f"{a.carrier_id}/{a.service_level}: {a.reason}" for a in choice.refused),
    )
    await tx.conn.execute(shipments.insert().values(**values))
    row = (await tx.conn.execute(select(shipments).where(shipments.c.shipment_id == shipment_id))).one()
    await tx.emit("tms.shipment.booked", events.ShipmentBooked(
        shipment=shipment_pb(row), refused_attempts=_attempts_pb(row.refused_attempts)), key=cmd.order_id)


async def mark_dispatched(tx: Tx, fulfilment: wms_pb2.FulfilmentOrder) -> None:
    key = (shipments.c.shipment_id == fulfilment.shipment_id if fulfilment.shipment_id
           else shipments.c.order_id == fulfilment.order_id)
    result = await tx.conn.execute(
        update(shipments).where(key, shipments.c.status == "BOOKED")
        .values(status="DISPATCHED", dispatch_time=utcnow())
    )
    if result.rowcount:
        row = (await tx.conn.execute(select(shipments).where(key).limit(1))).one()
        await tx.emit("tms.shipment.dispatched", events.ShipmentDispatched(shipment=shipment_pb(row)),
                      key=fulfilment.order_id)


async def _replicate(tx: Tx, table, key: str, key_value: str, revision: int, values: dict) -> None:
    """Insert or replace a replica row unless it holds this revision or a newer one
    (revision 0, from before revisions existed, always applies)."""
    current = (await tx.conn.execute(select(table.c.revision).where(table.c[key] == key_value))).first()
    if current is not None and revision and current.revision >= revision:
        return
    await tx.conn.execute(delete(table).where(table.c[key] == key_value))
    await insert_ignore(tx.conn, table, {key: key_value, "revision": revision,
                                         "updated_at": utcnow(), **values})


async def replicate_item(tx: Tx, item: erp_pb2.Item, revision: int = 0) -> None:
    await _replicate(tx, items, "sku", item.sku, revision, {
        "weight_grams": item.weight_grams, "currency_code": item.unit_price.currency_code,
        "unit_price_minor": item.unit_price.amount_minor})


async def replicate_customer(tx: Tx, c: erp_pb2.Customer, revision: int = 0) -> None:
    await _replicate(tx, customers, "customer_id", c.customer_id, revision, {
        "name": c.name, "country_code": c.ship_to.country_code, "currency_code": c.currency_code,
        "credit_limit_minor": c.credit_limit.amount_minor, "blocked": c.blocked})
