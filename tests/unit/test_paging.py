"""Keyset paging tokens and sizes (shared by every List RPC)."""

from __future__ import annotations

import pytest

from services.mesh import paging


@pytest.mark.parametrize("key", [["C-1"], ["SKU/ä", "WH 1"], [""]])
def test_page_token_round_trip(key):
    token = paging.encode_token(key)
    assert token.isascii() and "=" not in token
    assert paging.decode_token(token, len(key)) == key


@pytest.mark.parametrize("token", ["!!!", "bm90IGpzb24", paging.encode_token(["a", "b"]),
                                   paging.encode_token([1.5]), paging.encode_token([True])])
def test_bad_page_tokens_are_refused(token):
    with pytest.raises(ValueError):
        paging.decode_token(token, 1)


def test_page_size_defaults_caps_and_refuses_negative():
    assert (paging.page_size(0), paging.page_size(7), paging.page_size(10_000)) == (50, 7, 500)
    with pytest.raises(ValueError):
        paging.page_size(-1)
