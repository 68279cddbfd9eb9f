"""Coupons, promotions, bundles and quotes from the operator CLI on a SQLite data dir. The first
calls go through the real console script (the `cli` fixture); the rest run ``quanyi.cli.main`` in
this process, the same code without a process start each, so the file stays fast. Products and the
checks against the database are done in-process on that data dir."""

from __future__ import annotations

import csv
import io
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from quanyi.core.catalog import bundles
from quanyi.core.catalog.products import add_product, get_product
from quanyi.core.models import Coupon, CouponCode, Product, Promotion
from quanyi.core.money import Money
from quanyi.core.services import Core
from tests.helpers import product_with_stock
from tests.test_cli import Cli, LocalCli, cli  # noqa: F401  (fixture)
from tests.test_cli_channels import _open

# The in-process runner (``quanyi.cli.main`` in a thread, this runner's environment and cwd).
InProcessCli = LocalCli


@pytest.fixture
def cmd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> InProcessCli:
    runner = InProcessCli(tmp_path)
    for key in [k for k in os.environ if k.startswith("QUANYI_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("QUANYI_DATA_DIR", str(runner.data_dir))
    monkeypatch.chdir(tmp_path)
    return runner


def assert_refused(runner: Cli, cases: dict[tuple[str, ...], str]) -> None:
    """Each command fails with one line naming the reason."""
    wrong = {args: reason for args, expected in cases.items() if expected not in (reason := runner.fails(*args))}
    assert not wrong


def each(fn: Any, *calls: tuple[str, ...]) -> list[Any]:
    return [fn(*args) for args in calls]


def _csv_codes(path: Path) -> list[str]:
    return [row["code"] for row in csv.DictReader(io.StringIO(path.read_text()))]


async def _products(tmp_path: Path, *specs: tuple[str, str, str | None]) -> None:
    """Upgrade the CLI's database and add redeem-link products (sku, price, category)."""
    core = await _open(tmp_path, upgrade=True)
    try:
        async with core.db.transaction() as session:
            for sku, price, category in specs:
                await add_product(
                    session,
                    sku=sku,
                    name=f"{sku} month",
                    kind="redeem_link",
                    price=Money.parse(price, "CNY"),
                    category=category,
                )
    finally:
        await core.close()


async def _query(tmp_path: Path, fn: Any) -> Any:
    core: Core = await _open(tmp_path)
    try:
        async with core.db.read() as session:
            return await fn(session)
    finally:
        await core.close()


def _created_id(stdout: str, what: str) -> int:
    found = re.search(rf"^(?:created|added) {what} (\d+):", stdout, re.M)
    assert found, stdout
    return int(found[1])


async def test_a_coupon_campaign_is_created_with_a_named_code_and_generated_codes(cli, cmd, tmp_path):
    await _products(tmp_path, ("VIP", "15.00", "video"), ("MUS", "10.00", None))
    out_file = tmp_path / "codes.csv"
    out = cli.ok(  # the console script itself
        "coupon", "create", "--name", "Spring", "--percent-off", "10", "--cap", "5.00", "--min-spend", "30.00",
        "--skus", "VIP,MUS", "--categories", "Video", "--channels", "bot", "--starts", "2026-12-01",
        "--ends", "2026-12-31 23:59", "--max-uses", "100", "--per-buyer", "2",
        "--code", "spring10", "--generate", "50", "--prefix", "SP", "--out", str(out_file),
    )  # fmt: skip
    coupon_id = _created_id(out, "coupon")
    assert "code SPRING10: unlimited uses" in out
    assert f"generated 50 one-use codes -> {out_file}" in out
    assert "SP" not in out.replace("Spring", "").replace("SPRING10", "")  # no code on stdout

    rows = list(csv.DictReader(io.StringIO(out_file.read_text())))
    written = [r["code"] for r in rows]
    assert len(written) == 50 == len(set(written)) and all(c.startswith("SP") for c in written)
    assert out_file.stat().st_mode & 0o077 == 0  # codes are as good as money

    async def stored(session: Any) -> tuple[Coupon, dict[str, int | None]]:
        coupon = await session.get(Coupon, coupon_id)
        codes = await session.execute(
            select(CouponCode.code, CouponCode.max_uses).where(CouponCode.coupon_id == coupon_id)
        )
        return coupon, dict(codes.all())

    coupon, codes = await _query(tmp_path, stored)
    assert (coupon.kind, coupon.value, coupon.cap, coupon.min_spend, coupon.currency) == (
        "percent",
        1000,
        500,
        3000,
        "CNY",
    )
    assert (coupon.skus, coupon.categories, coupon.channels) == ("MUS,VIP", "video", "bot")
    # Times are in the business time zone (Asia/Shanghai, UTC+8).
    assert coupon.starts_at == datetime(2026, 11, 30, 16, 0, tzinfo=UTC)
    assert coupon.ends_at == datetime(2026, 12, 31, 15, 59, tzinfo=UTC)
    assert (coupon.max_uses, coupon.per_buyer, coupon.active) == (100, 2, True)
    assert codes == {"SPRING10": None} | {c: 1 for c in written}

    listed, shown, exported = each(
        cmd.ok,
        ("coupon", "list"),
        ("coupon", "show", str(coupon_id)),
        ("coupon", "export", str(coupon_id), "--out", "-"),
    )
    row = next(line for line in listed.splitlines() if line.startswith(f"{coupon_id} "))
    for cell in ("Spring", "10% off, cap ¥5.00", "¥30.00", "skus MUS,VIP; categories video; channels bot",
                 "2026-12-01 00:00 - 2026-12-31 23:59", "0/100", "51", "yes"):  # fmt: skip
        assert cell in row, (cell, row)
    assert "rule: 10% off, cap ¥5.00, min spend ¥30.00" in shown and "uses: 0 of 100; per buyer 2" in shown
    exported_rows = list(csv.DictReader(io.StringIO(exported)))
    assert {r["code"]: r["max_uses"] for r in exported_rows} == {"SPRING10": ""} | {c: "1" for c in written}

    assert_refused(
        cmd,
        {
            ("coupon", "create", "--name", "X", "--amount-off", "5", "--skus", "VIP,NOPE"): "no product NOPE",
            ("coupon", "create", "--name", "X", "--percent-off", "101"): "between 0.01 and 100",
            ("coupon", "create", "--name", "X", "--amount-off", "5", "--cap", "2"): "for percentage coupons",
            ("coupon", "create", "--name", "X", "--amount-off", "5", "--starts", "2026-12-02", "--ends", "2026-12-01"):
                "the end must come after the start",
            ("coupon", "create", "--name", "X", "--amount-off", "5", "--code", "spring10"): "code SPRING10 exists",
            ("coupon", "create", "--name", "X", "--amount-off", "1.001"): "at most 2 decimals",
            ("coupon", "create", "--name", "X", "--amount-off", "5", "--percent-off", "5"): "not allowed with",
            ("coupon", "show", "999"): "no coupon 999",
        },
    )  # fmt: skip
    assert await _query(tmp_path, lambda s: s.scalar(select(func.count()).select_from(Coupon))) == 1

    assert f"coupon {coupon_id} (Spring) disabled" in cmd.ok("coupon", "disable", str(coupon_id))
    assert (await _query(tmp_path, lambda s: s.get(Coupon, coupon_id))).active is False
    assert "enabled" in cmd.ok("coupon", "enable", str(coupon_id))
    assert (await _query(tmp_path, lambda s: s.get(Coupon, coupon_id))).active is True


async def test_codes_are_imported_all_or_nothing_and_added_or_generated_later(cmd, tmp_path):
    await _products(tmp_path)
    coupon_id = _created_id(
        cmd.ok("coupon", "create", "--name", "Five", "--amount-off", "5.00", "--code", "OLD-1"), "coupon"
    )
    bad = tmp_path / "bad.txt"
    bad.write_text("GOOD-1\nno spaces allowed\nGOOD-2\nX\n")
    dupes = tmp_path / "codes.csv"
    dupes.write_text("code\nnew-1\nNEW-2\nnew-1\nold-1\n")
    malformed, imported, added, generated = each(
        cmd.run,
        ("coupon", "codes", str(coupon_id), "--import", str(bad)),
        ("coupon", "codes", str(coupon_id), "--import", str(dupes), "--uses", "3"),
        ("coupon", "codes", str(coupon_id), "--add", "vip-friends"),
        ("coupon", "codes", str(coupon_id), "--generate", "5"),
    )
    assert malformed.returncode == 1 and malformed.stdout == ""
    assert malformed.stderr.strip().splitlines() == [
        "quanyi: nothing imported: malformed lines 2, 4 (not a code (3-32 letters, digits, '-' or '_'))"
    ]
    assert f"coupon {coupon_id}: added 2, duplicates 2" in imported.stdout
    assert "added code VIP-FRIENDS (unlimited uses)" in added.stdout
    where = re.search(r"generated 5 codes \(1 uses each\) -> (\S+)", generated.stdout)
    assert where and Path(where[1]).parent == tmp_path / "data" / "exports"
    new = _csv_codes(Path(where[1]))
    assert len(set(new)) == 5

    async def codes(session: Any) -> dict[str, int | None]:
        rows = await session.execute(
            select(CouponCode.code, CouponCode.max_uses).where(CouponCode.coupon_id == coupon_id)
        )
        return dict(rows.all())

    expected = {"OLD-1": None, "NEW-1": 3, "NEW-2": 3, "VIP-FRIENDS": None} | {c: 1 for c in new}
    assert await _query(tmp_path, codes) == expected  # nothing from the malformed file

    exported = cmd.ok("coupon", "export", str(coupon_id))
    where = re.search(rf"coupon {coupon_id}: 9 codes -> (\S+)", exported)
    assert where and set(_csv_codes(Path(where[1]))) == set(expected)


async def test_promotions_and_a_coupon_price_a_quote_as_computed_by_hand(cmd, tmp_path):
    await _products(tmp_path, ("VIP", "15.55", "video"), ("MUS", "10.00", None))
    spend_off, units, percent, ten, fifty = each(
        cmd.ok,
        ("promotion", "add", "--name", "满30减5", "--spend", "30.00", "--off", "5.00", "--categories", "video"),
        ("promotion", "add", "--name", "3 for 2.5", "--units", "3", "--pay-for", "2.5", "--skus", "MUS",
         "--stacking", "exclusive"),
        ("promotion", "add", "--name", "Big spender", "--spend", "1000", "--percent-off", "10", "--cap", "20.00",
         "--starts", "2026-01-01", "--ends", "2026-01-02"),
        ("coupon", "create", "--name", "Ten", "--percent-off", "10", "--code", "TEN"),
        ("coupon", "create", "--name", "Fifty", "--amount-off", "3.00", "--min-spend", "50.00", "--code", "FIFTY"),
    )  # fmt: skip
    ids = [_created_id(out, "promotion") for out in (spend_off, units, percent)]
    assert "(spend ¥30.00, ¥5.00 off; with coupons: stack)" in spend_off
    assert "(3 for the price of 2.5; with coupons: exclusive)" in units

    async def promotions(session: Any) -> list[tuple[Any, ...]]:
        rows = await session.scalars(select(Promotion).order_by(Promotion.id))
        return [(p.id, p.kind, p.threshold, p.value, p.cap, p.stacking) for p in rows]

    assert await _query(tmp_path, promotions) == sorted(
        [
            (ids[0], "spend_off", 3000, 500, None, "stack"),
            (ids[1], "units_price", 3, 250, None, "exclusive"),
            (ids[2], "spend_percent", 100000, 1000, 2000, "stack"),
        ]
    )

    vip, mus, refused, unknown = each(
        cmd.run,
        ("price", "quote", "VIP", "--quantity", "3", "--coupon", "ten"),
        ("price", "quote", "MUS", "--quantity", "3", "--coupon", "TEN"),
        ("price", "quote", "VIP", "--coupon", "FIFTY"),
        ("price", "quote", "VIP", "--coupon", "NOPE"),
    )
    # 3 × 15.55 = 46.65; 满30减5 -> 41.65; 10% of 41.65 = 4.165, rounded down to 4.16 -> 37.49.
    assert vip.returncode == 0, vip.stderr
    assert re.search(r"^\s+list\s+¥46\.65$", vip.stdout, re.M)
    assert re.search(r"^\s+promotion 满30减5\s+-¥5\.00$", vip.stdout, re.M)
    assert re.search(r"^\s+coupon Ten \(TEN\)\s+-¥4\.16$", vip.stdout, re.M)
    assert re.search(r"^\s+payable\s+¥37\.49$", vip.stdout, re.M)
    # 3 × 10.00 for the price of 2.5: 5.00 off; the promotion is exclusive, so no coupon.
    assert re.search(r"^\s+promotion 3 for 2.5\s+-¥5\.00$", mus.stdout, re.M)
    assert re.search(r"^\s+payable\s+¥25\.00$", mus.stdout, re.M)
    assert mus.returncode == 1
    assert mus.stderr.strip() == "quanyi: coupon TEN: promotion 3 for 2.5 does not combine with coupons"
    assert refused.returncode == 1
    assert refused.stderr.strip() == "quanyi: coupon FIFTY: the coupon needs a spend of at least ¥50.00"
    assert re.search(r"^\s+payable\s+¥15\.55$", refused.stdout, re.M)
    assert unknown.returncode == 1 and unknown.stderr.strip() == "quanyi: coupon NOPE: no such coupon code"

    listed = cmd.ok("promotion", "list")
    assert re.search(rf"^{ids[2]}\s+Big spender\s+spend ¥1,?000\.00, 10% off, cap ¥20\.00\s+all\s+"
                     r"2026-01-01 00:00 - 2026-01-02 00:00\s+stack\s+yes$", listed, re.M)  # fmt: skip
    assert f"promotion {ids[0]} (满30减5) disabled" in cmd.ok("promotion", "disable", str(ids[0]))
    # Without the promotion: 10% of 46.65 = 4.665 -> 4.66 off, 41.99 to pay.
    assert re.search(
        r"^\s+payable\s+¥41\.99$", cmd.ok("price", "quote", "VIP", "--quantity", "3", "--coupon", "TEN"), re.M
    )

    add = ("promotion", "add", "--name", "X")
    assert_refused(
        cmd,
        {
            (*add, "--spend", "10", "--percent-off", "100"): "between 0.01 and 99.99",
            (*add, "--units", "3", "--pay-for", "3"): "N units for the price of M",
            (*add, "--spend", "10", "--off", "1", "--cap", "1"): "for percentage promotions",
            (*add, "--off", "1", "--skus", "NOPE"): "no product NOPE",
            (*add, "--off", "1", "--starts", "2026-02-01", "--ends", "2026-01-01"): "the end must come after the start",
            ("price", "quote", "NOPE"): "no product NOPE",
        },
    )
    assert len(await _query(tmp_path, promotions)) == 3


async def test_bundles_are_made_of_products_and_list_what_the_bot_can_sell(cmd, tmp_path):
    core = await _open(tmp_path, upgrade=True)
    try:
        await product_with_stock(core, tmp_path, sku="VIP", price="15.00", units=3)
    finally:
        await core.close()
    added = cmd.ok("product", "add", "--sku", "MUS", "--name", "Music", "--kind", "redeem_link", "--price", "10.00",
                   "--category", "Music")  # fmt: skip
    assert "added MUS" in added
    out = cmd.ok("bundle", "add", "PACK", "--name", "VIP + Music", "--price", "20.00", "--parts", "VIP:1,MUS",
                 "--category", "combo")  # fmt: skip
    assert "added bundle PACK: VIP + Music at ¥20.00 = VIP×1 + MUS×1" in out

    async def parts(session: Any) -> tuple[Product, list[tuple[str, int]]]:
        bundle = await get_product(session, "PACK")
        return bundle, [(p.product.sku, p.quantity) for p in await bundles.parts_of(session, bundle.id)]

    bundle, made = await _query(tmp_path, parts)
    assert (bundle.kind, bundle.price, bundle.category, made) == ("bundle", 2000, "combo", [("VIP", 1), ("MUS", 1)])
    assert re.search(r"^PACK\s+¥20\.00\s+3\s+on\s+VIP×1 \+ MUS×1\s+VIP \+ Music$", cmd.ok("bundle", "list"), re.M)

    assert "bundle PACK = VIP×2" in cmd.ok("bundle", "parts", "PACK", "--parts", "VIP:2")
    listed, products = each(cmd.ok, ("bundle", "list"), ("product", "list"))
    assert re.search(r"^PACK\s+¥20\.00\s+1\s+on\s+VIP×2\s", listed, re.M)  # 3 keys make one bundle of two
    assert re.search(r"^MUS\s+redeem_link\s.*\smusic\s+Music$", products, re.M)

    assert_refused(
        cmd,
        {
            ("bundle", "add", "BIG", "--name", "Big", "--price", "30", "--parts", "PACK:1,MUS:1"): "PACK is a bundle",
            ("bundle", "add", "BIG", "--name", "Big", "--price", "30", "--parts", "NOPE:1"): "no product NOPE",
            ("bundle", "add", "BIG", "--name", "Big", "--price", "30", "--parts", "VIP:x"): "not a part",
            ("bundle", "parts", "MUS", "--parts", "VIP:1"): "MUS is not a bundle product",
        },
    )
    assert await _query(tmp_path, lambda s: s.scalar(select(Product).where(Product.sku == "BIG"))) is None
    assert (await _query(tmp_path, parts))[1] == [("VIP", 2)]

    assert "updated MUS" in cmd.ok("product", "update", "MUS", "--category", "")
    assert (await _query(tmp_path, lambda s: get_product(s, "MUS"))).category is None
