"""Keyset paging tokens and sizes (shared by every List RPC): a token is untrusted
input, sealed to its listing's filter."""

from __future__ import annotations

import base64
import json
import stat

import pytest
from sqlalchemy import BigInteger, Column, MetaData, String, Table, select

from services.mesh import paging

t = Table("things", MetaData(), Column("seq", BigInteger, primary_key=True),
          Column("owner", String(64)), Column("name", String(8)))
BY_SEQ = [t.c.seq]
ACME = paging.query_scope(select(t).where(t.c.owner == "C-ACME"))
GLOBEX = paging.query_scope(select(t).where(t.c.owner == "C-GLOBEX"))


@pytest.fixture(autouse=True)
def sealing_key():
    paging.set_secret(b"k" * 32)
    yield
    paging.set_secret(None)


def unsealed(key: object) -> str:
    """A token as a client could make one by hand (the old, unsealed format)."""
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


@pytest.mark.parametrize("key,columns", [([7], [t.c.seq]), (["SKU/ä", "WH 1"], [t.c.owner, t.c.name]),
                                         ([""], [t.c.owner])])
def test_a_token_names_the_key_it_was_made_for(key, columns):
    token = paging.encode_token(key, ACME)
    assert token.isascii() and "=" not in token
    assert paging.decode_token(token, columns, ACME) == key


def test_a_token_made_under_one_filter_is_refused_under_another():
    token = paging.encode_token([7], ACME)
    with pytest.raises(ValueError, match="another filter"):
        paging.decode_token(token, BY_SEQ, GLOBEX)


def test_a_client_cannot_forge_a_position():
    body, _, mac = paging.encode_token([7], ACME).partition(".")
    forged = f"{unsealed([8])}.{mac}"
    with pytest.raises(ValueError, match="forged"):
        paging.decode_token(forged, BY_SEQ, ACME)


def test_a_token_sealed_under_another_deployments_key_is_refused():
    token = paging.encode_token([7], ACME)
    paging.set_secret(b"another deployment's key........")
    with pytest.raises(ValueError):
        paging.decode_token(token, BY_SEQ, ACME)


@pytest.mark.parametrize("token", [
    unsealed([9223372036854775808]),  # the crafted token of issue 13 (2**63: no SQLite INTEGER)
    unsealed([1]), "!!!", "bm90IGpzb24", "a.b.c", ".", "x" * 2000, "",
])
def test_hand_made_and_malformed_tokens_are_refused(token):
    with pytest.raises(ValueError):
        paging.decode_token(token, BY_SEQ, ACME)


@pytest.mark.parametrize("key,columns", [
    ([2**63], BY_SEQ), ([-(2**63) - 1], BY_SEQ),   # beyond a 64-bit integer column
    (["7"], BY_SEQ), ([7], [t.c.owner]),            # not the column's type
    ([1.5], BY_SEQ), ([True], BY_SEQ), ([None], BY_SEQ), ([[1]], BY_SEQ),
    (["x" * 9], [t.c.name]), (["a\x00b"], [t.c.owner]),  # longer than the column, NUL
    ([1, 2], BY_SEQ), ([], BY_SEQ),
])
def test_even_a_sealed_token_must_name_keys_that_fit_the_columns(key, columns):
    with pytest.raises(ValueError):
        paging.decode_token(paging.encode_token(key, ACME), columns, ACME)


def test_the_key_file_is_made_once_for_the_owner_only(tmp_path):
    first = paging.load_secret("", tmp_path)
    assert paging.load_secret("", tmp_path) == first and len(first) >= 32
    assert stat.S_IMODE((tmp_path / paging.KEY_FILE).stat().st_mode) == 0o600
    assert list(tmp_path.iterdir()) == [tmp_path / paging.KEY_FILE]
    assert paging.load_secret("configured-key-of-at-least-32-chars", tmp_path) != first


def test_the_filter_values_are_part_of_the_scope():
    assert ACME != GLOBEX
    assert ACME == paging.query_scope(select(t).where(t.c.owner == "C-ACME"))
    assert ACME != paging.query_scope(select(t).where(t.c.owner == "C-ACME", t.c.name == "x"))


def test_page_size_defaults_caps_and_refuses_negative():
    assert (paging.page_size(0), paging.page_size(7), paging.page_size(10_000)) == (50, 7, 500)
    with pytest.raises(ValueError):
        paging.page_size(-1)
