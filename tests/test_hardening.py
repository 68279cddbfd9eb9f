"""Hardening checklist (issue 8, item 5): one test per item."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from sqlalchemy import select

from quanyi.core.catalog.products import add_product
from quanyi.core.errors import ConfigError, Forbidden, StockFileError
from quanyi.core.models import StockItem
from quanyi.core.money import Money
from quanyi.core.payments.base import build_payment_hub
from quanyi.core.sales.orders import buyer_order
from quanyi.core.stock.items import import_stock
from quanyi.core.stock.stockfile import read_stock_file
from quanyi.webhooks import create_app
from tests.conftest import make_settings
from tests.helpers import new_order, product_with_stock

ROOT = Path(__file__).resolve().parent.parent / "quanyi"
EVIL = "<b>x</b><script>alert(1)</script>"


@pytest.mark.parametrize(
    "overrides",
    [
        {"stripe_webhook_secret": "whsec_0123456789abcdef"},  # a webhook secret without the API key
        {"cryptobot_token": "changeme"},
        {"cryptobot_token": "1234567"},  # too short to be a real token
        {"epay_gateway": "https://pay.example", "epay_pid": "1001", "epay_key": "   "},
    ],
)
def test_an_enabled_payment_method_with_an_empty_or_placeholder_secret_refuses_to_start(tmp_path, keyring, overrides):
    with pytest.raises(ConfigError, match="placeholder|needs"):
        build_payment_hub(make_settings(tmp_path, **overrides), keyring)


_SECRETISH = re.compile(r"(^|_)(sign|signature|sig|hmac|digest|mac|token_hash|secret_hash)($|_)", re.IGNORECASE)
# Comparisons that hold no secret: the audit chain's own hash check runs offline, nobody can time it.
_ALLOWED = {("core/platform/audit.py", "digest != rec.hash")}


def _names(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        return [node.attr]
    if isinstance(node, ast.Call):
        return _names(node.func)
    if isinstance(node, ast.Subscript):
        if isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
            return [node.slice.value]
        return _names(node.value)
    return []


def _is_column(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id[:1].isupper()


def test_signatures_and_digests_are_never_compared_with_equality():
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Compare) or not any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
                continue
            sides = [node.left, *node.comparators]
            if any(isinstance(side, ast.Constant) for side in sides):
                continue  # against a literal (a sign_type, an empty string): nothing secret
            if any(_is_column(side) for side in sides):
                continue  # Model.column == value builds SQL: the database compares a hash, not Python
            names = [n for side in sides for n in _names(side) if not n.isupper() and _SECRETISH.search(n)]
            where = (str(path.relative_to(ROOT)), ast.unparse(node))
            if names and where not in _ALLOWED:
                found.append((*where, node.lineno))
    assert found == [], "use hmac.compare_digest for these"


def test_the_scan_catches_an_equality_on_a_signature():
    tree = ast.parse("ok = given_sign == expected_sign")
    [compare] = [n for n in ast.walk(tree) if isinstance(n, ast.Compare)]
    assert [n for side in (compare.left, *compare.comparators) for n in _names(side) if _SECRETISH.search(n)]


@pytest.mark.parametrize("backend", ["sqlite"])  # page rendering, not storage
async def test_html_in_a_product_name_is_escaped_on_the_web_catalogue(core):
    async with core.db.transaction() as session:
        await add_product(session, sku="EVIL", name=EVIL, kind="card_key", price=Money(100, "CNY"))
    response = await create_app(core).test_client().get("/")
    page = await response.get_data(as_text=True)
    assert response.status_code == 200
    assert "<script>" not in page and "<b>x</b>" not in page
    assert "&lt;b&gt;x&lt;/b&gt;&lt;script&gt;" in page


async def test_a_stock_file_is_read_as_data_and_a_formula_is_stored_as_a_code(core, tmp_path):
    await product_with_stock(core, tmp_path, sku="VIP", units=0)
    formula = "=cmd|' /C calc'!A0"
    path = tmp_path / "codes.csv"
    path.write_text(f'serial,secret,expires_at\n,"{formula}",\nS2,@SUM(1+1),\n', encoding="utf-8")
    report = await import_stock(core.db, core.keyring, "VIP", path)
    assert report.imported == 2
    async with core.db.read() as session:
        items = list(await session.scalars(select(StockItem)))
    assert sorted(core.keyring.decrypt(i.key_id, i.secret_ct, _aad(i)) for i in items) == [formula, "@SUM(1+1)"]


def _aad(item: StockItem) -> bytes:
    from quanyi.core.stock.items import item_aad

    return item_aad(item.product_id)


def test_a_stock_file_over_the_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    path = tmp_path / "big.txt"
    path.write_bytes(b"A" * 2048 + b"\n")
    opened = []
    monkeypatch.setattr(Path, "open", lambda *a, **k: opened.append(a) or (_ for _ in ()).throw(AssertionError))
    with pytest.raises(StockFileError, match="larger than"):
        list(read_stock_file(path, max_bytes=1024))
    assert opened == []


async def test_an_orders_codes_are_shown_to_its_buyer_only(core, tmp_path):
    await product_with_stock(core, tmp_path, units=2)
    placed = await new_order(core, user_id=1001)
    async with core.db.read() as session:
        assert (await buyer_order(session, placed.order.number, 1001)).id == placed.order.id
        with pytest.raises(Forbidden):  # a forged CodesCb from another user names the same order
            await buyer_order(session, placed.order.number, 1002)


async def test_no_secret_reaches_any_log_over_a_whole_sale_paid_over_http_with_a_link(tmp_path, caplog, db, keyring):
    """Checklist: logs captured at DEBUG (SQL statements and parameters included) over an EPay
    sale notified through the HTTP app, its delivery, a redemption-link order, its page and its
    use, and a re-display: no card key, no link token, no merchant key, no bot token."""
    import logging

    from quanyi.bot.outbox_sender import OutboxSender
    from quanyi.core.models import OutboxMessage, RedeemToken
    from quanyi.core.platform.outbox import Outgoing
    from quanyi.core.services import build_core
    from quanyi.webhooks import create_app
    from tests.helpers import new_order, product_with_stock, sandbox_event
    from tests.test_http_payments import KEY, epay_settings, notify_params, send, signed
    from tests.test_redeem import link_product

    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="sqlalchemy.engine")
    bot_token = "123456:AAH-secret-bot-token-for-the-log-test"
    core = build_core(epay_settings(tmp_path, bot_token=bot_token), db=db, keyring=keyring)
    client = create_app(core).test_client()
    codes = await product_with_stock(core, tmp_path, units=3)
    placed = await new_order(core, method="epay", quantity=2, user_id=4242)
    assert await send(client, signed(notify_params(placed.order.number, money="30.00"))) == (200, "success")
    product = await link_product(core)
    linked = await new_order(core, sku=product.sku, user_id=4243)
    await core.fulfiller.submit(sandbox_event(linked.order.number, linked.order.amount))
    sender = OutboxSender(core, None)  # type: ignore[arg-type]  (render only, nothing is sent)
    async with core.db.read() as session:
        deliveries = list(await session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "delivery")))
    texts = []
    for message in deliveries:
        payload = {"order_id": int(json.loads(message.payload)["order_id"])}
        texts += await sender.render(Outgoing(message.id, message.chat_id, "delivery", payload, "zh", 0))
    shown = "\n".join(texts)
    assert sum(code in shown for code in codes) == 2
    tokens = [
        part.split("/r/", 1)[1].split()[0].split("<")[0].split('"')[0] for part in shown.split("\n") if "/r/" in part
    ]
    assert tokens
    for token in tokens:
        assert (await client.get(f"/r/{token}")).status_code == 200
        assert (await client.post(f"/r/{token}", form={"confirm": "1"})).status_code in (200, 303)
    async with core.db.read() as session:
        assert await session.scalar(select(RedeemToken.uses)) == 1

    logged = "\n".join(f"{r.name} {r.getMessage()} {r.args!r}" for r in caplog.records)
    assert len(caplog.records) > 20  # the capture saw the whole run
    for secret in [*codes, *tokens, KEY, bot_token]:
        assert secret not in logged, "a secret reached a log"
    await core.close()
