"""The console in a real browser: Playwright for Python driving Debian's chromium (the
Playwright browser download is not reachable here), against a real mesh (one per module),
one browser per session. Every page visited is checked for a stack trace and, where a test
asks, with axe-core (vendored, injected into the page): no serious or critical violation.
Screenshots go to CROSSDOCK_CONSOLE_SCREENSHOTS (default .data/console-screenshots)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from crossdock.admin.v1 import users_pb2 as upb
from crossdock.admin.v1 import users_pb2_grpc
from services.mesh import operator_token
from services.mesh.launcher import Mesh
from tests.e2e.conftest import FAST, Stubs, World, make_world
from tests.external_tools import missing

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
AXE = Path(__file__).parent / "vendor" / "axe.min.js"
SHOTS = Path(os.environ.get("CROSSDOCK_CONSOLE_SCREENSHOTS", ".data/console-screenshots"))
ROLES = {"customer-service": upb.ROLE_CUSTOMER_SERVICE, "supply-chain": upb.ROLE_SUPPLY_CHAIN,
         "operations": upb.ROLE_OPERATIONS, "admin": upb.ROLE_ADMIN}

pytestmark = pytest.mark.e2e


def run(coro):
    """Run a coroutine to its end from a test: in a thread of its own, since the sync
    Playwright API keeps an event loop running in the test's thread."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def wait_for(predicate, *, timeout: float, what: str, interval: float = 0.5):
    """Poll a (sync) condition until it holds, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="package")
def browser():
    # Package scope, not session: the sync API keeps an event loop running in this thread
    # while it is open, and every asyncio test after this package would then fail with
    # "Runner.run() cannot be called from a running event loop".
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        missing("chromium", "apt-get install -y chromium (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
            args=ARGS, headless=True)
        yield b
        b.close()


@dataclass
class Person:
    username: str
    password: str
    name: str


@dataclass
class Console:
    mesh: Mesh
    url: str
    world: World
    other: World
    people: dict[str, Person]

    def stubs(self) -> Stubs:
        return Stubs(self.mesh)


async def create_person(mesh: Mesh, role: str, name: str, customer: str = "") -> Person:
    username = f"{role.split('-')[0]}-{uuid.uuid4().hex[:6]}"
    async with grpc.aio.insecure_channel(mesh.addr("gateway")) as ch:
        r = await users_pb2_grpc.UserServiceStub(ch).CreateUser(upb.CreateUserRequest(
            username=username, display_name=name, role=ROLES[role], customer_id=customer),
            metadata=(("authorization", f"Bearer {operator_token.ensure(mesh.data_dir)}"),), timeout=10)
    return Person(username, r.password, name)


def console_for(tmp_path_factory, env: dict[str, str] | None = None):
    mesh = Mesh(tmp_path_factory.mktemp("console-mesh"), env={**FAST, **(env or {})})
    try:
        mesh.start()

        async def setup() -> Console:
            stubs = Stubs(mesh)
            try:
                world, other = await make_world(stubs), await make_world(stubs)
            finally:
                await stubs.close()
            people = {
                "agent": await create_person(mesh, "customer-service", "Casey Agent"),
                "planner": await create_person(mesh, "supply-chain", "Sam Planner"),
                "operator": await create_person(mesh, "operations", "Robin Operator"),
                "admin": await create_person(mesh, "admin", "Alex Admin"),
                "tenant": await create_person(mesh, "customer-service", "Tess Tenant", world.customer_id),
            }
            return Console(mesh, mesh.http_url(), world, other, people)

        yield run(setup())
    finally:
        mesh.stop()


@pytest.fixture
def page(browser, request):
    # bypass_csp: only so that the test can inject axe-core; the pages' own CSP is checked apart.
    context = browser.new_context(bypass_csp=True, timezone_id="Europe/Paris", locale="en-GB")
    p = context.new_page()
    dialogs: list[str] = []
    p.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    p.dialogs = dialogs
    yield p
    context.close()
    assert not dialogs, f"a script ran in the page: {dialogs}"


def sign_in(page, console: Console, who: str, next_path: str = "") -> None:
    person = console.people[who]
    page.goto(f"{console.url}/console/sign-in" + (f"?next={next_path}" if next_path else ""))
    page.get_by_label("Username").fill(person.username)
    page.get_by_label("Password").fill(person.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r".*/console/(?!sign-in).*"))
    clean(page)


def clean(page) -> None:
    """No page ever shows a stack trace."""
    text = page.content()
    for marker in ("Traceback (most recent call last)", 'File "/', "Exception:", "site-packages"):
        assert marker not in text, f"{page.url} shows a stack trace"


def accessible(page, what: str) -> None:
    """axe-core on the page: no serious or critical violation."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    bad = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3]) for v in result["violations"]
           if v["impact"] in ("serious", "critical")]
    assert not bad, f"{what}: {bad}"


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def visit(page, console: Console, path: str, name: str | None = None, check_axe: bool = True):
    response = page.goto(f"{console.url}{path}")
    clean(page)
    if check_axe:
        accessible(page, path)
    if name:
        shot(page, name)
    return response
