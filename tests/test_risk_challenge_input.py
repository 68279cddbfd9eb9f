"""The buyer's check question in chat takes only digits 0-9 (as typed, or full-width from a Chinese
input method): any other "digit" is a wrong answer, never a failed handler — the real aiogram
client against the fake Bot API, as in test_risk_chat."""

from __future__ import annotations

import pytest

from tests.helpers import product_with_stock
from tests.test_bot_chat import NUMBER, shop, tg  # noqa: F401  (fixtures)
from tests.test_risk_chat import BUYER, add_rule, answer_of, decision_statuses, order_two, orders, settings  # noqa: F401

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])  # the core's risk tests run on both databases

ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


async def test_a_superscript_or_arabic_indic_answer_is_a_wrong_answer_and_the_handler_carries_on(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, units=6)
    await add_rule(core, "every-order", "orders_per_user", 0, "challenge", 60)
    buyer = shop.user(BUYER, "zh")
    right = answer_of(await order_two(buyer))

    await buyer.send("²")  # str.isdigit() says yes, int() says no: this crashed the handler
    assert (await buyer.expect()).plain == "答案不对。还可以尝试 2 次，请重新输入数字。"
    await buyer.send(str(right).translate(ARABIC_INDIC))  # int() would read the right number
    assert (await buyer.expect()).plain == "答案不对。还可以尝试 1 次，请重新输入数字。"
    assert await orders(core) == 0 and await decision_statuses(core) == [("challenge", "open")]

    await buyer.send(str(right))
    await buyer.expect(lambda m: NUMBER.search(m.plain) is not None)
    assert await orders(core) == 1 and await decision_statuses(core) == [("challenge", "used")]


async def test_full_width_digits_from_a_chinese_input_method_answer_the_challenge(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, units=6)
    await add_rule(core, "every-order", "orders_per_user", 0, "challenge", 60)
    buyer = shop.user(BUYER, "zh")
    right = answer_of(await order_two(buyer))

    await buyer.send(str(right).translate(FULL_WIDTH))
    await buyer.expect(lambda m: NUMBER.search(m.plain) is not None)
    assert await orders(core) == 1 and await decision_statuses(core) == [("challenge", "used")]
