"""Messages that say only what is true (issue 17): plain toasts, and refund, recharge and
promotion texts that match what happened to the order."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from quanyi.bot.outbox_sender import OutboxSender
from quanyi.core.catalog import promotions
from quanyi.core.models import Payment, Product
from quanyi.core.platform import outbox
from quanyi.core.platform.scheduler import Jobs
from quanyi.core.sales.fulfilment import PaymentOutcome
from quanyi.core.sales.refunds import refund_order, refund_payment
from quanyi.i18n import raw_t
from tests.fakebot import BotMessage, FakeTelegram, FakeUser
from tests.helpers import new_order, product_with_stock, sandbox_event
from tests.test_bot_chat import NUMBER, catalogue_shown, open_product, shop, tg
from tests.test_links_chat import add_link_product, add_recharge_product, make_sender, recharge_order, render
from tests.test_recharge import _time_out, rig

__all__ = ["make_sender", "rig", "shop", "tg"]


async def _cancelled_sandbox_order(user: FakeUser, lang: str) -> tuple[str, BotMessage]:
    card = await open_product(user, "VIP membership")
    await user.press(card, "2")
    methods = await user.expect(lambda m: any(b.get("callback_data", "").startswith("m:") for b in m.buttons()))
    await user.press(methods, raw_t(lang, "method_sandbox"))
    created = await user.expect(lambda m: NUMBER.search(m.plain) is not None)
    match = NUMBER.search(created.plain)
    assert match
    await user.press(created, data=f"c:{match.group(0)}")
    await user.expect(lambda m: m.message_id == created.message_id)
    return match.group(0), created


@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_a_refused_cancel_toast_is_plain_text_without_tags(core, shop: FakeTelegram, tmp_path, lang):
    await product_with_stock(core, tmp_path, units=5)
    user = shop.user(1001, lang)
    number, created = await _cancelled_sandbox_order(user, lang)

    again = await user.press(created, data=f"c:{number}")
    answer = await shop.callback_answer(again)

    assert answer.get("show_alert") in ("true", True)
    assert number in answer["text"]
    assert all("<" not in a.get("text", "") for a in shop.callback_answers.values())


# --- refund messages say what the refund did ------------------------------------------------


async def _buyer_texts(core, lang: str | None = None) -> list[tuple[str, str]]:
    """Every message queued so far, rendered by the real outbox renderers, oldest first."""
    sender = OutboxSender(core, bot=None)  # type: ignore[arg-type]  # rendering needs no bot
    due = await outbox.claim_due(core.db, limit=50, lease=timedelta(minutes=1))
    texts = []
    for message in sorted(due, key=lambda m: m.id):
        if lang is not None:
            message = dataclasses.replace(message, language=lang)
        parts = await sender.render(message)
        texts.append((message.kind, " ".join(p for p in parts if isinstance(p, str))))
    return texts


def _refunded(texts: list[tuple[str, str]]) -> list[str]:
    return [text for kind, text in texts if kind == "refunded"]


@pytest.mark.parametrize(
    ("lang", "void", "unchanged", "codes_void"),
    [("zh", "作废", "订单本身未受影响", "卡密已作废"), ("en", "void", "order itself is unchanged", "codes are void")],
)
async def test_refunding_a_second_payment_does_not_claim_codes_were_voided_and_the_order_refund_does(
    core, tmp_path, lang, void, unchanged, codes_void
):
    await product_with_stock(core, tmp_path, units=2)
    placed = await new_order(core, quantity=1)
    number, amount = placed.order.number, placed.order.amount
    await core.fulfiller.submit(sandbox_event(number, amount, txn="PAY-1"))
    assert await core.fulfiller.submit(sandbox_event(number, amount, txn="PAY-2")) == PaymentOutcome.NEEDS_REVIEW
    async with core.db.read() as session:
        second = await session.scalar(select(Payment.id).where(Payment.provider_txn_id == "PAY-2"))
    await refund_payment(core, int(second), reason="paid twice", actor="cli")

    [text] = _refunded(await _buyer_texts(core, lang))
    assert number in text and unchanged in text
    assert void not in text

    # The order itself refunded afterwards: now its codes were voided, and it says so.
    await refund_order(core, number, reason="x", actor="cli")
    [text] = _refunded(await _buyer_texts(core, lang))
    assert number in text and codes_void in text


@pytest.mark.parametrize(("lang", "gone"), [("zh", "兑换链接已作废"), ("en", "links no longer work")])
async def test_a_refunded_link_order_says_its_links_no_longer_work_not_that_codes_were_voided(
    core, tmp_path, lang, gone
):
    await add_link_product(core)
    placed = await new_order(core, sku="GYM", quantity=1)
    await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount, txn="PAY-1"))
    await refund_order(core, placed.order.number, reason="x", actor="cli")

    [text] = _refunded(await _buyer_texts(core, lang))
    assert gone in text
    assert "卡密" not in text and "codes" not in text


# --- a failed recharge: failed, why, then refunded ------------------------------------------


async def test_a_timed_out_recharge_says_failed_and_why_before_it_says_refunded(rig):
    r = await rig(complete_after=None)
    number = await r.paid_order()
    await _time_out(r, number)
    await Jobs(r.core).recharges()

    texts = [(kind, text) for kind, text in await _buyer_texts(r.core) if kind in ("recharge_failed", "refunded")]
    assert [kind for kind, _ in texts] == ["recharge_failed", "refunded"]
    failed, refunded = texts[0][1], texts[1][1]
    assert failed.index("failed") < failed.index("did not complete it in time") < failed.index("refunded")
    assert number in refunded and "void" not in refunded and "codes" not in refunded


@pytest.mark.parametrize(("lang", "failed"), [("zh", "充值失败"), ("en", "Recharge failed")])
async def test_a_failed_recharge_message_gives_the_suppliers_reason(core, tg, make_sender, lang, failed):
    await add_recharge_product(core)
    order = await recharge_order(core, lang=lang)  # the supplier said "supplier timeout"
    sender = make_sender(core)

    text = await render(core, sender, "recharge_failed", {"order_id": order.id, "resolution": "refunded"}, lang)

    outcome = raw_t(lang, "deliver.failed_refunded").split("{")[0]
    assert text.index(failed) < text.index("supplier timeout") < text.index(outcome)


# --- promotions are advertised only where they can apply ------------------------------------


async def _card(user: FakeUser, label: str) -> str:
    await user.send("/start")
    catalogue = await user.expect(catalogue_shown)
    await user.press(catalogue, label)
    return (await user.expect(lambda m: m.kind == "edit")).plain


@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_a_product_card_shows_only_the_promotions_an_order_of_it_could_get(core, shop, tmp_path, lang):
    await product_with_stock(core, tmp_path, sku="VIP", units=5)
    await product_with_stock(core, tmp_path, sku="GAME", units=5)
    await add_recharge_product(core)
    async with core.db.transaction() as session:
        await session.execute(update(Product).where(Product.sku == "GAME").values(floor_price=1500))
        for name, kind, threshold, value in [
            ("ALL-ONE-OFF", "spend_off", 0, 100),
            ("TWO-FOR-ONE-AND-A-HALF", "units_price", 2, 150),
            ("THIRTY-FOR-TWENTY", "units_price", 30, 2000),  # one order holds 20 at most
        ]:
            await promotions.add_promotion(
                session, name=name, kind=kind, threshold=threshold, value=value, currency="CNY"
            )
    user = shop.user(1001, lang)

    card = await _card(user, "VIP membership")
    assert "ALL-ONE-OFF" in card and "TWO-FOR-ONE-AND-A-HALF" in card
    assert "THIRTY-FOR-TWENTY" not in card
    # One recharge is one unit: a "buy 2" offer can never apply to it.
    card = await _card(user, "Mobile top-up 50")
    assert "ALL-ONE-OFF" in card
    assert "TWO-FOR-ONE-AND-A-HALF" not in card and "THIRTY-FOR-TWENTY" not in card
    # Sold at its floor price: nothing can be taken off, so no offer is shown.
    card = await _card(user, "GAME membership")
    assert raw_t(lang, "pricing.promotions_title") not in card and "ALL-ONE-OFF" not in card


# --- a recharge never says stock is held -----------------------------------------------------


@pytest.mark.parametrize(("lang", "held"), [("zh", "库存已为您保留"), ("en", "held")])
async def test_a_placed_recharge_order_does_not_say_stock_is_held_and_a_card_key_order_does(
    core, shop, tmp_path, lang, held
):
    await add_recharge_product(core)
    await product_with_stock(core, tmp_path, sku="VIP", units=5)
    user = shop.user(1001, lang)
    await _card(user, "Mobile top-up 50")
    await user.send("13800138000")
    methods = await user.expect(lambda m: any(b.get("callback_data", "").startswith("m:") for b in m.buttons()))
    await user.press(methods, raw_t(lang, "method_sandbox"))
    created = await user.expect(lambda m: NUMBER.search(m.plain) is not None)
    assert "13800138000" in created.plain and held not in created.plain

    _, placed = await _cancelled_sandbox_order(user, lang)  # a card-key order: its keys are held
    assert held in placed.plain
