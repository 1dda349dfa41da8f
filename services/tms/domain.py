"""Rating and booking rules (pure: no I/O)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class RateLine:
    carrier_id: str
    service_level: str
    country_codes: tuple[str, ...]
    currency_code: str
    base_minor: int
    per_kg_minor: int
    transit_days: int
    max_weight_grams: int  # 0 = no limit


@dataclass(frozen=True)
class Option:
    carrier_id: str
    service_level: str
    currency_code: str
    price_minor: int
    transit_days: int


def price(rate: RateLine, weight_grams: int) -> int:
    """Base fee plus a per-kg fee for every started kilogram (at least one)."""
    kilos = max(1, -(-weight_grams // 1000))
    return rate.base_minor + rate.per_kg_minor * kilos


def shipping_options(
    rates: list[RateLine],
    *,
    country_code: str,
    weight_grams: int,
    currency_code: str = "",
    service_level: str = "",
) -> list[Option]:
    """Every rate that serves the destination and weight, cheapest first."""
    options = []
    for r in rates:
        if r.country_codes and country_code.upper() not in r.country_codes:
            continue
        if r.max_weight_grams and weight_grams > r.max_weight_grams:
            continue
        if currency_code and r.currency_code != currency_code:
            continue
        if service_level and r.service_level != service_level:
            continue
        options.append(
            Option(r.carrier_id, r.service_level, r.currency_code, price(r, weight_grams), r.transit_days)
        )
    return sorted(options, key=lambda o: (o.price_minor, o.transit_days, o.carrier_id))


@dataclass(frozen=True)
class Refusal:
    carrier_id: str
    service_level: str
    reason: str


@dataclass(frozen=True)
class Choice:
    option: Option | None
    refused: tuple[Refusal, ...]


def first_accepting(options: list[Option], suspended: set[str]) -> Choice:
    """The first option (cheapest first) whose carrier takes the booking.

    A carrier whose booking system is down (suspended) refuses; the booking
    falls through to the next option, and every refusal is kept for the
    order's timeline.
    """
    refused = []
    for o in options:
        if o.carrier_id in suspended:
            refused.append(Refusal(o.carrier_id, o.service_level,
                                   "carrier refused: booking system unavailable"))
            continue
        return Choice(o, tuple(refused))
    return Choice(None, tuple(refused))


def tracking_number(carrier_id: str, shipment_id: str) -> str:
    """Deterministic per carrier and shipment, so a re-booking gets the same label."""
    digest = hashlib.sha256(f"{carrier_id}:{shipment_id}".encode()).hexdigest()[:12].upper()
    return f"{carrier_id[:3].upper()}{digest}"
