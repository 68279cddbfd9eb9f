"""Money text in and out, and the one translation layer with complete zh and en catalogues."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest

from quanyi.core.errors import InvalidInput
from quanyi.core.money import Money, format_minor, parse_minor
from quanyi.i18n import LANGUAGES, catalog, pick_language, raw_t, t


@pytest.mark.parametrize(
    ("text", "currency", "minor", "shown"),
    [
        ("15.00", "CNY", 1500, "15.00"),
        ("15.5", "CNY", 1550, "15.50"),
        ("15", "CNY", 1500, "15.00"),
        ("0.01", "CNY", 1, "0.01"),
        (" 9.90 ", "CNY", 990, "9.90"),
        ("007.10", "USD", 710, "7.10"),
        ("999999999999.99", "CNY", 99999999999999, "999999999999.99"),
        ("250", "XTR", 250, "250"),
        ("1000", "JPY", 1000, "1000"),
    ],
)
def test_amounts_parse_to_exact_minor_units_and_format_back(text, currency, minor, shown):
    money = Money.parse(text, currency)
    assert money == Money(minor, currency)
    assert isinstance(money.minor, int)
    assert money.format_plain() == shown == format_minor(minor, currency)
    assert Money.parse(money.format_plain(), currency) == money  # round trip


@pytest.mark.parametrize(
    ("text", "currency"),
    [
        ("1.001", "CNY"),  # more precision than the currency has
        ("0.005", "CNY"),
        ("1.5", "XTR"),  # Stars are whole
        ("1.0", "XTR"),
        ("-1", "CNY"),
        ("-0.01", "CNY"),
        ("+1", "CNY"),
        ("1e3", "CNY"),
        ("1E-2", "CNY"),
        ("inf", "CNY"),
        ("NaN", "CNY"),
        ("", "CNY"),
        (" ", "CNY"),
        ("１２", "CNY"),  # full-width digits
        ("１２.００", "CNY"),
        ("٣", "CNY"),  # Arabic-Indic digit
        ("1,000.00", "CNY"),
        ("1_000", "CNY"),
        ("15.", "CNY"),
        (".5", "CNY"),
        ("¥15", "CNY"),
        ("15 00", "CNY"),
        ("9999999999999", "CNY"),  # past any real price, and past what a BIGINT column wants
        ("1" * 40, "CNY"),
        ("15.00", "ABC"),  # unknown currency
    ],
)
def test_amounts_that_are_not_plain_decimal_text_are_refused(text, currency):
    with pytest.raises(InvalidInput):
        Money.parse(text, currency)
    with pytest.raises(InvalidInput):
        parse_minor(text, currency)


def test_money_never_goes_through_float_and_multiplies_only_by_whole_numbers():
    assert Money.parse("0.10", "CNY") * 3 == Money(30, "CNY")  # 0.1 * 3 in float is 0.30000000000000004
    assert Money.parse("19.99", "CNY") * 20 == Money(39980, "CNY")
    with pytest.raises(TypeError):
        Money(100, "CNY") * 1.5  # type: ignore[operator]
    with pytest.raises(TypeError):
        Money(100, "CNY") * True
    with pytest.raises(InvalidInput):
        Money.parse(15.0, "CNY")  # type: ignore[arg-type]


def test_money_is_shown_with_its_symbol_and_stars_without_decimals():
    assert str(Money(1500, "CNY")) == "¥15.00"
    assert str(Money(5, "USD")) == "$0.05"
    assert str(Money(250, "XTR")) == "250 ⭐"
    assert Money(250, "XTR").format_plain() == "250"
    assert str(Money(1234, "USDT")) == "12.34 USDT"
    assert format_minor(-150, "CNY") == "-1.50"


def _placeholders(text: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}


def _flatten(node: dict, prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in node.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_zh_and_en_have_the_same_keys_and_the_same_placeholders():
    zh, en = _flatten(catalog("zh")), _flatten(catalog("en"))
    assert set(zh) == set(en), f"only zh: {sorted(set(zh) - set(en))}, only en: {sorted(set(en) - set(zh))}"
    assert len(zh) > 40
    for key in zh:
        assert isinstance(zh[key], str) and zh[key].strip() and en[key].strip(), key
        assert _placeholders(zh[key]) == _placeholders(en[key]), key
    assert re.search(r"[\u4e00-\u9fff]", zh["delivery_header"]) and not re.search(
        r"[\u4e00-\u9fff]", en["delivery_header"]
    )


def test_every_text_the_code_asks_for_exists_in_both_languages():
    source = Path(__file__).resolve().parent.parent / "quanyi"
    asked: set[str] = set()
    for path in source.rglob("*.py"):
        asked.update(re.findall(r"\b(?:raw_)?t\(\s*\w+\s*,\s*\"([a-z_.]+)\"", path.read_text()))
    assert len(asked) > 25, asked  # the scan finds the calls
    for lang in LANGUAGES:
        missing = sorted(key for key in asked if key not in _flatten(catalog(lang)))
        assert not missing, (lang, missing)
    for status in ("pending", "paid", "delivered", "cancelled", "failed", "refunded"):  # looked up as status.<name>
        assert raw_t("zh", f"status.{status}") and raw_t("en", f"status.{status}")


def test_values_put_into_chat_texts_are_html_escaped():
    text = t("en", "delivery_header", number="<b>Q1&2</b>")
    assert "&lt;b&gt;Q1&amp;2&lt;/b&gt;" in text and "<code>" in text
    assert raw_t("en", "pay_button", amount="<¥1>") == "💳 Pay <¥1>"


@pytest.mark.parametrize(
    ("code", "lang"),
    [
        (None, "zh"),
        ("", "zh"),
        ("en", "en"),
        ("en-US", "en"),
        ("EN_gb", "en"),
        ("zh", "zh"),
        ("zh-hans", "zh"),
        ("zh-Hant-TW", "zh"),
        ("ru", "zh"),
        ("fr-CA", "zh"),
        ("enx", "zh"),
    ],
)
def test_pick_language_maps_telegram_codes_to_ours_with_zh_as_default(code, lang):
    assert pick_language(code) == lang


def test_an_unknown_language_falls_back_to_zh():
    assert t("ru", "sold_out") == t("zh", "sold_out")
