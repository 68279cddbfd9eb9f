"""One language per message (issue 17): no English words in Chinese texts and no Chinese in
English ones, status values said in words in the operator's chat, charts labelled in the
operator's language, /audit changes as readable lines, and button presses that change nothing
leave no audit record."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from quanyi.bot.operator.reports import chart_labels
from quanyi.core.books import charts
from quanyi.core.books.reports import SalesRow
from quanyi.core.catalog.service import ProductChanges
from quanyi.core.models import AuditRecord, Recharge
from quanyi.core.platform import audit
from quanyi.core.services import Core
from quanyi.core.stock import allocations as channels
from quanyi.core.stock.service import AllocationChange
from quanyi.i18n import catalog, raw_t
from tests.helpers import new_order, product_with_stock, sandbox_event
from tests.test_bot_chat import shop, tg  # noqa: F401  (fixtures)
from tests.test_links_chat import add_recharge_product, make_sender, recharge_order, render  # noqa: F401
from tests.test_pricing_ops_chat import make_coupon

ADMIN = 9000
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are exactly "
    "the same as a current content and reply markup of the message"
)
CJK = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uff00-\uffef]")
# Status values as the code spells them: none may reach a message as they are.
STATUS_WORDS = re.compile(
    r"\b(applied|succeeded|success|failed|pending|manual|needs_review|refund_pending|refunded|fallback|"
    r"processing|simulated_failure|delivered|day|product|channel|distributor)\b"
)

# --- every text in the language files ---------------------------------------------------------

# Names and acronyms a Chinese text may carry as they are: brands, file formats, units, and the
# examples an operator types (SKU values, date patterns).
NAMES = frozenset(
    {"API", "CSV", "TXT", "ID", "IP", "MB", "QQ", "SKU", "URL", "UTC", "NAME", "YYYY-MM-DD", "csv", "txt", "xlsx"}
    | {"Telegram", "Stars", "Stripe", "Crypto", "Pay", "Webhook", "HMAC-SHA", "quanyi", "VIP", "MUSIC"}
)
# Texts that name a file's columns or an API's fields, which are spelled as the file and the API spell them.
# Texts that name a command to type, and the language switch (each language named in itself).
LITERAL = {"reconcile.usage", "partners.secret", "console.login_how", "console.switch_language"}


def _texts(lang: str) -> Iterator[tuple[str, str]]:
    def walk(node: dict[str, Any], prefix: str) -> Iterator[tuple[str, str]]:
        for key, value in node.items():
            if isinstance(value, dict):
                yield from walk(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", str(value)

    yield from walk(catalog(lang), "")


def _words(text: str) -> list[str]:
    """The ASCII words of a text a reader sees, less markup, placeholders, links, commands and what
    follows them (what an operator types: ``/report csv day``), and ``key=value`` examples."""
    text = re.sub(r"<code>.*?</code>", " ", text)
    text = re.sub(r"<[^>]+>|&[a-z]+;", " ", text)
    text = re.sub(r"\{[a-z_]+\}", " ", text)
    text = re.sub(r"https?://\S+", " ", text)
    text = re.sub(r"(?<![\w.])/[a-z_]+(?:[ ]+[A-Za-z0-9_|:.\[\]-]+)*", " ", text)
    text = re.sub(r"\b[a-z_]+=\S*|\b\w+:\w+|\S*\|\S*", " ", text)  # key=value, type:id, a|b
    return re.findall(r"[A-Za-z][A-Za-z_-]+", text)


def test_chinese_texts_have_no_english_words_and_english_texts_no_chinese() -> None:
    english = {
        key: sorted(set(found) - NAMES)
        for key, text in _texts("zh")
        if key not in LITERAL and not key.endswith(".lang")
        if (found := _words(text)) and set(found) - NAMES
    }
    assert english == {}
    chinese = {key: text for key, text in _texts("en") if CJK.search(text) and key not in LITERAL}
    assert chinese == {}


def test_the_scan_finds_an_english_word_in_a_chinese_text() -> None:
    assert _words("↩️ 订单 <code>{number}</code> 已退款 {amount}（succeeded）。") == ["succeeded"]
    assert _words("用法：/report csv|xlsx day|product — 导出文件") == []


# --- status words in the operator's chat -----------------------------------------------------


async def _failed_recharge(core: Core, lang: str) -> str:
    """A recharge order paid, failed at the supplier with its code ``simulated_failure``, refunded."""
    await add_recharge_product(core)
    order = await recharge_order(core, lang=lang)
    async with core.db.transaction() as session:
        await session.execute(
            update(Recharge)
            .where(Recharge.order_id == order.id)
            .values(status="failed", failure_reason="simulated_failure", resolution="refunded")
        )
    await core.sales.refund_order(order.number, line_no=None, reason="recharge failed", actor="cli", manual=False)
    return order.number


@pytest.mark.parametrize("backend", ["sqlite"])  # chat texts do not depend on the database
@pytest.mark.parametrize(
    ("lang", "said"),
    [
        ("zh", ["已入账", "充值失败", "模拟失败（测试供应商）", "已退款", "已原路退回"]),
        ("en", ["applied to the order", "failed", "simulated failure (test supplier)", "paid back by the provider"]),
    ],
)
async def test_an_order_sheet_says_payments_recharges_and_refunds_in_the_operators_words(core, shop, lang, said):
    number = await _failed_recharge(core, lang)
    admin = shop.user(ADMIN, lang)
    await admin.send(f"/order {number}")
    sheet = (await admin.expect(number)).plain
    for words in said:
        assert words in sheet
    if lang == "zh":
        assert not STATUS_WORDS.search(sheet), sheet
    else:
        assert not CJK.search(sheet.replace("（", "(")), sheet


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize(
    ("lang", "why"), [("zh", "原因：模拟失败（测试供应商）"), ("en", "simulated failure (test supplier)")]
)
async def test_a_suppliers_reason_code_reaches_the_buyer_in_words(core, tg, make_sender, lang, why):
    await add_recharge_product(core)
    order = await recharge_order(core, lang=lang)
    async with core.db.transaction() as session:
        await session.execute(
            update(Recharge).where(Recharge.order_id == order.id).values(failure_reason="simulated_failure")
        )
    text = await render(
        core, make_sender(core), "recharge_failed", {"order_id": order.id, "resolution": "refunded"}, lang
    )
    assert why in text and "simulated_failure" not in text


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize(("lang", "done"), [("zh", "已原路退回"), ("en", "paid back by the provider")])
async def test_a_refund_done_in_chat_says_its_state_in_words(core, shop, tmp_path, lang, done):
    await product_with_stock(core, tmp_path, units=2)
    placed = await new_order(core, quantity=1)
    await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount))
    admin = shop.user(ADMIN, lang)
    await admin.send(f"/order {placed.order.number}")
    sheet = await admin.expect(placed.order.number)
    await admin.press(sheet, raw_t(lang, "admin_refund_order"))
    await admin.expect(placed.order.number)
    await admin.send("the buyer asked")
    answer = (await admin.expect(lambda m: "↩️" in m.plain)).plain
    assert done in answer
    assert "succeeded" not in answer if lang == "zh" else not CJK.search(answer)


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize(
    ("lang", "button", "caption"), [("zh", "CSV · 按天", "按天销售"), ("en", "CSV · by day", "Sales by day")]
)
async def test_report_buttons_and_files_are_named_in_the_operators_language(core, shop, lang, button, caption):
    admin = shop.user(ADMIN, lang)
    await admin.send("/report")
    overview = await admin.expect(lambda m: bool(m.buttons()))
    labels = [b["text"] for b in overview.buttons()]
    assert button in labels
    if lang == "zh":
        assert not any(STATUS_WORDS.search(label) for label in labels), labels
    await admin.press(overview, button)
    document = await admin.expect(lambda m: m.kind == "document")
    assert document.plain.startswith(caption)


# --- charts ------------------------------------------------------------------------------


def _rows() -> list[SalesRow]:
    return [SalesRow("2026-12-01", "", "CNY", 1, 1, 1500), SalesRow("2026-12-02", "", "CNY", 2, 2, 3000)]


def _labels_of(figure: Any) -> list[str]:
    axes = figure.axes[0]
    return [axes.get_title(), axes.get_ylabel(), axes.get_xlabel()]


@pytest.mark.filterwarnings("ignore:Glyph")  # drawn without a Chinese font where none is installed
def test_a_chart_is_labelled_in_the_operators_language(monkeypatch: pytest.MonkeyPatch) -> None:
    if charts.cjk_family() is None:  # no Chinese font on this machine: draw as if there were one
        monkeypatch.setattr(charts, "cjk_family", lambda: "DejaVu Sans")
    zh = _labels_of(charts.net_by_day_figure(_rows(), chart_labels("zh")))
    assert zh == ["每日净销售额", "净额（CNY）", "日期（2026-12-01 – 2026-12-02）"]
    en = _labels_of(charts.net_by_day_figure(_rows(), chart_labels("en")))
    assert en == ["Net sales per day", "net (CNY)", "day (2026-12-01 – 2026-12-02)"]
    assert charts.net_by_day_png(_rows(), chart_labels("zh"))[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_a_chinese_font_the_chart_keeps_english_labels_rather_than_empty_boxes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(charts, "cjk_family", lambda: None)
    assert _labels_of(charts.net_by_day_figure(_rows(), chart_labels("zh")))[0] == "Net sales per day"


# --- /audit: readable lines, and presses that change nothing ---------------------------------


async def _trail(core: Core) -> list[AuditRecord]:
    async with core.db.read() as session:
        return list((await session.scalars(select(AuditRecord).order_by(AuditRecord.seq))).all())


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize(
    ("lang", "line", "who"),
    [
        ("zh", "价格 ¥15.00 → ¥12.00", "运营 9000 · 聊天 · 修改商品 · 商品 VIP"),
        ("en", "Price ¥15.00 → ¥12.00", "operator 9000 · chat · Product changed · Product VIP"),
    ],
)
async def test_audit_shows_a_change_as_a_readable_line(core, shop, tmp_path, lang, line, who):
    await product_with_stock(core, tmp_path, units=1)
    with audit.acting(f"operator:{ADMIN}", "chat"):
        await core.catalog.update_product("VIP", ProductChanges(price="12.00"))
    admin = shop.user(ADMIN, lang)
    await admin.send("/audit object product:VIP")
    shown = (await admin.expect("VIP")).plain
    assert line in shown
    assert who in shown
    assert '"price"' not in shown and "{" not in shown


async def test_setting_what_is_already_set_writes_no_audit_record(core: Core, tmp_path: Path) -> None:
    await product_with_stock(core, tmp_path, units=5)
    async with core.db.transaction() as session:
        await channels.add_channel(session, "partner1", "Partner One")
    with audit.acting("operator:9000", "chat") as first:
        await core.catalog.update_product("VIP", ProductChanges(price="12.00", active=True))
        await core.stock.change_allocation(AllocationChange("VIP", "partner1", shared=True))
    assert first.recorded == 3  # the price (on sale already: not a change), the allocation and its sharing
    with audit.acting("operator:9000", "chat") as again:
        await core.catalog.update_product("VIP", ProductChanges(price="12.00", active=True))
        await core.stock.change_allocation(AllocationChange("VIP", "partner1", shared=True))
    assert again.recorded == 0
    assert [r.action for r in await _trail(core)] == ["update product", "create allocation", "share pool"]


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_button_that_changes_nothing_is_no_audit_record(core, shop) -> None:
    coupon_id = await make_coupon(core)
    admin = shop.user(ADMIN, "en")
    await admin.send("/coupons")
    listing = await admin.expect(lambda m: bool(m.buttons()))
    pause = raw_t("en", "pricing_ops.btn_disable", id=coupon_id)
    await admin.press(listing, pause)
    await admin.expect(lambda m: m.kind == "edit")
    shop.expected_refusals.add(NOT_MODIFIED)  # the view is redrawn as it was: Telegram says so
    await admin.press(listing, pause)  # the same stale button again: the coupon is off already
    await admin.press(listing, raw_t("en", "pricing_ops.btn_export", id=coupon_id))  # taking codes out is recorded
    await admin.expect(lambda m: m.kind == "document")
    await admin.send("/admin")
    menu = await admin.expect(lambda m: bool(m.buttons()))
    await admin.press(menu, raw_t("en", "ops.btn_stock"))  # looking is not changing
    await admin.expect(lambda m: m.kind == "edit" and m.message_id == menu.message_id)
    for _ in range(100):  # a command's own record is appended after the handler answered
        actions = [r.action for r in await _trail(core)]
        if actions.count("chat /admin") == 1:
            break
        await asyncio.sleep(0.02)
    assert actions == [
        "chat /coupons",
        "update coupon",
        "chat button pc",
        "export coupon codes",
        "chat button pc",
        "chat /admin",
    ]


def test_a_risk_decisions_reason_is_said_in_the_operators_language() -> None:
    from datetime import UTC, datetime

    from quanyi.bot.operator.risk import decision_reason
    from quanyi.core.risk.rules import reason_metric
    from quanyi.core.risk.views import DecisionView

    stored = "too many unpaid orders (at most 3); pay or cancel one first"
    metric, limit = reason_metric(stored) or (None, "")
    decision = DecisionView(
        1, "block", "open", stored, 1001, None, None, "bot", "VIP", 1, 1500, "CNY", datetime.now(UTC), metric, limit
    )
    assert "未支付订单过多（最多 3 个）" in decision_reason("zh", decision)
    assert "at most 3" in decision_reason("en", decision)
    own = DecisionView(
        2, "block", "open", "chargebacks", 1001, None, None, "bot", "VIP", 1, 1500, "CNY", datetime.now(UTC)
    )
    assert decision_reason("zh", own) == "chargebacks"  # the operator's own words, as typed
