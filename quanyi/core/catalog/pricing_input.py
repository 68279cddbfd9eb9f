"""Operator input for coupons and promotions as text (CLI options, admin chat ``key=value``)
turned into the values ``coupons.create_coupon`` and ``promotions.add_promotion`` take."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from quanyi.core.books.commissions import parse_rate
from quanyi.core.catalog.pricing import parse_time
from quanyi.core.errors import InvalidInput
from quanyi.core.models import DiscountKind, PromotionKind, Stacking
from quanyi.core.money import exponent, parse_minor

COUPON_KEYS = ("name", "off", "cap", "min", "skus", "categories", "channels", "starts", "ends", "uses", "per_buyer")
PROMOTION_KEYS = (
    "name",
    "spend",
    "off",
    "cap",
    "units",
    "pay",
    "skus",
    "categories",
    "channels",
    "starts",
    "ends",
    "stacking",
)


def parse_fields(text: str, allowed: tuple[str, ...]) -> dict[str, str]:
    """``name="Spring sale" off=10% cap=5`` -> a dict; values may be quoted; unknown keys refused."""
    import shlex

    try:
        words = shlex.split(text or "")
    except ValueError:
        raise InvalidInput("unbalanced quotes", key="err_catalog.unbalanced_quotes") from None
    fields: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        key = key.strip().lower().replace("-", "_")
        if not sep or key not in allowed:
            known = ", ".join(k + "=" for k in allowed)
            raise InvalidInput(
                f"unknown field {word!r}: use {known}", key="err_catalog.unknown_field", word=word, known=known
            )
        fields[key] = value.strip()
    return fields


def _list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _count(value: str | None, what: str, typed: str) -> int | None:
    if value is None or value == "" or value.lower() == "unlimited":
        return None
    if not (value.isascii() and value.isdigit()) or int(value) <= 0:
        raise InvalidInput(f"{what}: a whole number from 1, or unlimited", key="err_catalog.bad_count", typed=typed)
    return int(value)


def _when(value: str | None, tz: str) -> Any:
    return parse_time(value, tz) if value else None


def _off(value: str, currency: str) -> tuple[str, int]:
    """``10%`` -> (percent, 1000 basis points); ``5.00`` -> (amount, 500 minor units)."""
    value = (value or "").strip()
    if not value:
        raise InvalidInput("off: an amount like 5.00 or a percentage like 10%", key="err_catalog.bad_off")
    if value.endswith("%"):
        return DiscountKind.PERCENT, parse_rate(value)
    return DiscountKind.AMOUNT, parse_minor(value, currency)


def coupon_terms(fields: Mapping[str, str | None], *, currency: str, tz: str) -> dict[str, Any]:
    """Keyword arguments for ``coupons.create_coupon`` (everything but ``name``'s checks)."""
    exponent(currency)
    kind, value = _off(fields.get("off") or "", currency)
    cap = fields.get("cap")
    return {
        "name": fields.get("name") or "",
        "kind": kind,
        "value": value,
        "currency": currency,
        "cap": parse_minor(cap, currency) if cap else None,
        "min_spend": parse_minor(fields.get("min") or "0", currency),
        "skus": _list(fields.get("skus")),
        "categories": [c.lower() for c in _list(fields.get("categories"))],
        "channels": _list(fields.get("channels")),
        "starts_at": _when(fields.get("starts"), tz),
        "ends_at": _when(fields.get("ends"), tz),
        "max_uses": _count(fields.get("uses"), "uses", "uses"),
        "per_buyer": _count(fields.get("per_buyer"), "uses per buyer", "per_buyer"),
    }


def units_hundredths(text: str) -> int:
    """``2.5`` units -> 250, without a float."""
    value = (text or "").strip()
    whole, _, frac = value.partition(".")
    if not value.isascii() or not whole.isdigit() or (frac and (not frac.isdigit() or len(frac) > 2)):
        raise InvalidInput(f"not a number of units: {text!r} (e.g. 2 or 2.5)", key="err_catalog.bad_units", text=text)
    return int(whole) * 100 + int((frac or "0").ljust(2, "0"))


def promotion_terms(fields: Mapping[str, str | None], *, currency: str, tz: str) -> dict[str, Any]:
    """Keyword arguments for ``promotions.add_promotion``: ``spend`` + ``off`` (amount or %),
    or ``units`` + ``pay`` (N units for the price of M)."""
    exponent(currency)
    cap = fields.get("cap")
    if fields.get("units") or fields.get("pay"):
        if fields.get("spend") or fields.get("off"):
            raise InvalidInput("give spend= and off=, or units= and pay=, not both", key="err_catalog.promotion_both")
        units = fields.get("units") or ""
        if not (units.isascii() and units.isdigit()):
            raise InvalidInput(
                "units: a whole number of units, e.g. units=3 pay=2.5", key="err_catalog.bad_units_count"
            )
        kind, threshold, value = PromotionKind.UNITS_PRICE, int(units), units_hundredths(fields.get("pay") or "")
    else:
        if not fields.get("off"):
            raise InvalidInput(
                "give spend= and off= (e.g. spend=50 off=8 or off=10%), or units= and pay=",
                key="err_catalog.promotion_terms",
            )
        off_kind, value = _off(fields.get("off") or "", currency)
        threshold = parse_minor(fields.get("spend") or "0", currency)
        kind = PromotionKind.SPEND_PERCENT if off_kind == DiscountKind.PERCENT else PromotionKind.SPEND_OFF
    return {
        "name": fields.get("name") or "",
        "kind": kind,
        "threshold": threshold,
        "value": value,
        "currency": currency,
        "cap": parse_minor(cap, currency) if cap else None,
        "skus": _list(fields.get("skus")),
        "categories": [c.lower() for c in _list(fields.get("categories"))],
        "channels": _list(fields.get("channels")),
        "starts_at": _when(fields.get("starts"), tz),
        "ends_at": _when(fields.get("ends"), tz),
        "stacking": (fields.get("stacking") or Stacking.STACK).lower(),
    }
