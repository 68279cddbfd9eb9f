"""Redemption link tokens in core: issuing, looking up, consuming uses, and keeping tokens secret."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import struct
from datetime import timedelta
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import select, update

from quanyi.core.catalog.products import add_product
from quanyi.core.errors import InvalidInput, NotFound, QuanyiError, TokenExpired, TokenUsedUp, TokenVoid
from quanyi.core.models import Base, Order, OrderLine, OrderStatus, Product, RedeemToken, Redemption, utcnow
from quanyi.core.money import Money
from quanyi.core.platform.db import Database
from quanyi.core.sales import redeem
from quanyi.core.sales.redeem import TokenState
from quanyi.core.services import Core, build_core
from tests.conftest import make_keyring, make_settings

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


async def link_product(core: Core, *, sku: str = "SPA", **fields: object) -> Product:
    async with core.db.transaction() as session:
        product = await add_product(
            session, sku=sku, name="Spa visit", kind="redeem_link", price=Money.parse("30.00", "CNY")
        )
        for name, value in fields.items():
            setattr(product, name, value)
    return product


async def paid_order(core: Core, product: Product, quantity: int = 1) -> tuple[int, int]:
    """An order with one line of ``product`` (the token layer needs only the rows); (order id, line id)."""
    now = utcnow()
    async with core.db.transaction() as session:
        order = Order(
            number=f"R{now.timestamp():.6f}".replace(".", ""),
            user_id=1001,
            chat_id=1001,
            language="zh",
            channel="bot",
            status=OrderStatus.PAID,
            currency="CNY",
            list_amount=product.price * quantity,
            amount=product.price * quantity,
            payment_method="sandbox",
            expires_at=now + timedelta(minutes=15),
            paid_at=now,
        )
        session.add(order)
        await session.flush()
        line = OrderLine(
            order_id=order.id,
            line_no=1,
            product_id=product.id,
            sku=product.sku,
            name=product.name,
            quantity=quantity,
            unit_price=product.price,
            amount=product.price * quantity,
        )
        session.add(line)
        await session.flush()
        return order.id, line.id


async def issue(core: Core, product: Product, count: int = 1, **kwargs: object) -> list[str]:
    async with core.db.transaction() as session:
        return await redeem.issue(session, core.keyring, product=product, count=count, **kwargs)  # type: ignore[arg-type]


async def consume(core: Core, token: str, by: str = "web:203.0.113.7", channel: str = "web") -> redeem.TokenView:
    async with core.db.transaction() as session:
        return await redeem.consume(session, core.keyring, token, by=by, channel=channel)


async def inspect(core: Core, token: str) -> redeem.TokenView:
    async with core.db.read() as session:
        return await redeem.inspect(session, core.keyring, token)


async def test_issued_links_show_what_they_grant_and_a_use_is_taken_once(core):
    product = await link_product(core)
    order_id, line_id = await paid_order(core, product, quantity=2)
    tokens = await issue(
        core, product, 2, order_id=order_id, order_line_id=line_id, max_uses=1, valid_days=30, entitlement="One visit"
    )
    assert len(set(tokens)) == 2
    for token in tokens:
        assert redeem.is_well_formed(token) and len(token) >= 32  # 24 random bytes, URL-safe base64

    before = await inspect(core, tokens[0])
    assert (before.state, before.entitlement, before.product_name) == (TokenState.VALID, "One visit", "Spa visit")
    assert (before.uses_left, before.max_uses, before.order_id) == (1, 1, order_id)
    assert before.expires_at is not None
    assert timedelta(days=29, hours=23) < before.expires_at - utcnow() <= timedelta(days=30)

    after = await consume(core, tokens[0])
    assert (after.state, after.uses_left, after.use_no) == (TokenState.USED_UP, 0, 1)
    with pytest.raises(TokenUsedUp) as refused:
        await consume(core, tokens[0])
    assert refused.value.code == "token_used_up" and refused.value.max_uses == 1
    assert (await inspect(core, tokens[1])).state == TokenState.VALID  # the other link is untouched

    async with core.db.read() as session:
        assert await redeem.tokens_for_order(session, core.keyring, order_id) == tokens


async def test_links_take_their_uses_expiry_and_entitlement_from_the_product_unless_given(core):
    product = await link_product(core, redeem_max_uses=3, redeem_valid_days=7, entitlement="Three spa visits")
    [token] = await issue(core, product)
    view = await inspect(core, token)
    assert (view.max_uses, view.uses_left, view.entitlement) == (3, 3, "Three spa visits")
    assert view.expires_at is not None and view.expires_at - utcnow() > timedelta(days=6, hours=23)

    plain = await link_product(core, sku="PLAIN")
    [token] = await issue(core, plain)
    view = await inspect(core, token)
    assert (view.max_uses, view.expires_at, view.entitlement) == (1, None, "Spa visit")

    for bad in ({"count": 0}, {"count": 1, "max_uses": 0}, {"count": 1, "valid_days": 0}):
        with pytest.raises(InvalidInput):
            await issue(core, plain, **bad)  # type: ignore[arg-type]


async def test_twenty_concurrent_confirmations_of_a_one_use_link_let_exactly_one_through(core):
    product = await link_product(core)
    [token] = await issue(core, product, max_uses=1)

    results = await asyncio.gather(
        *(consume(core, token, by=f"web:198.51.100.{n}") for n in range(20)), return_exceptions=True
    )

    successes = [r for r in results if isinstance(r, redeem.TokenView)]
    refusals = [r for r in results if isinstance(r, TokenUsedUp)]
    assert len(successes) == 1 and len(refusals) == 19, results
    async with core.db.read() as session:
        assert await session.scalar(select(RedeemToken.uses)) == 1
        assert len((await session.scalars(select(Redemption))).all()) == 1


async def test_an_n_use_link_allows_exactly_n_uses_under_concurrency(core):
    product = await link_product(core)
    [token] = await issue(core, product, max_uses=3)

    results = await asyncio.gather(*(consume(core, token) for _ in range(10)), return_exceptions=True)

    used = sorted(r.use_no for r in results if isinstance(r, redeem.TokenView))
    assert used == [1, 2, 3]
    assert sum(isinstance(r, TokenUsedUp) for r in results) == 7
    assert (await inspect(core, token)).state == TokenState.USED_UP


async def test_an_expired_link_cannot_be_used_and_nothing_is_recorded(core):
    product = await link_product(core)
    [token] = await issue(core, product, max_uses=2, valid_days=1)
    async with core.db.transaction() as session:
        await session.execute(update(RedeemToken).values(expires_at=utcnow() - timedelta(seconds=1)))

    assert (await inspect(core, token)).state == TokenState.EXPIRED
    assert (await inspect(core, token)).uses_left == 0
    with pytest.raises(TokenExpired) as refused:
        await consume(core, token)
    assert refused.value.code == "token_expired" and refused.value.expires_at is not None
    async with core.db.read() as session:
        assert await session.scalar(select(RedeemToken.uses)) == 0
        assert (await session.scalars(select(Redemption))).all() == []


async def test_voided_links_of_a_refunded_line_take_no_more_uses(core):
    product = await link_product(core)
    order_id, line_id = await paid_order(core, product, quantity=2)
    tokens = await issue(core, product, 2, order_id=order_id, order_line_id=line_id, max_uses=2)
    await consume(core, tokens[0])

    async with core.db.transaction() as session:
        assert await redeem.void(session, order_line_id=line_id) == 2

    for token in tokens:
        assert (await inspect(core, token)).state == TokenState.VOID
        with pytest.raises(TokenVoid):
            await consume(core, token)


async def test_unknown_and_malformed_tokens_are_not_found_and_malformed_ones_never_reach_the_database(core):
    product = await link_product(core)
    [token] = await issue(core, product)
    unknown = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(NotFound):
        await inspect(core, unknown)
    with pytest.raises(NotFound):
        await consume(core, unknown)

    class NoDatabase:
        def __getattr__(self, name: str) -> object:
            raise AssertionError(f"a malformed token reached the database ({name})")

    malformed = ["", "short", "x" * 65, "a" * 40 + "\x00", "a" * 30 + "$%", "a" * 30 + "/.", "ａ" * 32, token + "\n"]
    for bad in malformed:
        with pytest.raises(NotFound):
            await redeem.inspect(NoDatabase(), core.keyring, bad)  # type: ignore[arg-type]
        with pytest.raises(NotFound):
            await redeem.consume(NoDatabase(), core.keyring, bad, by="web:1.2.3.4", channel="web")  # type: ignore[arg-type]


async def test_every_use_is_recorded_on_the_order_with_who_and_which_channel(core):
    product = await link_product(core)
    order_id, line_id = await paid_order(core, product)
    [token] = await issue(core, product, order_id=order_id, order_line_id=line_id, max_uses=3)
    await consume(core, token, by="web:203.0.113.7", channel="web")
    await consume(core, token, by="operator:9000", channel="chat")
    await consume(core, token, by="partner:mall", channel="api")

    async with core.db.read() as session:
        records = await redeem.redemptions(session, order_id)
    assert [(r.use_no, r.by, r.channel, r.order_line_id) for r in records] == [
        (1, "web:203.0.113.7", "web", line_id),
        (2, "operator:9000", "chat", line_id),
        (3, "partner:mall", "api", line_id),
    ]
    assert all(r.at is not None for r in records)

    with pytest.raises(InvalidInput):
        await consume(core, token, channel="fax")
    with pytest.raises(InvalidInput):
        await consume(core, token, by="  ")


def test_the_qr_image_is_a_png_of_a_scannable_size_and_differs_per_link():
    png = redeem.qr_png("https://shop.example/r/" + "A" * 32)
    assert png.startswith(PNG_SIGNATURE)
    assert png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert width == height and width >= 200
    with Image.open(io.BytesIO(png)) as image:
        image.verify()
    assert redeem.qr_png("https://shop.example/r/" + "B" * 32) != png
    assert redeem.link("https://shop.example/", "T0KEN") == "https://shop.example/r/T0KEN"


def database_files(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in directory.glob("quanyi.db*"))  # with -wal and -shm


def _forms(token: str) -> list[bytes]:
    raw = token.encode()
    return [raw, raw.hex().encode(), raw.hex().upper().encode(), hashlib.sha256(raw).digest()]


async def test_tokens_never_sit_in_the_database_file_or_a_log_or_an_error(tmp_path: Path, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="sqlalchemy.engine")  # statements, parameters and rows
    db_path = tmp_path / "quanyi.db"
    db = Database(f"sqlite+aiosqlite:///{db_path}")
    async with db.engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    core = build_core(make_settings(tmp_path), db=db, keyring=make_keyring())
    try:
        control = "PLAINTEXT-CONTROL-51c2"  # stored in the clear on purpose: proves the scan sees the data
        product = await link_product(core, entitlement=control)
        order_id, line_id = await paid_order(core, product)
        tokens = await issue(core, product, 3, order_id=order_id, order_line_id=line_id)
        await consume(core, tokens[0])
        errors: list[QuanyiError] = []
        for attempt in (lambda: consume(core, tokens[0]), lambda: inspect(core, tokens[1][:-1] + "!")):
            with pytest.raises(QuanyiError) as caught:
                await attempt()
            errors.append(caught.value)
        async with core.db.read() as session:
            assert await redeem.tokens_for_order(session, core.keyring, order_id) == tokens
    finally:
        await core.close()

    stored = database_files(tmp_path)
    assert control.encode() in stored
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "UPDATE redeem_tokens" in logged  # statements and parameters were logged
    for token in tokens:
        for form in _forms(token):
            assert form not in stored, "a token is readable in the database file"
        assert token not in logged and token.encode().hex() not in logged
        assert all(token not in str(error) and token not in repr(error.details) for error in errors)


async def test_a_ciphertext_copied_onto_another_link_fails_to_decrypt(core):
    product = await link_product(core)
    order_id, _ = await paid_order(core, product)
    await issue(core, product, 2, order_id=order_id)
    async with core.db.transaction() as session:
        first, second = (await session.scalars(select(RedeemToken).order_by(RedeemToken.id))).all()
        second.token_ct = first.token_ct
    async with core.db.read() as session:
        with pytest.raises(QuanyiError):
            await redeem.tokens_for_order(session, core.keyring, order_id)
