"""What every noun of the Tryton adapter shares: the JSON-RPC sessions, the id map,
Tryton's fixed records (units, locations, the product category), warehouses made on
first sight, money conversion, and the translation of Tryton's errors into the
mesh's (a UserError or an unaccepted UserWarning is permanent: dead-lettered with
Tryton's message, replayable once fixed; Tryton away or busy is retried)."""

from __future__ import annotations

import asyncio
import functools
from decimal import ROUND_HALF_UP, Decimal

import structlog
from sqlalchemy import select

from services.mesh import faults
from services.mesh.bus import PermanentError
from services.mesh.config import Settings
from services.mesh.errors import FailedPrecondition
from services.mesh.store import Store, Tx, insert_ignore, utcnow

from .rpc import Tryton, TrytonUserError, TrytonUserWarning
from .store import cursors, id_map

log = structlog.get_logger()

CENT = Decimal("0.01")


def to_decimal(minor: int) -> Decimal:
    return (Decimal(minor) / 100).quantize(CENT)


def to_minor(amount: Decimal | float | int | None) -> int:
    if amount is None:
        return 0
    return int((Decimal(str(amount)) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def committed_in_tryton() -> None:
    """Tryton has committed a posting and the message is not acked yet: the window an
    effectively-once posting must survive (a crash point for the fault tests)."""
    faults.crash_point("tryton_committed_before_ack")


def permanent_on_refusal(func):
    """A message handler: Tryton's refusals become permanent errors with its message."""

    @functools.wraps(func)
    async def wrapper(*args, **kwargs):
        try:
            return await func(*args, **kwargs)
        except TrytonUserWarning as w:
            raise PermanentError(f"Tryton asks to confirm ({w.name}): {w}; not accepted") from None
        except TrytonUserError as e:
            raise PermanentError(f"Tryton refused: {e}") from None

    return wrapper


def refusal_as_precondition(func):
    """An RPC: Tryton's refusals become FAILED_PRECONDITION with its message."""

    @functools.wraps(func)
    async def wrapper(*args, **kwargs):
        try:
            return await func(*args, **kwargs)
        except (TrytonUserError, TrytonUserWarning) as e:
            raise FailedPrecondition(f"Tryton refused: {e}", reason="TRYTON_REFUSED") from None

    return wrapper


class TrytonErp:
    """The adapter's shared state: sessions, store, settings, Tryton's fixed ids."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        s = settings
        self.rpc = Tryton(
            s.erp_tryton_url,
            s.erp_tryton_database,
            s.erp_tryton_user,
            s.erp_tryton_password,
            max_concurrency=s.erp_tryton_max_concurrency,
        )
        self.credit_rpc = Tryton(
            s.erp_tryton_url,
            s.erp_tryton_database,
            s.erp_tryton_credit_user,
            s.erp_tryton_password,
            max_concurrency=1,
        )
        self._fixed: dict | None = None
        self._fixed_lock = asyncio.Lock()
        self._warehouses: dict[str, dict] = {}
        self._ids: dict[tuple[str, str], int] = {}
        self._warehouse_lock = asyncio.Lock()

    # ---- Tryton's fixed records ----

    async def fixed(self) -> dict:
        async with self._fixed_lock:
            if self._fixed is None:
                rpc = self.rpc
                locations = {
                    r["type"]: r["id"]
                    for r in await rpc.search_read(
                        "stock.location", [("type", "in", ["supplier", "customer", "lost_found"])], ["type"]
                    )
                }
                (unit,) = await rpc.search_read("product.uom", [("symbol", "=", "u")], ["id"], limit=1)
                (category,) = await rpc.search_read(
                    "product.category", [("accounting", "=", True)], ["id"], limit=1
                )
                company = rpc.context["company"]
                (comp,) = await rpc.model("company.company", "read", [company], ["currency"])
                (currency,) = await rpc.model("currency.currency", "read", [comp["currency"]], ["code"])
                # Sales book no stock (WMS movements do), but Tryton wants a warehouse on
                # every line: its own default one.
                (default_wh,) = await rpc.search_read(
                    "stock.location", [("type", "=", "warehouse")], ["id"], limit=1, order=[("id", "ASC")]
                )
                self._fixed = {
                    **locations,
                    "unit": unit["id"],
                    "category": category["id"],
                    "sale_warehouse": default_wh["id"],
                    "company": company,
                    "currency": currency["code"],
                    "currency_id": comp["currency"],
                }
            return self._fixed

    async def currency(self) -> str:
        return (await self.fixed())["currency"]

    # ---- the id map ----

    async def mapped(self, kind: str, canonical_id: str) -> int | None:
        if (known := self._ids.get((kind, canonical_id))) is not None:
            return known
        async with self.store.read() as conn:
            known = await conn.scalar(
                select(id_map.c.tryton_id).where(id_map.c.kind == kind, id_map.c.canonical_id == canonical_id)
            )
        if known is not None:
            self._ids[(kind, canonical_id)] = known
        return known

    async def remember(self, kind: str, canonical_id: str, tryton_id: int, tx: Tx | None = None) -> None:
        """Record a Tryton id: in ``tx`` (a consumer's transaction: never a second write
        transaction inside it, the store has one writer) or in a transaction of its own."""
        self._ids[(kind, canonical_id)] = tryton_id
        row = {
            "kind": kind,
            "canonical_id": canonical_id,
            "tryton_id": tryton_id,
            "note": "",
            "updated_at": utcnow(),
        }
        if tx is not None:
            await insert_ignore(tx.conn, id_map, row)
            return
        async with self.store.transaction() as own:
            await insert_ignore(own.conn, id_map, row)

    async def lookup(self, kind: str, canonical_id: str, model: str, domain: list) -> int | None:
        """The Tryton id of a canonical record: the id map, else a search by business key
        (kept in memory; written to the id map by the use case that made the record)."""
        if (known := await self.mapped(kind, canonical_id)) is not None:
            return known
        found = await self.rpc.model(model, "search", domain, 0, 1, None)
        if found:
            self._ids[(kind, canonical_id)] = found[0]
            return found[0]
        return None

    async def party(self, customer_id: str) -> int | None:
        return await self.lookup(
            "customer",
            customer_id,
            "party.party",
            [("code", "=", customer_id), ("active", "in", [True, False])],
        )

    async def product(self, sku: str) -> int | None:
        return await self.lookup(
            "item", sku, "product.product", [("code", "=", sku), ("active", "in", [True, False])]
        )

    async def products(self, skus: list[str]) -> dict[str, int]:
        out = {}
        for sku in dict.fromkeys(skus):
            if (pid := await self.product(sku)) is not None:
                out[sku] = pid
        return out

    # ---- warehouses (made on first sight: WMS owns them, Tryton books their stock) ----

    async def warehouse(self, warehouse_id: str) -> dict:
        """{"id", "storage"} of the Tryton warehouse whose code is the canonical id."""
        if warehouse_id in self._warehouses:
            return self._warehouses[warehouse_id]
        async with self._warehouse_lock:
            if warehouse_id in self._warehouses:
                return self._warehouses[warehouse_id]
            found = await self.rpc.search_read(
                "stock.location",
                [("type", "=", "warehouse"), ("code", "=", warehouse_id)],
                ["storage_location"],
                limit=1,
            )
            if not found:
                (storage,) = await self.rpc.model(
                    "stock.location", "create", [{"name": f"{warehouse_id} storage", "type": "storage"}]
                )
                (wid,) = await self.rpc.model(
                    "stock.location",
                    "create",
                    [
                        {
                            "name": warehouse_id,
                            "code": warehouse_id,
                            "type": "warehouse",
                            "storage_location": storage,
                            "input_location": storage,
                            "output_location": storage,
                            "picking_location": storage,
                            "lost_found_location": (await self.fixed())["lost_found"],
                        }
                    ],
                )
                await self.rpc.model("stock.location", "write", [storage], {"parent": wid})
                found = [{"id": wid, "storage_location": storage}]
                log.info("tryton.warehouse_created", warehouse_id=warehouse_id, tryton_id=wid)
            wh = {"id": found[0]["id"], "storage": found[0]["storage_location"]}
            self._warehouses[warehouse_id] = wh
            return wh

    async def warehouse_codes(self) -> dict[int, str]:
        rows = await self.rpc.search_read(
            "stock.location", [("type", "=", "warehouse"), ("code", "!=", None)], ["code"]
        )
        return {r["id"]: r["code"] for r in rows}

    # ---- cursors ----

    async def cursor(self, name: str, conn=None) -> int:
        query = select(cursors.c.position).where(cursors.c.name == name)
        if conn is not None:
            return int(await conn.scalar(query) or 0)
        async with self.store.read() as own:
            return int(await own.scalar(query) or 0)

    async def set_cursor(self, tx: Tx, name: str, position: int) -> None:
        from sqlalchemy import update

        if not await insert_ignore(
            tx.conn, cursors, {"name": name, "position": position, "updated_at": utcnow()}
        ):
            await tx.conn.execute(
                update(cursors).where(cursors.c.name == name).values(position=position, updated_at=utcnow())
            )

    async def close(self) -> None:
        await self.rpc.close()
        await self.credit_rpc.close()
