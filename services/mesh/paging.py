"""Keyset paging (AIP-158) shared by every List RPC: page_size 0 means 50, at
most 500, negative is refused; page_token is opaque (the last key of the page)."""

from __future__ import annotations

import base64
import binascii
import json

from sqlalchemy import Column, Select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from .errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def page_size(requested: int) -> int:
    if requested < 0:
        raise ValueError("must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(key: list[str | int]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def decode_token(token: str, arity: int) -> list[str | int]:
    """The key a token names; ValueError when it is not a token of this listing."""
    try:
        key = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("not a page token") from None
    if not (isinstance(key, list) and len(key) == arity
            and all(isinstance(k, str | int) and not isinstance(k, bool) for k in key)):
        raise ValueError("not a page token of this listing")
    return key


async def keyset_page(conn: AsyncConnection, query: Select, keys: list[Column],
                      requested_size: int, token: str) -> tuple[list, str]:
    """One page of ``query`` in key order, and the next page's token ("" after the last)."""
    problems, size, after = [], 0, None
    try:
        size = page_size(requested_size)
    except ValueError as exc:
        problems.append(("page_size", str(exc)))
    if token:
        try:
            after = decode_token(token, len(keys))
        except ValueError as exc:
            problems.append(("page_token", str(exc)))
    if problems:
        raise InvalidArgument(problems)
    query = query.order_by(*keys).limit(size + 1)
    if after:
        query = query.where(tuple_(*keys) > tuple_(*after))
    rows = (await conn.execute(query)).all()
    if len(rows) <= size:
        return rows, ""
    return rows[:size], encode_token([getattr(rows[size - 1], k.name) for k in keys])
