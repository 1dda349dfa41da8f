"""`crossdock users create|list|disable|reset-password`: the people who sign in to
the operations console (the gateway's /console), through its admin API
(crossdock.admin.v1.UserService at CROSSDOCK_GATEWAY_ADDR), as the operator (the
token in CROSSDOCK_GATEWAY_OPERATOR_TOKEN, else <data dir>/operator.token). A
generated password is printed once; the gateway keeps only an argon2id hash."""

from __future__ import annotations

import os
from typing import Annotated

import grpc
import typer
from rich.table import Table

from crossdock.admin.v1 import users_pb2 as pb

from .rpc import Stubs, console, run

app = typer.Typer(help="people who sign in to the operations console (roles, customer)", no_args_is_help=True)

ROLES = ("customer-service", "supply-chain", "operations", "admin")
ROLE_HELP = ("customer-service (orders, cancels, returns), supply-chain (exceptions, policies, inventory, "
             "replenishment), operations (dead letters, reconciliation, flow health, audit), admin (all)")
# Demo accounts `crossdock up` makes (or gives a new password) on every start.
DEMO_USERS = (("agent", "Casey Agent", "customer-service"), ("planner", "Sam Planner", "supply-chain"),
              ("operator", "Robin Operator", "operations"), ("admin", "Alex Admin", "admin"))


def role_pb(name: str) -> int:
    if name not in ROLES:
        raise typer.BadParameter(f"one of {', '.join(ROLES)}")
    return pb.Role.Value("ROLE_" + name.upper().replace("-", "_"))


def role_name(value: int) -> str:
    return pb.Role.Name(value).removeprefix("ROLE_").lower().replace("_", "-") if value else "?"


def _password_from_env() -> str:
    # Never on the command line (it would show in `ps` and the shell history).
    return os.environ.get("CROSSDOCK_USER_PASSWORD", "")


@app.command("create")
def create(
    username: str,
    role: Annotated[str, typer.Option(help=ROLE_HELP)],
    name: Annotated[str, typer.Option(help="the name shown and audited (default: the username)")] = "",
    customer: Annotated[str, typer.Option(
        help="bind to this customer: sees only its orders and returns")] = "",
) -> None:
    """Create an account; prints a generated password once (or takes CROSSDOCK_USER_PASSWORD)."""
    wanted = role_pb(role)

    async def main() -> pb.CreateUserResponse:
        async with Stubs() as s:
            return await s.users.CreateUser(pb.CreateUserRequest(
                username=username, display_name=name, role=wanted, customer_id=customer,
                password=_password_from_env()), metadata=s.operator(), timeout=10)

    made = run(main())
    u = made.user
    console.print(f"user {u.username} ({u.display_name}, {role_name(u.role)}, "
                  f"customer {u.customer_id or '*'})")
    if made.password:
        console.print("password (shown once):")
        print(made.password)


def _when(ts) -> str:
    return ts.ToDatetime().strftime("%Y-%m-%d %H:%M") if ts.seconds else ""


@app.command("list")
def list_() -> None:
    """Every account (never a password)."""
    async def main() -> list[pb.User]:
        found, token = [], ""
        async with Stubs() as s:
            while True:
                page = await s.users.ListUsers(pb.ListUsersRequest(page_size=500, page_token=token),
                                               metadata=s.operator(), timeout=10)
                found += page.users
                if not (token := page.next_page_token):
                    return found

    t = Table(title="Console users")
    for col in ("username", "name", "role", "customer", "created", "last sign-in", "disabled"):
        t.add_column(col)
    for u in run(main()):
        t.add_row(u.username, u.display_name, role_name(u.role), u.customer_id or "*", _when(u.create_time),
                  _when(u.last_sign_in_time), _when(u.disable_time))
    console.print(t)


@app.command("disable")
def disable(username: str) -> None:
    """Disable an account: it cannot sign in, its sessions end at once."""
    async def main() -> None:
        async with Stubs() as s:
            await s.users.DisableUser(pb.DisableUserRequest(username=username), metadata=s.operator(),
                                      timeout=10)
    run(main())
    console.print(f"disabled {username}")


@app.command("reset-password")
def reset_password(username: str) -> None:
    """A new password (printed once, or CROSSDOCK_USER_PASSWORD); enables a disabled account."""
    async def main() -> pb.ResetPasswordResponse:
        async with Stubs() as s:
            return await s.users.ResetPassword(pb.ResetPasswordRequest(
                username=username, password=_password_from_env()), metadata=s.operator(), timeout=10)
    made = run(main())
    console.print(f"new password for {username}" + (" (shown once):" if made.password else " set"))
    if made.password:
        print(made.password)


async def ensure_demo_users(s: Stubs) -> list[tuple[str, str, str]]:
    """The demo accounts, each with a fresh generated password: (username, role, password)."""
    out = []
    for username, name, role in DEMO_USERS:
        try:
            r = await s.users.CreateUser(pb.CreateUserRequest(username=username, display_name=name,
                                                              role=role_pb(role)),
                                         metadata=s.operator(), timeout=10)
        except grpc.aio.AioRpcError as err:
            if err.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
            r = await s.users.ResetPassword(pb.ResetPasswordRequest(username=username),
                                            metadata=s.operator(), timeout=10)
        out.append((username, role, r.password))
    return out


def demo_users_table(made: list[tuple[str, str, str]], url: str) -> Table:
    t = Table(title=f"Operations console: {url} (demo accounts; new passwords on every start)")
    for col in ("username", "role", "password"):
        t.add_column(col)
    for row in made:
        t.add_row(*row)
    return t
