"""The status words the WMS stores, as ``StrEnum``s: a typo is an AttributeError at
import, not a row that no query finds. The values are the database's (unchanged);
each one that a contract carries is checked against its Protobuf enum here, at
import, and converted by the functions below.
"""

from __future__ import annotations

from enum import StrEnum

from crossdock.wms.v1 import wms_pb2


class FulfilmentStatus(StrEnum):
    BACKORDERED = "BACKORDERED"  # waiting for stock (also: a new order, until it is decided)
    ALLOCATED = "ALLOCATED"
    PICKED = "PICKED"
    PACKED = "PACKED"
    LABELLED = "LABELLED"  # a carrier and tracking number are assigned
    SHIPPED = "SHIPPED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    EXCEPTION = "EXCEPTION"  # stopped by a short pick, damage or a bin count


class ShortagePolicy(StrEnum):
    UNSPECIFIED = "UNSPECIFIED"  # treated as BACKORDER
    BACKORDER = "BACKORDER"
    CANCEL = "CANCEL"


class ExceptionKind(StrEnum):
    SHORT_PICK = "SHORT_PICK"
    DAMAGED = "DAMAGED"
    STOCK_DISCREPANCY = "STOCK_DISCREPANCY"


class ReturnStatus(StrEnum):
    EXPECTED = "EXPECTED"
    RECEIVED = "RECEIVED"
    INSPECTED = "INSPECTED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"


class TransferStatus(StrEnum):
    PENDING = "PENDING"  # only inside the transaction that issues or refuses it
    ISSUED = "ISSUED"
    REFUSED = "REFUSED"


def _to_pb(enum_type, prefix: str, words) -> dict:
    return {word: enum_type.Value(f"{prefix}{word}") for word in words}


_FULFILMENT_PB = _to_pb(wms_pb2.FulfilmentStatus, "FULFILMENT_STATUS_", FulfilmentStatus)
_POLICY_PB = _to_pb(wms_pb2.ShortagePolicy, "SHORTAGE_POLICY_", ShortagePolicy)
_POLICY_OF_PB = {number: ShortagePolicy(word) for word, number in _POLICY_PB.items()}
_KIND_PB = _to_pb(wms_pb2.ExceptionKind, "EXCEPTION_KIND_", ExceptionKind)
_RETURN_PB = _to_pb(wms_pb2.ReturnReceiptStatus, "RETURN_RECEIPT_STATUS_", ReturnStatus)


def fulfilment_status_pb(status: str) -> int:
    return _FULFILMENT_PB[FulfilmentStatus(status)]


def shortage_policy_pb(policy: str) -> int:
    return _POLICY_PB[ShortagePolicy(policy)]


def shortage_policy_of(number: int) -> ShortagePolicy | None:
    """The policy a command names (None: a number the contract does not know)."""
    return _POLICY_OF_PB.get(number)


def exception_kind_pb(kind: str) -> int:
    return _KIND_PB[ExceptionKind(kind)]


def return_status_pb(status: str) -> int:
    return _RETURN_PB[ReturnStatus(status)]
