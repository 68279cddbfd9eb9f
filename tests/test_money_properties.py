"""Properties of money that every price, payment and refund relies on."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from quanyi.core.money import EXPONENTS, Money, convert_up, format_minor, parse_minor

currencies = st.sampled_from(sorted(EXPONENTS))
amounts = st.integers(min_value=0, max_value=10**14 - 1)


@given(st.data(), currencies)
def test_formatting_and_parsing_give_back_the_same_minor_units(data, currency):
    # Parsing takes at most 12 digits of whole units (a sanity limit on typed amounts).
    minor = data.draw(st.integers(min_value=0, max_value=10 ** (12 + EXPONENTS[currency]) - 1))
    text = format_minor(minor, currency)
    assert parse_minor(text, currency) == minor
    assert Money.parse(text, currency) == Money(minor, currency)


@given(
    amounts.filter(lambda m: m < 10**10),
    st.sampled_from(["CNY", "USD"]),
    st.decimals(min_value="0.01", max_value="1000", places=3, allow_nan=False, allow_infinity=False),
)
def test_a_converted_price_is_the_exact_product_rounded_up_never_down(minor, currency, rate):
    stars = convert_up(minor, currency, str(rate), "XTR")
    exact = Fraction(minor, 10 ** EXPONENTS[currency]) * Fraction(str(rate))
    assert stars >= exact  # never undercharges
    assert stars - 1 < exact  # and never by a whole Star more than needed
