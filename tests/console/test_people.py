"""Through the console as each person would, on one mesh (its warehouse on autopilot): a
customer-service agent finds an order by id and by customer and reads its timeline to invoiced
while it updates live, and cancels a backordered order; an operator replays a dead letter of an
order after fixing its cause, it is handled once, and the order's page tells the replay (and a
discard, with its reason); drift made behind the mesh's back shows on the inventory page and is
repaired from it. And the guards: a customer-bound user sees nothing of another customer, a
form without its CSRF token is refused, hostile text is shown as text, a session expires, every
page passes axe-core and none shows a stack trace. The planner's desk and each role's refusals
are in test_desks.py (a mesh worked by handhelds)."""

from __future__ import annotations

import re
import sqlite3
import uuid

import pytest
from playwright.sync_api import expect

from crossdock.common.v1.common_pb2 import SkuQuantity
from crossdock.erp.v1 import erp_pb2
from crossdock.erp.v1 import messages_pb2 as erp_messages
from crossdock.ordertoship.v1 import order_to_ship_pb2 as ots
from crossdock.wms.v1 import wms_pb2
from tests.e2e.conftest import make_world
from tests.helpers import publish

from .conftest import Console, accessible, clean, console_for, run, shot, sign_in, visit, wait_for

XSS_NAME = '<script>alert("name")</script>"><img src=x onerror=alert(1)>'
XSS_NOTE = '"><img src=x onerror=alert(2)><script>alert(3)</script>'


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    yield from console_for(tmp_path_factory)


def submit(console: Console, world=None, qty: int = 1, **kw) -> str:
    world = world or console.world

    async def go() -> str:
        stubs = console.stubs()
        try:
            r = await stubs.ots.SubmitOrder(world.order({world.skus[0]: qty}, channel="webshop", **kw))
            return r.order.order_id
        finally:
            await stubs.close()
    return run(go())


def order_status(console: Console, order_id: str) -> str:
    async def go() -> str:
        stubs = console.stubs()
        try:
            o = (await stubs.ots.GetOrder(ots.GetOrderRequest(order_id=order_id))).order
            return ots.OrderStatus.Name(o.status).removeprefix("ORDER_STATUS_")
        finally:
            await stubs.close()
    return run(go())


def test_an_agent_finds_an_order_by_id_and_customer_and_reads_it_live_to_invoiced(console, page):
    async def rename() -> None:  # a hostile customer name, to be shown as text
        stubs = console.stubs()
        try:
            c = (await stubs.erp.GetCustomer(erp_pb2.GetCustomerRequest(
                customer_id=console.world.customer_id))).customer
            c.name = XSS_NAME
            await stubs.erp.UpsertCustomer(erp_pb2.UpsertCustomerRequest(customer=c))
        finally:
            await stubs.close()
    run(rename())
    sign_in(page, console, "agent")
    order_id = submit(console)
    # By id: straight to its page, which then follows the order without a reload.
    page.get_by_label("Order id").fill(order_id)
    page.get_by_role("button", name="Search").click()
    page.wait_for_url(f"**/console/orders/{order_id}")
    page.evaluate("window.__not_reloaded = true")
    expect(page.get_by_test_id("order-status")).to_have_text("Shipped and invoiced", timeout=60_000)
    assert page.evaluate("window.__not_reloaded") is True  # the status moved by server-sent events
    timeline = page.get_by_test_id("timeline")
    for step in ("Order received", "Credit approved", "Released to the warehouse", "Shipped", "Invoiced"):
        expect(timeline).to_contain_text(step)
    expect(page.get_by_test_id("customer")).to_contain_text(XSS_NAME)  # as text, not markup
    assert page.locator("img[src=x]").count() == 0
    page.reload()  # the rest of the page (shipments, invoices) as it is now
    expect(page.get_by_test_id("shipments")).to_contain_text("E2E-CARRIER")
    expect(page.get_by_test_id("shipments")).to_contain_text("INV-")
    clean(page)
    accessible(page, "order page")
    shot(page, "order")
    # By customer: the listing has it.
    visit(page, console, f"/console/orders?customer={console.world.customer_id}", "orders")
    expect(page.get_by_test_id("orders")).to_contain_text(order_id)
    # By SKU and channel too.
    visit(page, console, f"/console/orders?sku={console.world.skus[0]}&channel=webshop", check_axe=False)
    expect(page.get_by_test_id("orders")).to_contain_text(order_id)
    # The agent's navigation shows only orders; operations pages are refused on the server too.
    expect(page.get_by_role("navigation", name="Views")).not_to_contain_text("Dead letters")
    for path in ("/console/dead-letters", "/console/inventory", "/console/exceptions", "/console/audit",
                 "/console/health"):
        r = visit(page, console, path, check_axe=False)
        assert r.status == 403, path
        expect(page.get_by_test_id("error-message")).to_contain_text("Customer service")
    csrf = page.locator("input[name=csrf_token]").first.get_attribute("value")
    r = page.request.post(f"{console.url}/console/inventory/reconcile", form={"csrf_token": csrf})
    assert r.status == 403


def test_an_agent_cancels_with_the_compensation_spelled_out_and_a_double_click_does_it_once(console, page):
    # An order that waits: far more than its warehouse holds, under the backorder policy (asked
    # for, not left to the service default), so it is backordered and still cancellable.
    order_id = submit(console, qty=console.world.stock * 10, shortage_policy=ots.SHORTAGE_POLICY_BACKORDER)
    wait_for(lambda: order_status(console, order_id) not in ("RECEIVED", "RELEASED"), timeout=30,
             what="the big order placed in its warehouse")
    assert order_status(console, order_id) == "BACKORDERED"
    sign_in(page, console, "agent")
    visit(page, console, f"/console/orders/{order_id}/cancel", "cancel")
    expect(page.get_by_test_id("compensation")).to_contain_text("backorder list")
    expect(page.get_by_test_id("compensation")).to_contain_text("releases the credit")
    page.get_by_label("Reason (shown on the timeline)").fill(XSS_NOTE)
    page.get_by_role("button", name="Cancel the order").dblclick()
    page.wait_for_url(f"**/console/orders/{order_id}**")
    expect(page.get_by_test_id("order-status")).to_have_text("Cancelled", timeout=30_000)
    expect(page.get_by_test_id("timeline")).to_contain_text("Casey Agent")
    expect(page.get_by_test_id("timeline")).to_contain_text(XSS_NOTE)
    assert page.locator("img[src=x]").count() == 0
    requested = page.get_by_test_id("timeline").locator("tr", has_text="Cancellation requested")
    assert requested.count() == 1  # one cancellation, whatever the clicks
    clean(page)


def test_a_customer_bound_user_sees_none_of_another_customers_data(console, page):
    own, foreign = submit(console), submit(console, console.other)
    sign_in(page, console, "tenant")
    visit(page, console, "/console/orders", "orders-tenant")
    listing = page.get_by_test_id("orders")
    expect(listing).to_contain_text(own)
    assert console.other.customer_id not in page.content() and foreign not in page.content()
    expect(page.get_by_role("navigation", name="Views")).to_have_text(re.compile(r"^\s*Orders\s*$"))
    # Another customer's order answers like a missing one, by its page and by the search.
    r = visit(page, console, f"/console/orders/{foreign}", check_axe=False)
    assert r.status == 404
    missing = visit(page, console, "/console/orders/ORD-DOESNOTEXIST", check_axe=False)
    assert missing.status == 404
    visit(page, console, f"/console/orders?order_id={foreign}", check_axe=False)
    expect(page.get_by_test_id("no-order")).to_be_visible()
    visit(page, console, f"/console/orders?customer={console.other.customer_id}", check_axe=False)
    assert foreign not in page.content()
    for path in (f"/console/orders/{foreign}/live", f"/console/orders/{foreign}/cancel",
                 "/console/exceptions"):
        r = page.request.get(f"{console.url}{path}")
        assert r.status in (403, 404), path
        # The id asked for may be echoed (as for a missing order); nothing of the order is.
        for secret in (console.other.customer_id, console.other.warehouse_id, *console.other.skus):
            assert secret not in r.text(), (path, secret)


def test_a_form_without_its_csrf_token_is_refused(console, page):
    order_id = submit(console)
    sign_in(page, console, "agent")
    r = page.request.post(f"{console.url}/console/orders/{order_id}/cancel",
                          form={"idempotency_key": uuid.uuid4().hex, "reason": "no token"})
    assert r.status == 403 and "security token" in r.text()
    assert order_status(console, order_id) not in ("CANCELLING", "CANCELLED")


def test_a_session_ends_after_its_idle_timeout(console, page):
    sign_in(page, console, "agent")
    visit(page, console, "/console/orders", check_axe=False)
    # Time passes behind the gateway's back: the session was last seen two hours ago.
    db = sqlite3.connect(console.mesh.data_dir / "gateway.db")
    with db:
        db.execute("UPDATE console_sessions SET last_seen_at = datetime('now', '-2 hours') "
                   "WHERE username = ?", (console.people["agent"].username,))
    db.close()
    page.goto(f"{console.url}/console/orders")
    page.wait_for_url("**/console/sign-in**")
    expect(page.get_by_role("status")).to_contain_text("period without activity")
    clean(page)
    accessible(page, "sign-in page")
    shot(page, "sign-in")


def _sales_order_status(console: Console, order_id: str, status: str) -> None:
    """A clerk changes the sales order in ERP behind the mesh's back (its store, directly)."""
    db = sqlite3.connect(console.mesh.data_dir / "erp.db")
    with db:
        changed = db.execute("UPDATE sales_orders SET status = ? WHERE order_id = ?",
                             (status, order_id)).rowcount
    db.close()
    assert changed == 1


def _invoices(console: Console, order_id: str) -> list[erp_pb2.Invoice]:
    async def go() -> list[erp_pb2.Invoice]:
        stubs = console.stubs()
        try:
            return list((await stubs.erp.ListInvoices(
                erp_pb2.ListInvoicesRequest(order_id=order_id))).invoices)
        finally:
            await stubs.close()
    return run(go())


async def _post_invoice_again(console: Console, order_id: str, shipment_id: str) -> None:
    """A stale posting of a shipment the order never had, as a confused relay would send it."""
    import nats

    nc = await nats.connect(console.mesh.nats.url)
    try:
        await publish(nc, "cmd.erp.invoice.post", erp_messages.PostInvoice(
            order_id=order_id, shipment_id=shipment_id), key=order_id, source="ordertoship")
    finally:
        await nc.close()


def _dead_letter_of(page, console: Console, order_id: str, reason: str):
    """Wait until ERP's consumer has given up on a message of the order (listed); its link."""
    def listed():
        page.goto(f"{console.url}/console/dead-letters?consumer=erp-commands&reason={reason}")
        return page.get_by_test_id("dead-letters").count() and order_id in page.content()
    wait_for(listed, timeout=60, what=f"the dead letter of {order_id} listed")
    clean(page)
    return page.get_by_test_id("dead-letters").locator("tr", has_text=order_id).get_by_role("link").first


def test_an_operator_replays_a_dead_letter_after_fixing_its_cause_and_the_order_tells_it(console, page):
    """An order waits for stock; meanwhile a clerk closes its sales order in ERP by mistake, so
    ERP refuses the shipment's invoice for good (a dead letter). The operator reads it, the
    sales order is put back, the replay is invoiced once, and the order's page tells the replay.
    A stale second posting is discarded, with a reason (required), and told there too."""
    async def new_world():
        stubs = console.stubs()
        try:
            return await make_world(stubs, stock=0, n_skus=1)
        finally:
            await stubs.close()
    world = run(new_world())
    order_id = submit(console, world, qty=2, shortage_policy=ots.SHORTAGE_POLICY_BACKORDER)
    wait_for(lambda: order_status(console, order_id) not in ("RECEIVED", "RELEASED"), timeout=30,
             what="the order placed in its warehouse")
    assert order_status(console, order_id) == "BACKORDERED"
    _sales_order_status(console, order_id, "CANCELLED")

    async def deliver() -> None:  # the stock arrives: the warehouse ships, ERP refuses the invoice
        stubs = console.stubs()
        try:
            await stubs.wms.ReceiveStock(wms_pb2.ReceiveStockRequest(
                receipt_id=f"R2-{world.suffix}", warehouse_id=world.warehouse_id,
                lines=[SkuQuantity(sku=world.skus[0], quantity=5)]))
        finally:
            await stubs.close()
    run(deliver())
    sign_in(page, console, "operator")
    link = _dead_letter_of(page, console, order_id, "cannot invoice")
    accessible(page, "dead letters")
    shot(page, "dead-letters")
    expect(page.get_by_test_id("dlq-groups")).to_contain_text("erp-commands")
    link.click()
    page.wait_for_url("**/console/dead-letters/*")
    clean(page)
    accessible(page, "a dead letter")
    shot(page, "dead-letter")
    expect(page.get_by_test_id("body")).to_contain_text(order_id)  # decoded from Protobuf
    expect(page.get_by_test_id("reason")).to_contain_text("CANCELLED")
    expect(page.get_by_test_id("owner")).to_contain_text(order_id)
    assert order_status(console, order_id) == "SHIPPED" and not _invoices(console, order_id)

    _sales_order_status(console, order_id, "ACCEPTED")  # the cause, fixed in ERP
    page.get_by_role("button", name="Replay").dblclick()
    page.wait_for_url("**/console/dead-letters?notice=replayed")
    assert order_id not in page.content()
    wait_for(lambda: order_status(console, order_id) == "INVOICED", timeout=30, what="the replay invoiced")
    # Handled once, whatever the clicks: one invoice for the one shipment.
    assert [i.shipment_id for i in _invoices(console, order_id)] == [f"SHP-{order_id}"]
    visit(page, console, f"/console/orders/{order_id}", check_axe=False)
    replayed = page.get_by_test_id("timeline").locator("tr", has_text="Message replayed by an operator")
    expect(replayed).to_have_count(1)
    expect(replayed).to_contain_text("Robin Operator")
    expect(replayed).to_contain_text("cmd.erp.invoice.post")

    # A stale second posting for a shipment that never was: discarded, with a reason.
    run(_post_invoice_again(console, order_id, f"SHP-{order_id}-9"))
    _dead_letter_of(page, console, order_id, "INVOICED").click()
    page.wait_for_url("**/console/dead-letters/*")
    discard_url = page.url + "/discard"
    reason = page.get_by_label("Why it must not be processed")
    assert reason.get_attribute("required") is not None
    csrf = page.locator("input[name=csrf_token]").first.get_attribute("value")
    empty = page.request.post(discard_url, form={"csrf_token": csrf, "idempotency_key": uuid.uuid4().hex,
                                                 "reason": "  "})
    assert empty.status == 422 and "Say why the message must not be processed" in empty.text()
    reason.fill("stale posting of a shipment the order never had")
    page.get_by_role("button", name="Discard").click()
    page.wait_for_url("**/console/dead-letters?notice=discarded")
    visit(page, console, f"/console/orders/{order_id}", check_axe=False)
    discarded = page.get_by_test_id("timeline").locator("tr", has_text="Message discarded by an operator")
    expect(discarded).to_contain_text("stale posting of a shipment the order never had")
    expect(discarded).to_contain_text("Robin Operator")
    assert [i.shipment_id for i in _invoices(console, order_id)] == [f"SHP-{order_id}"]
    visit(page, console, "/console/audit?transport=console", "audit")
    expect(page.get_by_test_id("audit")).to_contain_text("Robin Operator")


def test_drift_made_behind_the_meshs_back_shows_on_the_inventory_page_and_is_repaired_from_it(console, page):
    sku, warehouse = console.world.skus[2], console.world.warehouse_id
    db = sqlite3.connect(console.mesh.data_dir / "erp.db")
    with db:
        changed = db.execute("UPDATE ledger_positions SET on_hand = on_hand + 5 "
                             "WHERE sku = ? AND warehouse_id = ?", (sku, warehouse)).rowcount
    db.close()
    assert changed == 1
    sign_in(page, console, "operator")
    visit(page, console, f"/console/inventory?warehouse={warehouse}&sku={sku}", "inventory")
    row = page.get_by_test_id("stock").locator("tr.drift", has_text=sku)
    expect(row).to_contain_text("+5")
    page.get_by_label("Repair the drift found").check()
    page.get_by_role("button", name="Run a reconciliation now").click()
    expect(page.get_by_test_id("run-result")).to_contain_text("1 repaired")
    clean(page)
    visit(page, console, f"/console/inventory?warehouse={warehouse}&sku={sku}", check_axe=False)
    assert page.get_by_test_id("stock").locator("tr.drift").count() == 0


def test_flow_health_shows_every_service_serving(console, page):
    sign_in(page, console, "operator")
    visit(page, console, "/console/health", "health")
    expect(page.get_by_test_id("services")).to_contain_text("serving")
    assert "not answering" not in page.get_by_test_id("services").inner_text()


def test_every_page_passes_axe_core_and_none_shows_a_stack_trace(console, page):
    """axe-core (vendored) on each view as the person who uses it, in the states it is read in:
    no serious or critical violation. (The exception work list with open exceptions, an
    exception's page and a dead letter's page are checked where they happen: test_desks.py and
    the replay test above.)"""
    order_id = submit(console)
    wait_for(lambda: order_status(console, order_id) == "INVOICED", timeout=60, what="the order invoiced")
    page.goto(f"{console.url}/console/sign-in")
    page.get_by_label("Username").fill(console.people["admin"].username)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_be_visible()
    clean(page)
    accessible(page, "sign-in refused")
    sign_in(page, console, "admin")
    for path in ("/console/orders", f"/console/orders?customer={console.world.customer_id}&status=INVOICED",
                 f"/console/orders/{order_id}", f"/console/orders/{order_id}/return", "/console/exceptions",
                 "/console/exceptions?status=ALL", "/console/dead-letters", "/console/inventory?drift=1",
                 "/console/health", "/console/audit", "/console/orders/ORD-NO-SUCH-ORDER"):
        visit(page, console, path)
    # A return made here, and its page.
    visit(page, console, f"/console/orders/{order_id}/return", check_axe=False)
    page.get_by_label("Quantity").first.fill("1")
    page.get_by_role("button", name="Create the return").click()
    page.wait_for_url("**/console/returns/*")
    clean(page)
    accessible(page, "a return")
    shot(page, "return")
    # A refusal is a page too.
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, console, "agent")
    r = visit(page, console, "/console/audit")
    assert r.status == 403
