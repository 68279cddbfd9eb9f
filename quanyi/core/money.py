"""Money: an integer count of minor units and an ISO currency code. No floats, ever."""

from __future__ import annotations

import re
from dataclasses import dataclass

from quanyi.core.errors import InvalidInput

# Minor-unit exponent per currency; XTR (Telegram Stars) has no minor unit.
EXPONENTS: dict[str, int] = {"CNY": 2, "USD": 2, "EUR": 2, "HKD": 2, "USDT": 2, "JPY": 0, "XTR": 0}
SYMBOLS: dict[str, str] = {"CNY": "¥", "USD": "$", "EUR": "€", "HKD": "HK$", "JPY": "¥"}

_DECIMAL = re.compile(r"^(?P<int>\d{1,12})(?:\.(?P<frac>\d+))?$", re.ASCII)


def exponent(currency: str) -> int:
    try:
        return EXPONENTS[currency]
    except KeyError:
        raise InvalidInput(
            f"unknown currency {currency!r}", key="err_catalog.unknown_currency", unit=str(currency)
        ) from None


@dataclass(frozen=True, slots=True, order=True)
class Money:
    minor: int
    currency: str

    @classmethod
    def parse(cls, text: str, currency: str) -> Money:
        """Parse decimal text such as ``15.00`` or ``15.5``; refuse more precision than the
        currency has, signs, exponents and anything that is not plain digits."""
        return cls(parse_minor(text, currency), currency)

    def format_plain(self) -> str:
        """Decimal text with exactly the currency's number of decimals (``15.00``)."""
        return format_minor(self.minor, self.currency)

    def __str__(self) -> str:
        if self.currency == "XTR":
            return f"{self.minor} ⭐"
        symbol = SYMBOLS.get(self.currency)
        text = self.format_plain()
        return f"{symbol}{text}" if symbol else f"{text} {self.currency}"

    def __mul__(self, factor: int) -> Money:
        if not isinstance(factor, int) or isinstance(factor, bool):
            raise TypeError("money multiplies by whole numbers only")
        return Money(self.minor * factor, self.currency)


def parse_minor(text: str, currency: str) -> int:
    digits = exponent(currency)
    match = _DECIMAL.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise InvalidInput(f"not an amount: {text!r}", key="err_catalog.not_an_amount", text=str(text))
    frac = match.group("frac") or ""
    if len(frac) > digits:
        raise InvalidInput(
            f"{currency} amounts have at most {digits} decimals: {text!r}",
            key="err_catalog.too_many_decimals",
            text=text,
            unit=currency,
            digits=digits,
        )
    scale: int = 10**digits
    return int(match.group("int")) * scale + int(frac.ljust(digits, "0") or 0)


def format_minor(minor: int, currency: str) -> str:
    digits = exponent(currency)
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), 10**digits)
    return f"{sign}{whole}.{frac:0{digits}d}" if digits else f"{sign}{whole}"


def convert_up(minor: int, currency: str, rate: str, to_currency: str) -> int:
    """``minor`` of ``currency`` times ``rate`` (decimal text, units of ``to_currency`` per
    1 unit of ``currency``) in minor units of ``to_currency``, rounded up: a converted
    price never undercharges. Integer arithmetic only."""
    match = _DECIMAL.match(rate.strip())
    if match is None:
        raise InvalidInput(f"not a rate: {rate!r}")
    frac = match.group("frac") or ""
    numerator = int(match.group("int") + frac)
    denominator: int = 10 ** len(frac) * 10 ** exponent(currency)
    scaled: int = minor * numerator * 10 ** exponent(to_currency)
    return -(-scaled // denominator)
