"""Keyset paging (AIP-158) shared by every List RPC: page_size 0 means 50, at
most 500, negative is refused; page_token is opaque, sealed and untrusted.

A token names the last key of the page it follows, sealed with an HMAC-SHA256
under the deployment's key (``CROSSDOCK_PAGE_TOKEN_KEY``, else a random key
kept in ``<data_dir>/page-token.key``, made once with mode 0600) over that key
AND the listing's query with its filter values (the compiled WHERE clause and
its parameters, e.g. the customer a tenant-bound client is confined to). So a
client can neither forge a position nor reuse a token under another filter
(another tenant's, another status): either is INVALID_ARGUMENT naming
``page_token``, like any token that does not decode to keys of the listing's
column types and ranges. Only the service that issued a token verifies it
(the gateway passes it through), so its replicas share one key: give them the
same ``CROSSDOCK_PAGE_TOKEN_KEY`` (Kubernetes: the service's Secret) when they
do not share a data folder.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from pathlib import Path

from sqlalchemy import Column, Select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from .errors import InvalidArgument
from .secretfile import create_once

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_TOKEN_CHARS = 1024
MAX_KEY_STRING = 1024
INT64 = (-(2**63), 2**63 - 1)
MAC_BYTES = 16
KEY_FILE = "page-token.key"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")

_secret: bytes | None = None


def set_secret(secret: bytes | None) -> None:
    """Use this sealing key (None: read it again from the configuration on next use)."""
    global _secret
    _secret = secret


def load_secret(explicit: str, data_dir: Path) -> bytes:
    """The deployment's key: ``explicit`` when given, else the data folder's key file
    (created once, atomically, readable by its owner only)."""
    if explicit:
        return explicit.encode()
    path = data_dir / KEY_FILE
    key = create_once(path, lambda: secrets.token_hex(32))
    if len(key) < 32:
        raise RuntimeError(f"{path}: a page-token key of at least 32 characters is expected")
    return key.encode()


def _key() -> bytes:
    global _secret
    if _secret is None:
        from .config import load_settings

        s = load_settings()
        _secret = load_secret(s.page_token_key, s.resolved_data_dir)
    return _secret


def page_size(requested: int) -> int:
    if requested < 0:
        raise ValueError("must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(scope: str, payload: bytes) -> bytes:
    return hmac.new(_key(), scope.encode() + b"\0" + payload, hashlib.sha256).digest()[:MAC_BYTES]


def query_scope(query: Select) -> str:
    """What a token is bound to: the listing's statement with its filter values."""
    compiled = query.compile()
    params = json.dumps(sorted(compiled.params.items()), default=str, separators=(",", ":"))
    return hashlib.sha256(f"{compiled}\0{params}".encode()).hexdigest()


def encode_token(key: list[str | int], scope: str = "") -> str:
    payload = json.dumps(key, separators=(",", ":")).encode()
    return f"{_b64(payload)}.{_b64(_mac(scope, payload))}"


def decode_token(token: str, columns: list[Column] | int, scope: str = "") -> list[str | int]:
    """The key a token names; ValueError when it is not a token of this listing and
    filter, or names keys that do not fit the columns (``columns``: the key columns,
    or just their number)."""
    if len(token) > MAX_TOKEN_CHARS or not _TOKEN.match(token):
        raise ValueError("not a page token")
    body, _, mac = token.partition(".")
    try:
        payload, given = _unb64(body), _unb64(mac)
    except (binascii.Error, ValueError):
        raise ValueError("not a page token") from None
    if not hmac.compare_digest(given, _mac(scope, payload)):
        raise ValueError("not a page token of this listing (forged, or from another filter)")
    try:
        key = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        raise ValueError("not a page token") from None
    arity = columns if isinstance(columns, int) else len(columns)
    if not (isinstance(key, list) and len(key) == arity):
        raise ValueError("not a page token of this listing")
    for i, value in enumerate(key):
        column = None if isinstance(columns, int) else columns[i]
        _check_key(value, column)
    return key


def _check_key(value: object, column: Column | None) -> None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("not a page token of this listing")
    try:
        expected = column.type.python_type if column is not None else type(value)
    except NotImplementedError:
        expected = type(value)
    if not isinstance(value, expected):
        raise ValueError("not a page token of this listing")
    if isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
        raise ValueError("names a position out of range")
    if isinstance(value, str):
        limit = getattr(column.type, "length", None) if column is not None else None
        if len(value) > (limit or MAX_KEY_STRING) or "\x00" in value:
            raise ValueError("names a position out of range")


async def keyset_page(conn: AsyncConnection, query: Select, keys: list[Column],
                      requested_size: int, token: str, *, descending: bool = False) -> tuple[list, str]:
    """One page of ``query`` in key order (``descending``: the reverse), and the next page's
    token ("" after the last)."""
    problems, size, after = [], 0, None
    try:
        size = page_size(requested_size)
    except ValueError as exc:
        problems.append(("page_size", str(exc)))
    scope = query_scope(query) + (" DESC" if descending else "")
    if token:
        try:
            after = decode_token(token, keys, scope)
        except ValueError as exc:
            problems.append(("page_token", str(exc)))
    if problems:
        raise InvalidArgument(problems)
    query = query.order_by(*(k.desc() if descending else k for k in keys)).limit(size + 1)
    if after:
        query = query.where(tuple_(*keys) < tuple_(*after) if descending else tuple_(*keys) > tuple_(*after))
    rows = (await conn.execute(query)).all()
    if len(rows) <= size:
        return rows, ""
    return rows[:size], encode_token([getattr(rows[size - 1], k.name) for k in keys], scope)
