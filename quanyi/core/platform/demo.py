"""A demo catalogue with card-key stock. Loading it twice changes nothing."""

from __future__ import annotations

import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from quanyi.core.books import commissions
from quanyi.core.catalog import bundles, coupons, promotions
from quanyi.core.catalog.products import add_product, update_product
from quanyi.core.distributors.accounts import set_cost_price
from quanyi.core.models import Channel, ChannelKind, Product, StockBatch
from quanyi.core.money import Money
from quanyi.core.platform.crypto import KeyRing
from quanyi.core.platform.db import Database
from quanyi.core.risk import rules as risk
from quanyi.core.stock import allocations as channels
from quanyi.core.stock.items import import_stock

DEMO_SOURCE = "demo-stock.txt"
DEMO_PARTNER = "partner-shop"


@dataclass(frozen=True)
class DemoProduct:
    sku: str
    name: str
    price: str
    units: int
    instructions: str


CATALOGUE = (
    DemoProduct(
        "VIDEO-VIP-1M",
        "视频会员月卡 Video VIP 1 month",
        "15.00",
        40,
        "打开视频 App → 我的 → 兑换码，输入卡密。 / Open the video app → Me → Redeem, enter the code.",
    ),
    DemoProduct(
        "MUSIC-VIP-1M",
        "音乐会员月卡 Music VIP 1 month",
        "9.90",
        40,
        "打开音乐 App → 账号 → 兑换。 / Open the music app → Account → Redeem.",
    ),
    DemoProduct(
        "GAME-100",
        "游戏点卡 100 点 Game points 100",
        "10.00",
        25,
        "在游戏充值中心输入序列号和密码。 / Enter serial and password in the game's top-up centre.",
    ),
    DemoProduct(
        "OFFICE-1Y",
        "办公软件年度授权 Office licence 1 year",
        "99.00",
        5,
        "在软件的 帮助 → 激活 中输入授权码。 / Help → Activate, enter the licence key.",
    ),
)


async def load_demo(db: Database, keyring: KeyRing) -> list[str]:
    """Create the demo products and their stock where missing; returns what was added."""
    added: list[str] = []
    for order, item in enumerate(CATALOGUE):
        async with db.transaction() as session:
            product = await session.scalar(select(Product).where(Product.sku == item.sku))
            if product is None:
                product = await add_product(
                    session,
                    sku=item.sku,
                    name=item.name,
                    kind="card_key",
                    price=Money.parse(item.price, "CNY"),
                    instructions=item.instructions,
                    sort_order=order,
                )
            has_demo_stock = await session.scalar(
                select(StockBatch.id).where(
                    StockBatch.product_id == product.id,
                    StockBatch.source == DEMO_SOURCE,
                    StockBatch.status == "done",
                )
            )
        if has_demo_stock:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / DEMO_SOURCE
            with path.open("w") as handle:
                for n in range(item.units):
                    handle.write(f"{item.sku}-{n + 1:04d} {secrets.token_hex(8).upper()}\n")
            await import_stock(db, keyring, item.sku, path)
        added.append(item.sku)
    await _demo_network(db)
    await _demo_other_kinds(db)
    await _demo_pricing(db)
    added += await _demo_partner_api(db, keyring)
    async with db.transaction() as session:
        await risk.ensure_defaults(session)
    return added


async def _demo_partner_api(db: Database, keyring: KeyRing) -> list[str]:
    """The partner shop as an API partner with ¥500.00 of balance; its key is shown this once."""
    from quanyi.core.models import Partner
    from quanyi.core.partners import accounts as partners

    async with db.transaction() as session:
        if await session.scalar(select(Partner.id).where(Partner.code == DEMO_PARTNER)) is not None:
            return []
        added = await partners.add_partner(session, keyring, DEMO_PARTNER, "Partner shop (demo)")
        await partners.top_up(session, DEMO_PARTNER, 50000, note="demo")
    return [
        f"API partner {DEMO_PARTNER} with ¥500.00 of balance (access key {added.key.access_key}, "
        f"secret {added.key.secret}: shown this once, see docs/api.md)"
    ]


async def _demo_other_kinds(db: Database) -> None:
    """A redemption-link product and a mobile top-up served by the supplier simulator."""
    async with db.transaction() as session:
        if await session.scalar(select(Product.id).where(Product.sku == "CINEMA-2D")) is None:
            cinema = await add_product(
                session,
                sku="CINEMA-2D",
                name="电影票 2D 兑换券 Cinema ticket 2D",
                kind="redeem_link",
                price=Money.parse("35.00", "CNY"),
                instructions="到影院前台出示二维码核销。 / Show the QR code at the cinema counter.",
                sort_order=10,
            )
            cinema.redeem_max_uses = 1
            cinema.redeem_valid_days = 90
            cinema.entitlement = "一张 2D 电影票 / One 2D cinema ticket"
        if await session.scalar(select(Product.id).where(Product.sku == "MOBILE-50")) is None:
            topup = await add_product(
                session,
                sku="MOBILE-50",
                name="话费充值 50 元 Mobile top-up 50",
                kind="direct_recharge",
                price=Money.parse("49.50", "CNY"),
                sort_order=11,
            )
            topup.supplier = "generic"
            topup.supplier_product_code = "MOBILE50"
            topup.account_pattern = r"1[3-9]\d{9}"
            topup.account_hint = "11 位手机号 / 11-digit mobile number"
            topup.fallback_sku = None


async def _demo_network(db: Database) -> None:
    """A partner shop with its own quota and price, floors, pool alerts, a distributor tier's
    cost prices and commission rates: enough to see allocations and commissions at work."""
    async with db.transaction() as session:
        if await session.scalar(select(Channel.id).where(Channel.code == DEMO_PARTNER)) is not None:
            return
        await channels.add_channel(session, DEMO_PARTNER, "Partner shop (demo)", ChannelKind.PARTNER)
        await update_product(session, "VIDEO-VIP-1M", floor="12.00", ceiling="25.00")
        await channels.set_channel_price(session, DEMO_PARTNER, "VIDEO-VIP-1M", 1450)
        await channels.allocate(session, "VIDEO-VIP-1M", DEMO_PARTNER, 10)
        await channels.set_threshold(session, "VIDEO-VIP-1M", 3, holder=DEMO_PARTNER)
        for item in CATALOGUE:
            await channels.set_threshold(session, item.sku, max(1, item.units // 5))
        await set_cost_price(session, "VIDEO-VIP-1M", 1200, tier="default")
        await set_cost_price(session, "MUSIC-VIP-1M", 800, tier="default")
        await commissions.set_rate(session, 1, 300)
        await commissions.set_rate(session, 2, 100)


DEMO_BUNDLE = "DUO-VIP-1M"
VIDEO = "视频 video"
DEMO_COUPON = "WELCOME10"


async def _demo_pricing(db: Database) -> None:
    """Categories, a bundle, a 满减 promotion and a coupon code to try in the order form."""
    async with db.transaction() as session:
        if await session.scalar(select(Product.id).where(Product.sku == DEMO_BUNDLE)) is not None:
            return
        # Bilingual like the demo's product names: a category is a button in the bot's catalogue.
        for sku, category in (("VIDEO-VIP-1M", VIDEO), ("MUSIC-VIP-1M", "音乐 music"), ("GAME-100", "游戏 game")):
            await update_product(session, sku, category=category)
        await bundles.create_bundle(
            session,
            sku=DEMO_BUNDLE,
            name="影音双卡 Video + Music VIP 1 month",
            price=Money.parse("22.00", "CNY"),
            parts=[("VIDEO-VIP-1M", 1), ("MUSIC-VIP-1M", 1)],
            category=VIDEO,
        )
        await promotions.add_promotion(
            session, name="满50减8 / ¥8 off ¥50", kind="spend_off", threshold=5000, value=800, currency="CNY"
        )
        welcome = await coupons.create_coupon(
            session,
            name="新客9折 / 10% off for new buyers",
            kind="percent",
            value=1000,
            cap=500,
            currency="CNY",
            per_buyer=1,
        )
        await coupons.add_code(session, welcome.id, DEMO_COUPON, max_uses=None)
