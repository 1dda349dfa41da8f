"""The console's people through the gateway's UserService (as `crossdock users` calls it) and
its sessions over real HTTP: argon2id hashes, cookie flags, throttled sign-ins, disabled
accounts, CSRF on state changes, and the person's name in the audit log."""

from __future__ import annotations

import re
import sqlite3
import uuid

import grpc
import httpx
import pytest

from crossdock.admin.v1 import users_pb2 as upb
from crossdock.admin.v1 import users_pb2_grpc

from .conftest import Gateway

pytestmark = pytest.mark.e2e


def op(gateway: Gateway):
    return (("authorization", f"Bearer {gateway.operator_token}"),)


async def make_user(gateway: Gateway, role: int = 1, customer: str = "", name: str = "") -> tuple[str, str]:
    username = f"u-{uuid.uuid4().hex[:8]}"
    async with grpc.aio.insecure_channel(gateway.grpc_addr) as ch:
        r = await users_pb2_grpc.UserServiceStub(ch).CreateUser(upb.CreateUserRequest(
            username=username, role=role, customer_id=customer, display_name=name), metadata=op(gateway))
    return username, r.password


async def sign_in(http: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    page = await http.get("/console/sign-in")
    token = re.search(r'name="form_token" value="([^"]+)"', page.text).group(1)
    return await http.post("/console/sign-in", data={"username": username, "password": password,
                                                      "form_token": token, "next": "/console/orders"})


async def test_users_are_made_listed_disabled_and_reset_through_the_admin_api(gateway: Gateway):
    username, password = await make_user(gateway, role=3, name="Robin Ops")
    assert len(password) >= 12
    async with grpc.aio.insecure_channel(gateway.grpc_addr) as ch:
        stub = users_pb2_grpc.UserServiceStub(ch)
        listed = (await stub.ListUsers(upb.ListUsersRequest(page_size=500), metadata=op(gateway))).users
        mine = next(u for u in listed if u.username == username)
        assert mine.display_name == "Robin Ops" and mine.role == upb.ROLE_OPERATIONS and not mine.disabled
        with pytest.raises(grpc.aio.AioRpcError) as again:
            await stub.CreateUser(upb.CreateUserRequest(username=username, role=1), metadata=op(gateway))
        assert again.value.code() == grpc.StatusCode.ALREADY_EXISTS
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stub.CreateUser(upb.CreateUserRequest(username="Bad Name", role=0, password="short"),
                                  metadata=op(gateway))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        disabled = (await stub.DisableUser(upb.DisableUserRequest(username=username),
                                           metadata=op(gateway))).user
        assert disabled.disabled and disabled.disable_time.seconds
        reset = await stub.ResetPassword(upb.ResetPasswordRequest(username=username), metadata=op(gateway))
        assert not reset.user.disabled and reset.password and reset.password != password
        # The store keeps an argon2id hash, never the password.
        db = sqlite3.connect(gateway.data_dir / "gateway.db")
        (stored,) = db.execute("SELECT password_hash FROM users WHERE username = ?", (username,)).fetchone()
        db.close()
        assert stored.startswith("$argon2id$") and reset.password not in stored


async def test_sign_in_sets_a_strict_http_only_cookie_and_a_wrong_password_is_refused(gateway: Gateway):
    username, password = await make_user(gateway)
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        wrong = await sign_in(http, username, "not the password")
        assert wrong.status_code == 401 and "not right" in wrong.text
        ok = await sign_in(http, username, password)
        assert ok.status_code == 303 and ok.headers["location"] == "/console/orders"
        cookie = next(c for c in ok.headers.get_list("set-cookie") if c.startswith("crossdock_session="))
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
        assert "Secure" not in cookie  # plain HTTP here; set over TLS
        page = await http.get("/console/orders")
        assert page.status_code == 200 and username in page.text


async def test_sign_in_attempts_are_throttled_even_with_the_right_password_afterwards(gateway: Gateway):
    username, password = await make_user(gateway)
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        for _ in range(5):
            assert (await sign_in(http, username, "guess-guess-guess")).status_code == 401
        throttled = await sign_in(http, username, password)
        assert throttled.status_code == 429 and "Too many failed sign-ins" in throttled.text


async def test_a_disabled_account_loses_its_session_at_once(gateway: Gateway):
    username, password = await make_user(gateway)
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        assert (await sign_in(http, username, password)).status_code == 303
        assert (await http.get("/console/orders")).status_code == 200
        async with grpc.aio.insecure_channel(gateway.grpc_addr) as ch:
            await users_pb2_grpc.UserServiceStub(ch).DisableUser(upb.DisableUserRequest(username=username),
                                                                 metadata=op(gateway))
        after = await http.get("/console/orders")
        assert after.status_code == 303 and after.headers["location"].startswith("/console/sign-in")
        assert (await sign_in(http, username, password)).status_code == 401


async def test_a_post_without_the_csrf_token_is_refused_and_audited_with_the_name(gateway: Gateway, http):
    username, password = await make_user(gateway, name="Casey Agent")
    async with httpx.AsyncClient(base_url=gateway.url) as console:
        assert (await sign_in(console, username, password)).status_code == 303
        refused = await console.post("/console/sign-out", data={})
        assert refused.status_code == 403 and "security token" in refused.text
        assert (await console.get("/console/orders")).status_code == 200  # still signed in
    entries = (await http.get("/v1/admin/audit", params={"limit": 100},
                              headers=gateway.admin())).json()["entries"]
    mine = [e for e in entries if e["client_id"] == f"user:{username}"]
    assert {e["outcome"] for e in mine} >= {"signed-in", "csrf-refused"}
    assert all(e["actor"] == "Casey Agent" and e["transport"] == "console" for e in mine)
