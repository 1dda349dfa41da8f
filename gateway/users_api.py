"""crossdock.admin.v1.UserService: the console's people over gRPC, for operators
(`crossdock users`). Who may call it is the guard's business (the admin scope on
an unbound client, or the operator token); this translates requests into
``users`` calls and answers, nothing more."""

from __future__ import annotations

from crossdock.admin.v1 import users_pb2 as pb
from crossdock.admin.v1 import users_pb2_grpc
from services.mesh.errors import AlreadyExists, InvalidArgument, NotFound

from . import users
from .admin_api import _ts
from .guard import set_resource

ROLE_PB = {r: pb.Role.Value("ROLE_" + r.upper().replace("-", "_")) for r in users.ROLES}
PB_ROLE = {v: k for k, v in ROLE_PB.items()}


def to_pb(row: dict) -> pb.User:
    return pb.User(
        username=row["username"], display_name=row["display_name"], role=ROLE_PB.get(row["role"], 0),
        customer_id=row["customer_id"], disabled=row["disabled_at"] is not None,
        create_time=_ts(row["created_at"]), password_change_time=_ts(row["password_changed_at"]),
        disable_time=_ts(row["disabled_at"]), last_sign_in_time=_ts(row["last_sign_in_at"]))


def _password(given: str, field: str = "password") -> tuple[str, str]:
    """(the password to set, the one to return: the generated one, else "")."""
    if not given:
        made = users.new_password()
        return made, made
    if problem := users.check_password(given):
        raise InvalidArgument([(field, problem)])
    return given, ""


class UserServicer(users_pb2_grpc.UserServiceServicer):
    def __init__(self, store) -> None:
        self.store = store

    async def CreateUser(self, request, context):
        v = []
        if problem := users.check_username(request.username):
            v.append(("username", problem))
        if request.role not in PB_ROLE:
            v.append(("role", "required: " + ", ".join(users.ROLES)))
        if request.customer_id and not users.CUSTOMER.match(request.customer_id):
            v.append(("customer_id", "not a customer id"))
        if len(request.display_name) > 200:
            v.append(("display_name", "at most 200 characters"))
        if request.password and (problem := users.check_password(request.password)):
            v.append(("password", problem))
        if v:
            raise InvalidArgument(v)
        password, shown = _password(request.password)
        try:
            row = await users.create_user(
                self.store, username=request.username, display_name=request.display_name.strip(),
                role=PB_ROLE[request.role], customer_id=request.customer_id, password=password)
        except users.UserExists:
            raise AlreadyExists(f"user {request.username!r} already exists") from None
        set_resource(request.username)
        return pb.CreateUserResponse(user=to_pb(row), password=shown)

    async def ListUsers(self, request, context):
        rows, token = await users.list_users(self.store, request.page_size, request.page_token)
        return pb.ListUsersResponse(users=[to_pb(r) for r in rows], next_page_token=token)

    async def DisableUser(self, request, context):
        if not request.username:
            raise InvalidArgument([("username", "required")])
        try:
            row = await users.disable_user(self.store, request.username)
        except users.NoSuchUser:
            raise NotFound("user", request.username) from None
        return pb.DisableUserResponse(user=to_pb(row))

    async def ResetPassword(self, request, context):
        if not request.username:
            raise InvalidArgument([("username", "required")])
        password, shown = _password(request.password)
        try:
            row = await users.reset_password(self.store, request.username, password)
        except users.NoSuchUser:
            raise NotFound("user", request.username) from None
        return pb.ResetPasswordResponse(user=to_pb(row), password=shown)
