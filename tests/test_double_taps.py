"""Double taps make no duplicates (issue 17 item 1): one order per product message, however often
and however fast its payment buttons are tapped; a repeated sandbox confirm is one payment; a real
second payment is told to the buyer as paid twice, never as a failed delivery."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import select, update

from quanyi.core.errors import ProviderError, RiskBlocked
from quanyi.core.models import Order, OutboxMessage, Payment
from quanyi.core.risk import rules as risk
from quanyi.core.sales.fulfilment import PaymentOutcome
from quanyi.core.sales.orders import Buyer
from quanyi.core.sales.placement import Placement, placement_key
from quanyi.core.services import Core, build_core
from quanyi.i18n import plain_t, raw_t
from quanyi.webhooks import create_app
from tests.conftest import make_settings
from tests.fakebot import BotMessage, FakeTelegram, FakeUser
from tests.helpers import new_order, product_with_stock, sandbox_event
from tests.test_bot_chat import NUMBER, open_product, shop, tg
from tests.test_cryptopay import TOKEN, FakeCryptoPay, fake_api
from tests.test_stripe import FakeStripe, stripe_settings
from tests.test_truthful_messages import _buyer_texts

__all__ = ["fake_api", "shop", "tg"]

NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup are exactly the same "
    "as a current content and reply markup of the message"
)


async def methods_screen(user: FakeUser, quantity: str = "2") -> BotMessage:
    card = await open_product(user, "VIP membership")
    await user.press(card, quantity)
    return await user.expect(lambda m: any(b.get("callback_data", "").startswith("m:") for b in m.buttons()))


async def orders_of(core: Core, user_id: int) -> list[tuple[str, str]]:
    async with core.db.read() as session:
        rows = await session.execute(select(Order.number, Order.status).where(Order.user_id == user_id))
        return sorted((str(n), str(s)) for n, s in rows.all())


async def reserved(core: Core) -> int:
    from tests.test_bot_chat import stock_of

    return await stock_of(core, "reserved")


async def unpaid_limit(core: Core) -> None:
    """The default risk rules, among them at most three unpaid orders per buyer."""
    async with core.db.transaction() as session:
        await risk.ensure_defaults(session)


async def answers(shop: FakeTelegram, *ids: str) -> list[str]:
    return sorted([str((await shop.callback_answer(i)).get("text", "")) for i in ids])


# --- the buyer's double tap, through the dispatcher ------------------------------------------------


@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_a_double_tap_on_a_payment_method_places_one_order_and_shows_it(core, shop, tmp_path, lang):
    await product_with_stock(core, tmp_path, units=5)
    shop.expected_refusals.add(NOT_MODIFIED)  # both taps may draw the same screen
    user = shop.user(1001, lang)
    methods = await methods_screen(user)

    first = await user.press(methods, raw_t(lang, "method_sandbox"))
    second = await user.press(methods, raw_t(lang, "method_sandbox"))  # before the first is answered

    told = await answers(shop, first, second)
    [(number, status)] = await orders_of(core, 1001)
    assert told == ["", plain_t(lang, "taps.same_order", number=number)]
    assert status == "pending" and await reserved(core) == 2  # the stock of one order, not two
    await shop.wait_until(lambda: number in str(shop.current(methods).get("text", "")))
    shown = shop.current(methods)
    buttons = [b for row in shown["reply_markup"]["inline_keyboard"] for b in row]
    assert buttons[0]["url"] == f"{core.settings.public_url}/pay/sandbox/{number}"
    assert buttons[1]["callback_data"] == f"c:{number}"


@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_tapping_the_same_button_again_later_shows_the_same_order_and_never_hits_the_unpaid_limit(
    core, shop, tmp_path, lang
):
    await product_with_stock(core, tmp_path, units=9)
    await unpaid_limit(core)
    user = shop.user(1001, lang)
    methods = await methods_screen(user, "1")
    await user.press(methods, raw_t(lang, "method_sandbox"))
    created = await user.expect(lambda m: NUMBER.search(m.plain) is not None)
    number = NUMBER.search(created.plain).group(0)  # type: ignore[union-attr]

    # More taps than the unpaid-orders limit (3): each is the same order, never refused for it.
    for _ in range(4):
        tap = await user.press(methods, raw_t(lang, "method_sandbox"))
        assert (await shop.callback_answer(tap))["text"] == plain_t(lang, "taps.same_order", number=number)
    assert await orders_of(core, 1001) == [(number, "pending")]
    assert await reserved(core) == 1
    assert number in str(shop.current(created)["text"])  # still the order's screen


@pytest.mark.parametrize("lang", ["zh", "en"])
async def test_a_tap_after_the_order_was_cancelled_names_it_and_places_nothing(core, shop, tmp_path, lang):
    await product_with_stock(core, tmp_path, units=5)
    user = shop.user(1001, lang)
    methods = await methods_screen(user)
    await user.press(methods, raw_t(lang, "method_sandbox"))
    created = await user.expect(lambda m: NUMBER.search(m.plain) is not None)
    number = NUMBER.search(created.plain).group(0)  # type: ignore[union-attr]
    await user.press(created, data=f"c:{number}")
    await user.expect(lambda m: m.message_id == created.message_id and not m.buttons())

    again = await user.press(methods, raw_t(lang, "method_sandbox"))
    answer = await shop.callback_answer(again)
    status = raw_t(lang, "status.cancelled")
    assert answer["text"] == plain_t(lang, "taps.order_closed", number=number, status=status)
    assert answer.get("show_alert") in (True, "true")
    assert await orders_of(core, 1001) == [(number, "cancelled")]


async def test_another_product_message_places_another_order(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, units=5)
    user = shop.user(1001, "zh")
    for _ in range(2):
        methods = await methods_screen(user, "1")
        await user.press(methods, raw_t("zh", "method_sandbox"))
        await user.expect(lambda m: NUMBER.search(m.plain) is not None)
    assert [s for _, s in await orders_of(core, 1001)] == ["pending", "pending"]


async def test_someone_elses_copy_of_the_button_never_reaches_the_buyers_order(core, shop, tmp_path):
    await product_with_stock(core, tmp_path, units=5)
    buyer, other = shop.user(1001, "en"), shop.user(1002, "en")
    methods = await methods_screen(buyer, "1")
    await buyer.press(methods, raw_t("en", "method_sandbox"))
    created = await buyer.expect(lambda m: NUMBER.search(m.plain) is not None)
    number = NUMBER.search(created.plain).group(0)  # type: ignore[union-attr]

    # The same callback data (token included) sent by another user: its own order, if any.
    data = methods.button(raw_t("en", "method_sandbox"))["callback_data"]
    tap = await other.press(methods, data=data)
    answer = await shop.callback_answer(tap)
    assert number not in str(answer.get("text", ""))
    theirs = await orders_of(core, 1002)
    assert all(n != number for n, _ in theirs)
    assert await orders_of(core, 1001) == [(number, "pending")]


# --- the placement key, raced on both backends ------------------------------------------------------


async def _product_id(core: Core) -> int:
    [entry] = await core.sales.buyer_catalogue(1001)
    return entry.id


async def test_taps_racing_on_one_button_place_one_order_on_either_backend(core, tmp_path):
    await product_with_stock(core, tmp_path, units=5)
    product_id = await _product_id(core)
    buyer = Buyer(1001, 1001, "zh")
    tap = Placement(message_id=77, token="AbC-12_x")

    placed = await asyncio.gather(
        *(core.sales.place_chat_order(buyer, product_id, 2, "sandbox", "sandbox", placement=tap) for _ in range(8))
    )

    assert len({p.number for p in placed}) == 1
    assert sorted(p.again for p in placed) == [False] + [True] * 7
    assert all(p.payment_url and p.payment_url.endswith(placed[0].number) for p in placed)
    assert len(await orders_of(core, 1001)) == 1 and await reserved(core) == 2


async def test_a_repeated_tap_is_not_counted_against_the_unpaid_limit(core, tmp_path):
    await product_with_stock(core, tmp_path, units=9)
    await unpaid_limit(core)
    product_id = await _product_id(core)
    buyer = Buyer(1001, 1001, "zh")
    for message_id in (1, 2, 3):  # three unpaid orders: the default limit
        await core.sales.place_chat_order(buyer, product_id, 1, "sandbox", placement=Placement(message_id, "t"))

    again = await core.sales.place_chat_order(buyer, product_id, 1, "sandbox", placement=Placement(3, "t"))
    assert again.again and again.status == "pending"
    with pytest.raises(RiskBlocked):  # a fourth message is a fourth order: refused as before
        await core.sales.place_chat_order(buyer, product_id, 1, "sandbox", placement=Placement(4, "t"))


def test_the_placement_key_is_bound_to_the_buyer_its_chat_the_message_and_the_token():
    tap = Placement(message_id=5, token="tok")
    key = placement_key(1001, 1001, tap)
    others = {
        placement_key(1002, 1001, tap),  # another user pressing it
        placement_key(1001, 2002, tap),  # the same user in another chat
        placement_key(1001, 1001, Placement(6, "tok")),  # another message
        placement_key(1001, 1001, Placement(5, "tol")),  # another showing of the methods
    }
    assert key.startswith("tap:") and len(key) <= 64
    assert key not in others and len(others) == 4


# --- the sandbox confirm, raced on both backends ----------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_double_click_on_the_sandbox_confirm_records_one_payment(db, keyring, tmp_path: Path):
    """Over real HTTP: the page's button posts to our own notify URL; two clicks at once pay once."""
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    port = _free_port()
    settings = make_settings(tmp_path, http_port=port, public_url=f"http://127.0.0.1:{port}")
    core = build_core(settings, db=db, keyring=keyring)
    await product_with_stock(core, tmp_path, units=2)
    placed = await new_order(core, method="sandbox")
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    stop = asyncio.Event()
    server = asyncio.create_task(serve(create_app(core), config, shutdown_trigger=stop.wait))
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)

            async def click() -> int:
                async with http.post(placed.payment.url) as response:  # type: ignore[union-attr]
                    return response.status

            statuses = await asyncio.gather(click(), click(), click())
            statuses.append(await click())  # and once more, after it paid
    finally:
        stop.set()
        await server
    assert statuses == [200] * 4  # each click is told the payment went through
    async with core.db.read() as session:
        payments = (await session.execute(select(Payment.outcome, Payment.provider_txn_id))).all()
        kinds = sorted((await session.scalars(select(OutboxMessage.kind))).all())
        status = await session.scalar(select(Order.status))
    assert [outcome for outcome, _ in payments] == ["applied"]
    assert (status, kinds) == ("delivered", ["delivery"])  # no "payment kept for review" message


async def test_the_sandbox_confirm_of_one_order_is_always_the_same_transaction(core):
    sandbox = core.payments.get("sandbox")
    first = sandbox.callback_params("Q261207AAAAAAAA", "15.00", "CNY")  # type: ignore[attr-defined]
    again = sandbox.callback_params("Q261207AAAAAAAA", "15.00", "CNY")  # type: ignore[attr-defined]
    other = sandbox.callback_params("Q261207BBBBBBBB", "15.00", "CNY")  # type: ignore[attr-defined]
    assert first == again and first["txn_id"] != other["txn_id"]


# --- a real second payment -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lang", "twice", "refunded", "failed"),
    [
        ("zh", "付了两次款", "退还给您", "未能自动发货"),
        ("en", "paid twice", "will be refunded to you", "nothing was delivered automatically"),
    ],
)
async def test_a_second_payment_at_the_gateway_is_told_as_paid_twice_not_as_a_failed_delivery(
    core, tmp_path, lang, twice, refunded, failed
):
    await product_with_stock(core, tmp_path, units=2)
    placed = await new_order(core, quantity=1, lang=lang)
    number, amount = placed.order.number, placed.order.amount
    assert await core.fulfiller.submit(sandbox_event(number, amount, txn="PAY-1")) == PaymentOutcome.DELIVERED
    assert await core.fulfiller.submit(sandbox_event(number, amount, txn="PAY-2")) == PaymentOutcome.NEEDS_REVIEW

    texts = dict(await _buyer_texts(core, lang))
    buyer, operator = texts["payment_review"], texts["admin_payment_review"]
    assert number in buyer and twice in buyer and refunded in buyer
    assert failed not in buyer
    assert "PAY-2" in operator and "/review" in operator
    async with core.db.read() as session:  # kept for an operator to refund: the text says who does it
        outcomes = sorted((await session.scalars(select(Payment.outcome))).all())
    assert outcomes == ["applied", "needs_review"]


async def test_money_for_an_expired_order_is_still_told_as_not_delivered(core, tmp_path):
    await product_with_stock(core, tmp_path, units=2)
    placed = await new_order(core, quantity=1)
    async with core.db.transaction() as session:
        from quanyi.core.sales.orders import cancel_pending

        await cancel_pending(session, placed.order.id, reason="expired")
    assert (
        await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount))
        == PaymentOutcome.NEEDS_REVIEW
    )
    texts = dict(await _buyer_texts(core, "zh"))
    assert "未能自动发货" in texts["payment_review"] and "两次" not in texts["payment_review"]


async def test_a_key_placed_in_between_is_the_last_guard_and_still_returns_that_order(core, tmp_path, monkeypatch):
    """Should a second tap ever miss the first's order (the buyer's row lock is what makes it wait),
    the unique key refuses its insert and the first's order is returned all the same."""
    from quanyi.core.sales import orders

    await product_with_stock(core, tmp_path, units=5)
    product_id = await _product_id(core)
    buyer, tap = Buyer(1001, 1001, "zh"), Placement(message_id=8, token="k")
    first = await core.sales.place_chat_order(buyer, product_id, 1, "sandbox", placement=tap)
    real = orders.placed_before
    missed: list[str] = []

    async def miss_once(session, key, user_id):  # type: ignore[no-untyped-def]
        if not missed:
            missed.append(key)
            return None
        return await real(session, key, user_id)

    monkeypatch.setattr(orders, "placed_before", miss_once)
    again = await core.sales.place_chat_order(buyer, product_id, 1, "sandbox", placement=tap)
    assert missed and (again.number, again.again) == (first.number, True)
    assert len(await orders_of(core, 1001)) == 1 and await reserved(core) == 1


# --- providers that create the payment: read back, never started twice ----------------------------------


@pytest.fixture
async def crypto(db, keyring, tmp_path: Path, fake_api: FakeCryptoPay) -> Core:
    settings = make_settings(tmp_path, cryptobot_token=TOKEN, cryptobot_api_base=fake_api.base)
    built = build_core(settings, db=db, keyring=keyring)
    await product_with_stock(built, tmp_path, units=5)
    return built


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_repeated_tap_shows_the_same_crypto_pay_invoice_and_creates_no_second_one(crypto, fake_api):
    product_id = await _product_id(crypto)
    buyer, tap = Buyer(1001, 1001, "en"), Placement(message_id=3, token="k")
    first = await crypto.sales.place_chat_order(buyer, product_id, 1, "cryptobot", placement=tap)
    again = await crypto.sales.place_chat_order(buyer, product_id, 1, "cryptobot", placement=tap)

    assert (again.number, again.again, again.payment_url) == (first.number, True, first.payment_url)
    assert [m for m, _, _ in fake_api.requests] == ["createInvoice"]  # the link kept at placement

    await _forget_link(crypto, first.number)  # placed before links were kept: read back
    third = await crypto.sales.place_chat_order(buyer, product_id, 1, "cryptobot", placement=tap)
    assert (third.number, third.payment_url) == (first.number, first.payment_url)
    assert [m for m, _, _ in fake_api.requests] == ["createInvoice", "getInvoices"]


async def _forget_link(core: Core, number: str) -> None:
    async with core.db.transaction() as session:
        await session.execute(update(Order).where(Order.number == number).values(payment_url=None))


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_tap_whose_payment_could_not_start_can_be_tapped_again(crypto, fake_api):
    product_id = await _product_id(crypto)
    buyer, tap = Buyer(1001, 1001, "en"), Placement(message_id=3, token="k")
    fake_api.mode = "error"
    with pytest.raises(ProviderError):
        await crypto.sales.place_chat_order(buyer, product_id, 1, "cryptobot", placement=tap)
    fake_api.mode = "ok"

    placed = await crypto.sales.place_chat_order(buyer, product_id, 1, "cryptobot", placement=tap)
    assert not placed.again and placed.payment_url
    assert sorted(s for _, s in await orders_of(crypto, 1001)) == ["cancelled", "pending"]


@pytest.fixture
async def stripe_api() -> AsyncIterator[FakeStripe]:
    fake = FakeStripe()
    app = web.Application()
    app.router.add_post("/v1/checkout/sessions", fake.handle)
    app.router.add_get("/v1/checkout/sessions/{id}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    yield fake
    await runner.cleanup()


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_repeated_tap_shows_the_same_stripe_session_read_back(db, keyring, tmp_path, stripe_api):
    core = build_core(stripe_settings(tmp_path, stripe_api.base), db=db, keyring=keyring)
    await product_with_stock(core, tmp_path, units=5)
    product_id = await _product_id(core)
    buyer, tap = Buyer(1001, 1001, "en"), Placement(message_id=3, token="k")
    first = await core.sales.place_chat_order(buyer, product_id, 1, "stripe", placement=tap)
    again = await core.sales.place_chat_order(buyer, product_id, 1, "stripe", placement=tap)

    assert (again.number, again.again, again.payment_url) == (first.number, True, first.payment_url)
    assert [m for m, _, _, _ in stripe_api.requests] == ["POST"]  # the link kept at placement

    await _forget_link(core, first.number)  # placed before links were kept: read back
    third = await core.sales.place_chat_order(buyer, product_id, 1, "stripe", placement=tap)
    assert (third.number, third.payment_url) == (first.number, first.payment_url)
    assert [(m, p.rsplit("/", 1)[0]) for m, p, _, _ in stripe_api.requests] == [
        ("POST", "/v1/checkout"),
        ("GET", "/v1/checkout/sessions"),
    ]
