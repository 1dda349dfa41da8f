"""First start of a Tryton database for Crossdock, idempotent: run as
``python -m services.erp.tryton.setup CONFIG DATABASE`` (in-process, as Tryton's admin,
through proteus) before the server takes requests.

It makes what a sale, a shipment and an invoice need and Tryton does not ship: the
currencies, the company (with its party) and the user's preferences, the minimal
chart of accounts and its default accounts, a fiscal year with a strict move sequence,
invoice sequences and monthly periods (a new one whenever today has none), a product
category that carries the revenue and expense accounts, the ISO countries, and the
two integration users: ``crossdock`` (posts sales, shipments, invoices, stock; NOT an
administrator and NOT in the credit-limit group, so a credit limit is a hard
CreditLimitError for it rather than a skippable warning) and ``crossdock-credit``
(maintains customers' credit limits, which only the credit-limit group may write).
Each step looks for what it makes first, so a second run changes nothing.
"""

from __future__ import annotations

import datetime
import sys
from decimal import Decimal

COMPANY = "Crossdock Distribution"
CURRENCIES = {"USD": ("U.S. Dollar", "$"), "EUR": ("Euro", "€"), "GBP": ("Pound Sterling", "£")}
CATEGORY = "Crossdock goods"
# ISO 3166-1 alpha-2 codes (Tryton ships none; its import script needs pycountry).
COUNTRIES = (
    "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS "
    "BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE "
    "EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM "
    "HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC "
    "LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA "
    "NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW "
    "SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO "
    "TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW"
).split()
MODULES = [
    "sale",
    "stock",
    "account_invoice",
    "sale_credit_limit",
    "account_credit_limit",
    "purchase",
    "stock_supply",
    "crossdock_outbox",
]
USERS = {
    # login: (name, groups by (module, xml id))
    "crossdock": (
        "Crossdock integration",
        [
            ("party", "group_party_admin"),
            ("product", "group_product_admin"),
            ("sale", "group_sale"),
            ("sale", "group_sale_admin"),
            ("stock", "group_stock"),
            ("stock", "group_stock_admin"),
            ("stock", "group_stock_force_assignment"),
            ("account", "group_account"),
            ("purchase", "group_purchase"),
            ("purchase_request", "group_purchase_request"),
            ("stock", "group_stock_cancellation"),
            ("account_product", "group_account_product_admin"),
        ],
    ),
    "crossdock-credit": (
        "Crossdock credit limits",
        [
            ("party", "group_party_admin"),
            ("account", "group_account"),
            ("account_credit_limit", "group_credit_limit"),
        ],
    ),
}


def setup(password: str, today: datetime.date | None = None) -> dict:
    """Everything above, inside the proteus configuration already set; what was made."""
    from dateutil.relativedelta import relativedelta
    from proteus import Model, Wizard
    from proteus.config import get_config
    from trytond.modules.account.tests.tools import create_chart, get_accounts
    from trytond.modules.account_invoice.tests.tools import set_fiscalyear_invoice_sequences
    from trytond.modules.company.tests.tools import create_company

    made: dict[str, int] = {}
    config = get_config()
    today = today or datetime.date.today()
    Currency = Model.get("currency.currency")
    for code, (name, symbol) in CURRENCIES.items():
        if not Currency.find([("code", "=", code)]):
            Currency(name=name, code=code, symbol=symbol, rounding=Decimal("0.01"), digits=2).save()
            made["currencies"] = made.get("currencies", 0) + 1
    Country = Model.get("country.country")
    have = {c.code for c in Country.find([])}
    missing = [c for c in COUNTRIES if c not in have]
    if missing:
        Country.save([Country(name=c, code=c) for c in missing])
        made["countries"] = len(missing)
    Company = Model.get("company.company")
    if not Company.find([]):
        Party = Model.get("party.party")
        party = Party(name=COMPANY)
        party.save()
        (usd,) = Currency.find([("code", "=", "USD")])
        create_company(party=party, currency=usd)
        made["company"] = 1
    User = Model.get("res.user")
    config._context = User.get_preferences(True, {})
    (company,) = Company.find([])
    Account = Model.get("account.account")
    if not Account.find([("company", "=", company.id)]):
        create_chart(company)
        made["chart"] = 1
    accounts = get_accounts(company)
    FiscalYear = Model.get("account.fiscalyear")
    if not FiscalYear.find(
        [("start_date", "<=", today), ("end_date", ">=", today), ("company", "=", company.id)]
    ):
        fiscal_year = _fiscal_year(Model, company, today, relativedelta)
        set_fiscalyear_invoice_sequences(fiscal_year)
        fiscal_year.save()
        fiscal_year.click("create_period")
        made["fiscal_year"] = 1
    Category = Model.get("product.category")
    if not Category.find([("name", "=", CATEGORY)]):
        category = Category(name=CATEGORY, accounting=True)
        category.account_revenue = accounts["revenue"]
        category.account_expense = accounts["expense"]
        category.save()
        made["category"] = 1
    Group = Model.get("res.group")
    ModelData = Model.get("ir.model.data")
    for login, (name, groups) in USERS.items():
        found = User.find([("login", "=", login)])
        user = found[0] if found else User(name=name, login=login)
        user.password = password  # the secret may have been rotated
        have = {g.id for g in user.groups}
        for module, xml_id in groups:
            if (group_id := ModelData.get_id(module, xml_id, config.context)) not in have:
                user.groups.append(Group(group_id))
        if not found:
            user.companies.append(Company(company.id))
            user.company = Company(company.id)
            made["users"] = made.get("users", 0) + 1
        user.save()
    _ = Wizard  # the wizards run inside the test tools above
    return made


def _fiscal_year(Model, company, today, relativedelta):
    """The calendar year of ``today``, with a strict move sequence."""
    FiscalYear = Model.get("account.fiscalyear")
    Sequence = Model.get("ir.sequence.strict")
    SequenceType = Model.get("ir.sequence.type")
    (sequence_type,) = SequenceType.find([("name", "=", "Account Move")], limit=1)
    move_sequence = Sequence(name=str(today.year), sequence_type=sequence_type, company=company)
    move_sequence.save()
    fiscal_year = FiscalYear(
        name=str(today.year),
        company=company,
        move_sequence=move_sequence,
        start_date=today.replace(month=1, day=1),
        end_date=today.replace(month=12, day=31),
    )
    return fiscal_year


def main(argv: list[str]) -> None:
    import os

    from proteus import config

    conf, database = argv[1], argv[2]
    config.set_trytond(database=database, config_file=conf)
    made = setup(os.environ.get("CROSSDOCK_ERP_TRYTON_PASSWORD", "crossdock-erp"))
    print(
        f"tryton setup of {database}: " + (", ".join(f"{v} {k}" for k, v in made.items()) or "nothing to do")
    )


if __name__ == "__main__":
    main(sys.argv)
