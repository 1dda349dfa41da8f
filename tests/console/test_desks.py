"""The supply-chain and operations desks, on a mesh whose warehouse is worked by handhelds
(the WMS autopilot off: the tests pick, pack and ship, as tests/e2e/test_exceptions.py does), so
that a short pick happens exactly where a test says. A planner sets a customer's exception policy
to hold, a pick comes up short, and the planner resolves it from the work list with a note; the
order then goes on to shipped and invoiced. And each role is refused what it may not do: not
shown in its pages, and 403 from the server when the form is posted anyway."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from crossdock.ordertoship.v1 import order_to_ship_pb2 as ots
from crossdock.wms.v1 import wms_pb2
from gateway import users
from tests.e2e.test_exceptions import HANDHELDS, pack, pick, ship, wait_fulfilment

from .conftest import Console, accessible, clean, console_for, run, shot, sign_in, visit, wait_for


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    yield from console_for(tmp_path_factory, HANDHELDS)


def submit(console: Console, world, **lines: int) -> str:
    async def go() -> str:
        stubs = console.stubs()
        try:
            return (await stubs.ots.SubmitOrder(world.order(lines, channel="webshop"))).order.order_id
        finally:
            await stubs.close()
    return run(go())


def handheld(console: Console, step, order_id: str, **kw) -> None:
    """A warehouse handheld's step (pick, pack, ship from tests/e2e/test_exceptions.py)."""
    async def go() -> None:
        stubs = console.stubs()
        try:
            await step(stubs, order_id, **kw)
        finally:
            await stubs.close()
    run(go())


def get_order(console: Console, order_id: str) -> ots.Order:
    async def go() -> ots.Order:
        stubs = console.stubs()
        try:
            return (await stubs.ots.GetOrder(ots.GetOrderRequest(order_id=order_id))).order
        finally:
            await stubs.close()
    return run(go())


def status(console: Console, order_id: str) -> str:
    return ots.OrderStatus.Name(get_order(console, order_id).status).removeprefix("ORDER_STATUS_")


def held_short_pick(console: Console, world, a: str, b: str) -> str:
    """An order of 3 A and 1 B whose pick finds only 2 A: held (the customer's policy) for a person."""
    order_id = submit(console, world, **{a: 3, b: 1})
    handheld(console, pick, order_id, **{a: 2, b: 1})
    wait_for(lambda: status(console, order_id) == "ON_HOLD", timeout=30, what=f"{order_id} held")
    return order_id


def test_a_planner_resolves_a_short_pick_from_the_work_list_and_the_order_goes_on_to_invoiced(console, page):
    world = console.world
    a, b = world.skus[0], world.skus[1]
    sign_in(page, console, "planner")
    # The planner asks for this customer's short picks to wait for a person.
    visit(page, console, "/console/exceptions", check_axe=False)
    policy = page.get_by_role("form", name="Change a policy")
    policy.get_by_label("For").select_option("customer")
    policy.get_by_label("Customer or channel id").fill(world.customer_id)
    policy.get_by_label("Policy").select_option("HOLD")
    policy.get_by_role("button", name="Save the policy").click()
    expect(page.get_by_role("status")).to_contain_text("exception policy is saved")
    expect(page.get_by_test_id("policies")).to_contain_text(world.customer_id)
    order_id = held_short_pick(console, world, a, b)

    # The work list, by kind and customer, has it; the planner opens it.
    visit(page, console, f"/console/exceptions?kind=SHORT_PICK&customer={world.customer_id}", "exceptions")
    row = page.get_by_test_id("exceptions").locator("tr", has_text=order_id)
    expect(row).to_contain_text("Short pick")
    expect(row).to_contain_text(f"{a} × 1")
    row.get_by_role("link").first.click()
    page.wait_for_url("**/console/exceptions/*")
    clean(page)
    accessible(page, "an exception")
    shot(page, "exception")
    # Only the actions that fit a short pick are offered.
    offered = page.get_by_role("group", name="Action").get_by_role("radio")
    expect(offered).to_have_count(3)
    assert page.get_by_label("Try the carriers again").count() == 0
    page.get_by_label("Cancel the missing quantities").check()
    page.get_by_label("Note (on the order's timeline)").fill("customer takes 2 A; the third is cancelled")
    page.get_by_role("button", name="Resolve").dblclick()
    page.wait_for_url(f"**/console/orders/{order_id}?notice=resolved")
    expect(page.get_by_role("status")).to_contain_text("the order continues")

    # The warehouse packs and ships what was picked; the page follows it without a reload.
    page.evaluate("window.__not_reloaded = true")
    handheld(console, pack, order_id)
    handheld(console, ship, order_id)
    expect(page.get_by_test_id("order-status")).to_have_text("Shipped and invoiced", timeout=60_000)
    assert page.evaluate("window.__not_reloaded") is True
    page.reload()
    resolved = page.get_by_test_id("timeline").locator("tr", has_text="Exception resolved")
    expect(resolved).to_have_count(1)  # one decision, whatever the clicks
    expect(resolved).to_contain_text("Sam Planner")
    expect(resolved).to_contain_text("customer takes 2 A; the third is cancelled")
    expect(page.get_by_test_id("shipments")).to_contain_text(f"{a} × 2")
    clean(page)
    order = get_order(console, order_id)
    assert [(c.sku, c.quantity) for c in order.cancelled_lines] == [(a, 1)]
    # Not open any more: the work list no longer has it.
    visit(page, console, f"/console/exceptions?kind=SHORT_PICK&customer={world.customer_id}", check_axe=False)
    assert order_id not in page.content()


# ---- each role refused what it may not do ----

@pytest.fixture(scope="module")
def open_exception(console) -> str:
    """An open short pick of the other customer's, on hold, for the pages that show one."""
    world = console.other

    async def hold() -> None:
        stubs = console.stubs()
        try:
            await stubs.ots.SetExceptionPolicy(ots.SetExceptionPolicyRequest(
                customer_id=world.customer_id, policy=ots.EXCEPTION_POLICY_HOLD))
        finally:
            await stubs.close()
    run(hold())
    order_id = held_short_pick(console, world, world.skus[0], world.skus[1])

    async def exception_id() -> str:
        stubs = console.stubs()
        try:
            (e,) = (await stubs.ots.ListExceptions(ots.ListExceptionsRequest(
                order_id=order_id, status=ots.EXCEPTION_STATUS_OPEN))).exceptions
            return e.exception_id
        finally:
            await stubs.close()
    return run(exception_id())


ORDER = "ORD-REFUSAL"  # any id: the permission is checked before the order is looked up
# Every state-changing route of the console and the permission it needs (gateway/users.py).
POSTS = {
    f"/console/orders/{ORDER}/cancel": "orders.cancel",
    f"/console/orders/{ORDER}/return": "returns.create",
    "/console/exceptions/EXC-REFUSAL/resolve": "exceptions.resolve",
    "/console/exceptions/resolve-many": "exceptions.resolve",
    "/console/exceptions/policies": "policies.change",
    "/console/dead-letters/1/replay": "deadletters.act",
    "/console/dead-letters/1/discard": "deadletters.act",
    "/console/dead-letters/replay-matching": "deadletters.act",
    "/console/inventory/reconcile": "inventory.reconcile",
    "/console/inventory/reorder-points": "replenishment.change",
}
PAGES = {"/console/exceptions": "exceptions.view", "/console/dead-letters": "deadletters.view",
         "/console/dead-letters/1": "deadletters.view", "/console/inventory": "inventory.view",
         "/console/health": "health.view", "/console/audit": "audit.view"}
NAV = {"Exceptions": "exceptions.view", "Dead letters": "deadletters.view", "Inventory": "inventory.view",
       "Flow health": "health.view", "Audit log": "audit.view"}
# What each permission shows, and where: (permission, page, the page's own permission, control).
CONTROLS = [
    ("orders.cancel", "order", "orders.view", "link:Cancel this order…"),
    ("exceptions.resolve", "exception", "exceptions.view", "button:Resolve"),
    ("exceptions.resolve", "/console/exceptions", "exceptions.view", "button:Resolve them"),
    ("policies.change", "/console/exceptions", "exceptions.view", "button:Save the policy"),
    ("inventory.reconcile", "/console/inventory", "inventory.view", "button:Run a reconciliation now"),
    ("replenishment.change", "/console/inventory", "inventory.view", "button:Save the reorder point"),
]


@pytest.mark.parametrize("role,who", [("customer-service", "agent"), ("supply-chain", "planner"),
                                      ("operations", "operator"), ("admin", "admin")])
def test_each_role_is_refused_what_it_may_not_do_in_the_page_and_on_the_server(console, page, open_exception,
                                                                               role, who):
    def may(permission: str) -> bool:
        return users.may(role, "", permission)

    order_id = submit(console, console.other, **{console.other.skus[2]: 1})  # allocated: cancellable
    handheld(console, wait_fulfilment, order_id, status=wms_pb2.FULFILMENT_STATUS_ALLOCATED)
    sign_in(page, console, who)
    nav = page.get_by_role("navigation", name="Views")
    for title, permission in NAV.items():
        assert (title in nav.inner_text()) == may(permission), (role, title)
    own_pages = {f"/console/orders/{order_id}/cancel": "orders.cancel",
                 f"/console/orders/{order_id}/return": "returns.create",
                 f"/console/exceptions/{open_exception}": "exceptions.view"}
    for path, permission in {**PAGES, **own_pages}.items():
        r = visit(page, console, path, check_axe=False)
        allowed = (200, 404) if path == "/console/dead-letters/1" else (200,)  # no such dead letter here
        assert r.status in (allowed if may(permission) else (403,)), (role, path, r.status)
        if r.status == 403:
            expect(page.get_by_test_id("error-message")).to_contain_text(users.ROLE_TITLES[role])
    # A control is in the page exactly when the role may use it.
    pages = {"order": f"/console/orders/{order_id}", "exception": f"/console/exceptions/{open_exception}"}
    for permission, where, page_permission, control in CONTROLS:
        if not may(page_permission):
            continue  # the page itself is refused (above)
        visit(page, console, pages.get(where, where), check_axe=False)
        kind, _, name = control.partition(":")
        found = page.get_by_role(kind, name=name, exact=True).count()
        assert bool(found) == may(permission), (role, permission, where, found)
    # Posted anyway, with the session's own CSRF token: refused by the server.
    csrf = page.locator("input[name=csrf_token]").first.get_attribute("value")
    for path, permission in POSTS.items():
        if may(permission):
            continue  # not carried out here: the other tests do these actions
        r = page.request.post(f"{console.url}{path}", form={
            "csrf_token": csrf, "idempotency_key": f"refusal-{role}", "reason": "refused", "action": "RETRY",
            "scope": "default", "policy": "HOLD", "sku": "X", "warehouse": "Y",
            "point": "1", "quantity": "1"})
        assert r.status == 403, (role, path, r.status)
        assert "cannot" in r.text() and users.ROLE_TITLES[role] in r.text(), (role, path)
    assert status(console, order_id) == "ALLOCATED"  # nothing refused was carried out
    clean(page)
