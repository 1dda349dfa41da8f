"""Master data on Tryton: customers are ``party.party`` (code = customer id, an address,
``credit_limit_amount``, ``active`` = not blocked; open balance = ``receivable``, open
orders = ``credit_amount`` - ``receivable``), items are ``product.product`` (code = SKU)
of a ``product.template`` (name, ``list_price``, the crossdock_outbox module's unit code
and weight). Writes go to Tryton; their ``erp.*.upserted`` events come from Tryton's
change feed (``feed.py``), like the changes Tryton's own users make."""

from __future__ import annotations

from crossdock.common.v1.common_pb2 import Address, Money
from crossdock.erp.v1 import erp_pb2
from services.mesh.errors import FailedPrecondition, InvalidArgument, NotFound
from services.mesh.paging import decode_token, encode_token, page_size

from .. import contract, domain
from .base import TrytonErp, refusal_as_precondition, to_decimal, to_minor

PARTY_FIELDS = ["code", "name", "active", "credit_limit_amount", "credit_amount", "receivable", "addresses"]
ADDRESS_FIELDS = ["party", "party_name", "street", "city", "postal_code", "country"]


async def customers_pb(erp: TrytonErp, parties: list[dict]) -> list[erp_pb2.Customer]:
    currency = await erp.currency()
    address_ids = [p["addresses"][0] for p in parties if p["addresses"]]
    addresses = {
        a["party"]: a for a in await erp.rpc.model("party.address", "read", address_ids, ADDRESS_FIELDS)
    }
    countries = {
        c["id"]: c["code"]
        for c in await erp.rpc.model(
            "country.country",
            "read",
            sorted({a["country"] for a in addresses.values() if a["country"]}),
            ["code"],
        )
    }
    out = []
    for p in parties:
        a = addresses.get(p["id"], {})

        def money(minor: int) -> Money:
            return Money(currency_code=currency, amount_minor=minor)

        balance, credit = to_minor(p["receivable"]), to_minor(p["credit_amount"])
        out.append(
            erp_pb2.Customer(
                customer_id=p["code"],
                name=p["name"],
                currency_code=currency,
                credit_limit=money(to_minor(p["credit_limit_amount"])),
                open_balance=money(balance),
                open_orders=money(max(credit - balance, 0)),
                ship_to=Address(
                    name=a.get("party_name") or "",
                    line1=(a.get("street") or "").split("\n")[0],
                    city=a.get("city") or "",
                    postal_code=a.get("postal_code") or "",
                    country_code=countries.get(a.get("country"), ""),
                ),
                blocked=not p["active"],
            )
        )
    return out


async def read_customer(erp: TrytonErp, party_id: int) -> erp_pb2.Customer:
    (party,) = await erp.rpc.model("party.party", "read", [party_id], PARTY_FIELDS)
    return (await customers_pb(erp, [party]))[0]


def credit_of(c: erp_pb2.Customer) -> domain.Credit:
    return domain.Credit(
        c.currency_code,
        c.credit_limit.amount_minor,
        c.open_balance.amount_minor,
        c.open_orders.amount_minor,
        c.blocked,
    )


TEMPLATE_FIELDS = ["name", "list_price", "crossdock_uom", "crossdock_weight_grams", "active"]


async def items_pb(erp: TrytonErp, products: list[dict]) -> list[erp_pb2.Item]:
    currency = await erp.currency()
    templates = {
        t["id"]: t
        for t in await erp.rpc.model(
            "product.template", "read", sorted({p["template"] for p in products}), TEMPLATE_FIELDS
        )
    }
    out = []
    for p in products:
        t = templates[p["template"]]
        out.append(
            erp_pb2.Item(
                sku=p["code"],
                description="" if t["name"] == p["code"] else t["name"],
                uom=t["crossdock_uom"] or "EA",
                unit_price=Money(currency_code=currency, amount_minor=to_minor(t["list_price"])),
                weight_grams=t["crossdock_weight_grams"] or 0,
                active=bool(p["active"] and t["active"]),
            )
        )
    return out


async def read_items(erp: TrytonErp, product_ids: list[int]) -> list[erp_pb2.Item]:
    products = await erp.rpc.model("product.product", "read", product_ids, ["code", "template", "active"])
    return await items_pb(erp, products)


def page(requested: int, token: str, arity: int = 1) -> tuple[int, list]:
    """The page size and the key after which it starts (as services/mesh/paging.py)."""
    problems, size, after = [], 0, []
    try:
        size = page_size(requested)
    except ValueError as exc:
        problems.append(("page_size", str(exc)))
    if token:
        try:
            after = decode_token(token, arity)
        except ValueError as exc:
            problems.append(("page_token", str(exc)))
    if problems:
        raise InvalidArgument(problems)
    return size, after


class TrytonMasterData:
    def __init__(self, erp: TrytonErp) -> None:
        self.erp = erp

    @refusal_as_precondition
    async def upsert_customer(self, c: erp_pb2.Customer) -> erp_pb2.Customer:
        contract.validate_customer(c)
        erp, rpc = self.erp, self.erp.rpc
        if c.currency_code != await erp.currency():
            raise FailedPrecondition(
                f"Tryton's company currency is {await erp.currency()}; customer "
                f"{c.customer_id!r} is in {c.currency_code}",
                reason="CURRENCY_NOT_SUPPORTED",
                subject=f"customers/{c.customer_id}",
            )
        country = None
        if code := c.ship_to.country_code.upper():
            found = await rpc.model("country.country", "search", [("code", "=", code)], 0, 1, None)
            if not found:
                raise InvalidArgument([("customer.ship_to.country_code", f"unknown country {code}")])
            country = found[0]
        address = {
            "party_name": c.ship_to.name or None,
            "street": c.ship_to.line1 or None,
            "city": c.ship_to.city or None,
            "postal_code": c.ship_to.postal_code or None,
            "country": country,
        }
        party_id = await erp.party(c.customer_id)
        if party_id is None:
            (party_id,) = await rpc.model(
                "party.party",
                "create",
                [
                    {
                        "code": c.customer_id,
                        "name": c.name or c.customer_id,
                        "active": not c.blocked,
                        "addresses": [["create", [address]]],
                    }
                ],
            )
            await erp.remember("customer", c.customer_id, party_id)
        else:
            (party,) = await rpc.model("party.party", "read", [party_id], ["name", "active", "addresses"])
            if party["name"] != (c.name or c.customer_id) or party["active"] == c.blocked:
                await rpc.model(
                    "party.party",
                    "write",
                    [party_id],
                    {"name": c.name or c.customer_id, "active": not c.blocked},
                )
            if party["addresses"]:
                (old,) = await rpc.model("party.address", "read", party["addresses"][:1], list(address))
                if any(old.get(k) != v for k, v in address.items()):
                    await rpc.model("party.address", "write", party["addresses"][:1], address)
            else:
                await rpc.model("party.party", "write", [party_id], {"addresses": [["create", [address]]]})
        limit = to_decimal(c.credit_limit.amount_minor)
        (now,) = await rpc.model("party.party", "read", [party_id], ["credit_limit_amount"])
        if now["credit_limit_amount"] != limit:
            # Only the credit-limit group may write a limit: its own user does.
            await erp.credit_rpc.model("party.party", "write", [party_id], {"credit_limit_amount": limit})
        return await read_customer(erp, party_id)

    async def get_customer(self, customer_id: str) -> erp_pb2.Customer:
        contract.require(customer_id=customer_id)
        if (party_id := await self.erp.party(customer_id)) is None:
            raise NotFound("customer", customer_id)
        return await read_customer(self.erp, party_id)

    async def list_customers(self, page_size: int, page_token: str):
        size, key = page(page_size, page_token)
        after = str(key[0]) if key else ""
        parties = await self.erp.rpc.search_read(
            "party.party",
            [
                ("code", ">", after),
                ("code", "!=", None),
                ("active", "in", [True, False]),
                ("id", "!=", (await self.erp.fixed())["company"]),
            ],
            PARTY_FIELDS,
            limit=size + 1,
            order=[("code", "ASC")],
        )
        parties = [p for p in parties if p["code"]]
        more = len(parties) > size
        found = await customers_pb(self.erp, parties[:size])
        return found, encode_token([found[-1].customer_id]) if more and found else ""

    async def check_credit(self, customer_id: str, amount: Money) -> erp_pb2.CheckCreditResponse:
        contract.validate_credit_request(customer_id, amount)
        customer = await self.get_customer(customer_id)
        if amount.currency_code != customer.currency_code:
            raise InvalidArgument(
                [("amount.currency_code", f"must be the customer's currency {customer.currency_code}")]
            )
        # Advisory (a lookup): the binding check is Tryton's own, when it confirms the sale.
        return contract.credit_response(credit_of(customer), amount.amount_minor)

    @refusal_as_precondition
    async def upsert_item(self, i: erp_pb2.Item) -> erp_pb2.Item:
        contract.validate_item(i)
        erp, rpc = self.erp, self.erp.rpc
        if i.unit_price.currency_code != await erp.currency():
            raise InvalidArgument(
                [
                    (
                        "item.unit_price.currency_code",
                        f"must be Tryton's company currency {await erp.currency()}",
                    )
                ]
            )
        fixed = await erp.fixed()
        template = {
            "name": i.description or i.sku,
            "list_price": to_decimal(i.unit_price.amount_minor),
            "crossdock_uom": i.uom,
            "crossdock_weight_grams": i.weight_grams,
            "active": i.active,
        }
        product_id = await erp.product(i.sku)
        if product_id is None:
            unit = fixed["unit"]
            await rpc.model(
                "product.template",
                "create",
                [
                    {
                        **template,
                        "code": i.sku,
                        "type": "goods",
                        "default_uom": unit,
                        "sale_uom": unit,
                        "purchase_uom": unit,
                        "salable": True,
                        "purchasable": True,
                        "account_category": fixed["category"],
                        "products": [["create", [{}]]],
                    }
                ],
            )
            product_id = await erp.product(i.sku)
            await erp.remember("item", i.sku, product_id)
        else:
            (product,) = await rpc.model("product.product", "read", [product_id], ["template", "active"])
            (old,) = await rpc.model("product.template", "read", [product["template"]], list(template))
            if any(old.get(k) != v for k, v in template.items()):
                await rpc.model("product.template", "write", [product["template"]], template)
            if product["active"] != i.active:
                await rpc.model("product.product", "write", [product_id], {"active": i.active})
        return (await read_items(erp, [product_id]))[0]

    async def get_item(self, sku: str) -> erp_pb2.Item:
        contract.require(sku=sku)
        if (product_id := await self.erp.product(sku)) is None:
            raise NotFound("item", sku)
        return (await read_items(self.erp, [product_id]))[0]

    async def batch_get_items(self, skus: list[str]) -> list[erp_pb2.Item]:
        products = await self.erp.rpc.search_read(
            "product.product", [("code", "in", list(set(skus)))], ["code", "template", "active"]
        )
        found = {i.sku: i for i in await items_pb(self.erp, products)} if products else {}
        return [found[sku] for sku in skus if sku in found]

    async def list_items(self, page_size: int, page_token: str):
        size, key = page(page_size, page_token)
        after = str(key[0]) if key else ""
        products = await self.erp.rpc.search_read(
            "product.product",
            [("code", ">", after), ("active", "in", [True, False])],
            ["code", "template", "active"],
            limit=size + 1,
            order=[("code", "ASC")],
        )
        more = len(products) > size
        found = await items_pb(self.erp, products[:size]) if products else []
        return found, encode_token([found[-1].sku]) if more and found else ""
