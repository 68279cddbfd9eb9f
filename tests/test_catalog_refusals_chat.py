"""The catalogue's refusals in the operator's language (issue 17 item 8): coupons, promotions,
bundles and product edits refused in chat say why in zh or en, and a zh reply carries no
English words. The reasons are core's (``err_catalog``), shown through ``reason_in``."""

from __future__ import annotations

import pytest

from quanyi.bot.render import reason_in
from quanyi.core.catalog.admin_views import MAX_BATCH
from quanyi.core.catalog.service import ProductChanges
from quanyi.core.errors import InvalidInput, QuanyiError
from quanyi.core.sales.orders import Buyer
from quanyi.i18n import raw_t, t
from tests.helpers import product_with_stock
from tests.test_bot_chat import shop, tg  # noqa: F401  (fixtures)
from tests.test_one_language import CJK, NAMES, _words

ADMIN = 9000  # make_settings puts this id in QUANYI_ADMIN_IDS
BUYER = 4242


def _one_language(lang: str, text: str) -> None:
    if lang == "zh":
        assert not set(_words(text)) - NAMES, text
    else:
        assert not CJK.search(text), text


def _refused(lang: str, key: str, **values: object) -> str:
    return raw_t(lang, "pricing_ops.refused", reason=raw_t(lang, key, **values))


REFUSALS = [
    ("/coupon_new name=Spring off=10% uses=0", "err_catalog.bad_count", {"typed": "uses"}),
    ("/coupon_new name=Spring off=5..0", "err_catalog.not_an_amount", {"text": "5..0"}),
    ("/coupon_new name=Spring off=5 codes=x", "err_catalog.codes_count", {"most": MAX_BATCH}),
    ("/coupon_on 999", "err_catalog.no_coupon", {"coupon_id": 999}),
    ("/promo_new name=Three units=1 pay=0.5", "err_catalog.units_price", {}),
    ("/promo_new name=Three spend=50 off=8 stacking=maybe", "err_catalog.stacking", {}),
    ("/promo_new name=Three spend=50 off=8 colour=red", "err_catalog.unknown_field", None),
    ("/bundle_new BOX name=Box price=25 parts=X9:1", "err_catalog.no_product", {"sku": "X9"}),
    ("/bundle_new BOX name=Box price=25 parts=VIP:1,VIP:2", "err_catalog.part_twice", {"part": "VIP"}),
    ("/bundle_parts VIP VIP:1", "err_catalog.not_a_bundle", {"bundle": "VIP"}),
]


@pytest.mark.parametrize("backend", ["sqlite"])  # chat texts do not depend on the database
@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_pricing_refusals_are_said_in_the_operators_language(core, shop, tmp_path, lang):
    await product_with_stock(core, tmp_path, sku="VIP", units=1)
    admin = shop.user(ADMIN, lang)
    for command, key, values in REFUSALS:
        await admin.send(command)
        reply = (await admin.expect()).plain
        if values is None:  # the values are the typed word and the known fields
            assert raw_t(lang, key, word="colour=red", known="|").split("|")[0] in reply, reply
        else:
            assert reply.startswith(_refused(lang, key, **values)), (command, reply)
        _one_language(lang, reply)


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_a_product_edit_refused_by_the_catalogue_says_why_in_the_operators_language(core, shop, tmp_path, lang):
    await product_with_stock(core, tmp_path, sku="VIP", units=1)
    await core.catalog.update_product("VIP", ProductChanges(floor="12.00"))
    admin = shop.user(ADMIN, lang)
    await admin.send("/product VIP")
    card = await admin.expect(lambda m: bool(m.buttons()))
    await admin.press(card, raw_t(lang, "phoneops.btn_price"))
    await admin.expect("¥15.00")
    await admin.send("10")
    refused = (await admin.expect()).plain
    assert refused == t(lang, "phoneops.value_refused", reason=raw_t(lang, "err_catalog.price_under_floor"))
    _one_language(lang, refused)
    await admin.send("/cancel")
    await admin.expect()

    await admin.send("/product VIP")
    card = await admin.expect(lambda m: bool(m.buttons()))
    await admin.press(card, raw_t(lang, "phoneops.btn_name"))
    await admin.expect("VIP membership")
    await admin.send("名" * 201)
    refused = (await admin.expect()).plain
    assert refused == t(lang, "phoneops.value_refused", reason=raw_t(lang, "err_catalog.product_name"))
    _one_language(lang, refused)


async def test_support_refusals_say_why_in_both_languages(core):
    buyer = Buyer(BUYER, BUYER, "zh")
    refused: list[QuanyiError] = []
    for attempt in (
        core.support.open_ticket(buyer, "   "),
        core.support.reply(999, "hello", actor="operator:9000"),
    ):
        with pytest.raises(QuanyiError) as caught:
            await attempt
        refused.append(caught.value)
    ticket = await core.support.open_ticket(buyer, "my code does not work")
    await core.support.close(ticket, actor="operator:9000")
    with pytest.raises(InvalidInput) as closed:
        await core.support.buyer_message(ticket, BUYER, "still broken")
    refused.append(closed.value)
    assert [exc.key for exc in refused] == ["err_support.empty", "err_support.no_ticket", "err_support.closed"]
    assert "status" in closed.value.details  # the doors still tell a closed ticket by it
    for exc in refused:
        zh, en = reason_in("zh", exc), reason_in("en", exc)
        assert CJK.search(zh) and not set(_words(zh)) - NAMES, zh
        assert not CJK.search(en) and en != exc.key, en
    assert reason_in("zh", refused[2]) == f"工单 #{ticket} 已关闭"
