"""``quanyi coupon``, ``promotion``, ``bundle`` and ``price quote``: pricing from the command line."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from quanyi.cli._common import print_table, with_core
from quanyi.core.catalog.admin_views import DiscountKind, PromotionKind, Stacking
from quanyi.core.errors import QuanyiError
from quanyi.core.money import Money
from quanyi.core.platform import export

if TYPE_CHECKING:
    from quanyi.core.catalog.admin_views import BundleView, CodesFile, CouponView, PromotionView

# Why a coupon (or a promotion beaten by one) did not apply, for `price quote` and scripts.
_REASONS = {
    "unknown": "no such coupon code",
    "inactive": "the coupon is disabled",
    "not_started": "the coupon has not started yet",
    "expired": "the coupon has expired",
    "currency": "the coupon is in {currency}, the product is not",
    "not_in_scope": "the coupon does not cover this product",
    "channel": "the coupon is not valid on channel {channel}",
    "min_spend": "the coupon needs a spend of at least {min_spend}",
    "used_up": "the coupon is used up",
    "per_buyer": "this buyer has used the coupon {per_buyer} times already",
    "not_combinable": "promotion {promotion} does not combine with coupons",
    "promotion_better": "promotion {promotion} takes more off",
    "at_floor": "the price is at its floor already",
}


# --- rendering -------------------------------------------------------------------------------


def _money(minor: int, currency: str) -> str:
    return str(Money(minor, currency))


def _percent(basis_points: int) -> str:
    from quanyi.core.books.commissions import format_rate

    return format_rate(basis_points)


def coupon_rule(coupon: CouponView) -> str:
    if coupon.kind == DiscountKind.PERCENT:
        cap = f", cap {_money(coupon.cap, coupon.currency)}" if coupon.cap is not None else ""
        return f"{_percent(coupon.value)} off{cap}"
    return f"{_money(coupon.value, coupon.currency)} off"


def promotion_rule(promotion: PromotionView) -> str:
    if promotion.kind == PromotionKind.UNITS_PRICE:
        whole, hundredths = divmod(promotion.value, 100)
        pay = f"{whole}.{hundredths:02d}".rstrip("0").rstrip(".") if hundredths else str(whole)
        return f"{promotion.threshold} for the price of {pay}"
    spend = f"spend {_money(promotion.threshold, promotion.currency)}, "
    if promotion.kind == PromotionKind.SPEND_PERCENT:
        cap = f", cap {_money(promotion.cap, promotion.currency)}" if promotion.cap is not None else ""
        return f"{spend}{_percent(promotion.value)} off{cap}"
    return f"{spend}{_money(promotion.value, promotion.currency)} off"


def _scope(row: CouponView | PromotionView) -> str:
    parts = [
        f"{what} {','.join(values)}"
        for what, values in (("skus", row.skus), ("categories", row.categories), ("channels", row.channels))
        if values
    ]
    return "; ".join(parts) or "all"


def _local(when: datetime, tz: str) -> str:
    return f"{when.astimezone(ZoneInfo(tz)):%Y-%m-%d %H:%M}"


def _window(row: CouponView | PromotionView, tz: str) -> str:
    if row.starts_at is None and row.ends_at is None:
        return "always"
    if row.ends_at is None:
        return f"from {_local(row.starts_at, tz)}" if row.starts_at else "always"
    if row.starts_at is None:
        return f"until {_local(row.ends_at, tz)}"
    return f"{_local(row.starts_at, tz)} - {_local(row.ends_at, tz)}"


def _limit(value: int | None) -> str:
    return "unlimited" if value is None else str(value)


def _reason(reason: str, details: dict[str, object], currency: str) -> str:
    values = dict(details)
    min_spend = details.get("min_spend")
    if isinstance(min_spend, int):
        values["min_spend"] = _money(min_spend, str(details.get("currency") or currency))
    try:
        return _REASONS.get(reason, reason).format(**values)
    except (KeyError, IndexError):
        return _REASONS.get(reason, reason)


# --- option helpers ----------------------------------------------------------------------------


def _uses(text: str) -> int | None:
    """``N`` (from 1) or ``unlimited`` -> None, as an argparse type."""
    if text.strip().lower() == "unlimited":
        return None
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number from 1, or unlimited")
    return int(text)


def _positive(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a whole number from 1")
    return int(text)


def _percent_field(text: str | None) -> str | None:
    """``--percent-off 10`` (or ``10%``) -> ``10%`` for ``pricing_input``."""
    if text is None:
        return None
    text = text.strip()
    return text if text.endswith("%") else text + "%"


def _scope_fields(args: argparse.Namespace) -> dict[str, str | None]:
    return {
        "skus": args.skus,
        "categories": args.categories,
        "channels": args.channels,
        "starts": args.starts,
        "ends": args.ends,
    }


def _write_codes(made: CodesFile, out: str | None, *, data_dir: Path) -> str:
    """Write codes as CSV (a ``code`` header, one per line: `coupon codes --import` reads it back);
    returns where they went. Codes are as good as money: the file is created 0600."""
    text = export.csv_text([["code"], *([c] for c in made.codes)], line_end="\n")
    return _write_csv(text, out, data_dir=data_dir, stem=f"coupon-{made.coupon_id}-codes")


class _CodesWriter:
    """Writes new codes where ``--out`` says while the service still holds the transaction."""

    def __init__(self, out: str | None, data_dir: Path) -> None:
        self.out, self.data_dir, self.where = out, data_dir, ""

    def __call__(self, made: CodesFile) -> None:
        self.where = _write_codes(made, self.out, data_dir=self.data_dir)


def _write_csv(text: str, out: str | None, *, data_dir: Path, stem: str) -> str:
    if out == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return "stdout"
    if out is None:
        folder = data_dir / "exports"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{stem}-{datetime.now(UTC):%Y%m%d-%H%M%S-%f}.csv"
    else:
        path = Path(out)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
    return str(path)


def _say(args: argparse.Namespace, text: str) -> None:
    """A summary line; on stderr when the CSV itself goes to stdout (``--out -``)."""
    print(text, file=sys.stderr if getattr(args, "out", None) == "-" else sys.stdout)


# --- coupons -----------------------------------------------------------------------------------


def cmd_coupon_create(args: argparse.Namespace) -> int:
    from quanyi.core.catalog.service import NewCoupon

    if args.code_uses is not _UNSET and args.code is None:
        raise QuanyiError("--code-uses goes with --code")
    if (args.prefix is not None or args.out is not None) and args.generate is None:
        raise QuanyiError("--prefix and --out go with --generate")
    request = NewCoupon(
        fields={
            "name": args.name,
            "off": args.amount_off if args.amount_off is not None else _percent_field(args.percent_off),
            "cap": args.cap,
            "min": args.min_spend,
            "uses": args.max_uses,
            "per_buyer": args.per_buyer,
            **_scope_fields(args),
        },
        currency=args.currency,
        code=args.code,
        code_uses=None if args.code_uses is _UNSET else args.code_uses,
        generate=args.generate or 0,
        prefix=args.prefix or "",
    )

    async def run(core: Any) -> int:
        # Written before the commit: a file that cannot be written leaves no campaign behind.
        writer = _CodesWriter(args.out, core.settings.data_dir)
        made = await core.catalog.create_coupon(request, hand_over=writer)
        coupon = made.coupon
        _say(args, f"created coupon {coupon.id}: {coupon.name} ({coupon_rule(coupon)})")
        if made.code is not None:
            _say(args, f"  code {made.code.code}: {_limit(made.code.max_uses)} uses")
        if made.generated is not None:
            _say(args, f"  generated {len(made.generated.codes)} one-use codes -> {writer.where}")
        return 0

    return asyncio.run(with_core(run))


def cmd_coupon_codes(args: argparse.Namespace) -> int:
    if args.prefix is not None and args.generate is None:
        raise QuanyiError("--prefix goes with --generate")
    if args.out is not None and args.generate is None:
        raise QuanyiError("--out goes with --generate")
    data: bytes | None = None
    if args.import_file is not None:
        path = Path(args.import_file)
        if not path.is_file():
            raise QuanyiError(f"no such file: {path}")
        data = path.read_bytes()
    # --uses when given; otherwise the core decides (one use each, unlimited for a named code).
    uses = {} if args.uses is _UNSET else {"max_uses": args.uses}

    async def run(core: Any) -> int:
        cid = args.coupon_id
        if args.generate is not None:
            writer = _CodesWriter(args.out, core.settings.data_dir)
            made = await core.catalog.generate_codes(
                cid, args.generate, prefix=args.prefix or "", hand_over=writer, **uses
            )
            each = _limit(made.max_uses)
            text = f"coupon {cid}: generated {len(made.codes)} codes ({each} uses each) -> {writer.where}"
        elif data is not None:
            report = await core.catalog.import_codes(cid, data, **uses)
            if report.rejected:
                shown = ", ".join(str(line) for line, _ in report.rejected[:20])
                more = f" and {len(report.rejected) - 20} more" if len(report.rejected) > 20 else ""
                raise QuanyiError(f"nothing imported: malformed lines {shown}{more} ({report.rejected[0][1]})")
            text = f"coupon {cid}: added {report.added}, duplicates {report.duplicates}"
        else:
            code = await core.catalog.add_code(cid, args.add, **uses)
            text = f"coupon {cid}: added code {code.code} ({_limit(code.max_uses)} uses)"
        _say(args, text)
        return 0

    return asyncio.run(with_core(run))


def cmd_coupon_export(args: argparse.Namespace) -> int:
    async def run(core: Any) -> int:
        text = (await core.catalog.export_codes(args.coupon_id)).csv
        where = _write_csv(text, args.out, data_dir=core.settings.data_dir, stem=f"coupon-{args.coupon_id}")
        if where != "stdout":
            print(f"coupon {args.coupon_id}: {max(text.count(chr(10)) - 1, 0)} codes -> {where}")
        return 0

    return asyncio.run(with_core(run))


def cmd_coupon_list(args: argparse.Namespace) -> int:
    async def run(core: Any) -> int:
        tz = core.settings.timezone
        rows: list[CouponView] = await core.catalog.coupon_list()
        print_table(
            ["id", "name", "rule", "min spend", "scope", "window", "uses/max", "per buyer", "codes", "active"],
            [
                [
                    c.id,
                    c.name,
                    coupon_rule(c),
                    _money(c.min_spend, c.currency) if c.min_spend else "-",
                    _scope(c),
                    _window(c, tz),
                    f"{c.spent}/{_limit(c.max_uses)}",
                    _limit(c.per_buyer),
                    c.codes,
                    "yes" if c.active else "no",
                ]
                for c in rows
            ],
        )
        return 0

    return asyncio.run(with_core(run))


def cmd_coupon_show(args: argparse.Namespace) -> int:
    async def run(core: Any) -> int:
        tz = core.settings.timezone
        detail = await core.catalog.coupon_detail(args.coupon_id, uses=args.limit)
        c = detail.coupon
        print(f"coupon {c.id}: {c.name}  {'active' if c.active else 'disabled'}")
        print(f"  rule: {coupon_rule(c)}" + (f", min spend {_money(c.min_spend, c.currency)}" if c.min_spend else ""))
        print(f"  scope: {_scope(c)}")
        print(f"  window: {_window(c, tz)} ({tz})")
        print(f"  uses: {c.uses} of {_limit(c.max_uses)}; per buyer {_limit(c.per_buyer)}")
        print("recent uses:")
        print_table(
            ["order", "code", "buyer", "discount", "status", f"at ({tz})"],
            [
                [u.order, u.code, u.user_id or "", _money(u.discount, u.currency), u.status, _local(u.created_at, tz)]
                for u in detail.uses
            ],
        )
        return 0

    return asyncio.run(with_core(run))


def _coupon_active(active: bool) -> Any:
    def command(args: argparse.Namespace) -> int:
        async def run(core: Any) -> int:
            coupon = await core.catalog.set_coupon_active(args.coupon_id, active)
            print(f"coupon {coupon.id} ({coupon.name}) {'enabled' if active else 'disabled'}")
            return 0

        return asyncio.run(with_core(run))

    return command


# --- promotions --------------------------------------------------------------------------------


def cmd_promotion_add(args: argparse.Namespace) -> int:
    fields = {
        "name": args.name,
        "spend": args.spend,
        "off": args.off if args.off is not None else _percent_field(args.percent_off),
        "cap": args.cap,
        "units": args.units,
        "pay": args.pay_for,
        "stacking": args.stacking,
        **_scope_fields(args),
    }

    async def run(core: Any) -> int:
        promotion = await core.catalog.add_promotion(fields, currency=args.currency)
        print(
            f"added promotion {promotion.id}: {promotion.name} ({promotion_rule(promotion)}; "
            f"with coupons: {promotion.stacking})"
        )
        return 0

    return asyncio.run(with_core(run))


def cmd_promotion_list(args: argparse.Namespace) -> int:
    async def run(core: Any) -> int:
        tz = core.settings.timezone
        rows: list[PromotionView] = await core.catalog.promotion_list()
        print_table(
            ["id", "name", "rule", "scope", "window", "coupons", "active"],
            [
                [p.id, p.name, promotion_rule(p), _scope(p), _window(p, tz), p.stacking, "yes" if p.active else "no"]
                for p in rows
            ],
        )
        return 0

    return asyncio.run(with_core(run))


def _promotion_active(active: bool) -> Any:
    def command(args: argparse.Namespace) -> int:
        async def run(core: Any) -> int:
            promotion = await core.catalog.set_promotion_active(args.promotion_id, active)
            print(f"promotion {promotion.id} ({promotion.name}) {'enabled' if active else 'disabled'}")
            return 0

        return asyncio.run(with_core(run))

    return command


# --- bundles -----------------------------------------------------------------------------------


def _parts_text(bundle: BundleView) -> str:
    return " + ".join(f"{p.sku}×{p.quantity}" for p in bundle.parts) or "(no parts)"


def cmd_bundle_add(args: argparse.Namespace) -> int:
    async def run(core: Any) -> int:
        bundle = await core.catalog.create_bundle(
            args.sku,
            name=args.name,
            price=args.price,
            currency=args.currency,
            parts=args.parts,
            description=args.description or "",
            category=args.category,
        )
        print(f"added bundle {bundle.sku}: {bundle.name} at {bundle.price} = {_parts_text(bundle)}")
        return 0

    return asyncio.run(with_core(run))


def cmd_bundle_parts(args: argparse.Namespace) -> int:
    async def run(core: Any) -> int:
        bundle = await core.catalog.set_bundle_parts(args.sku, args.parts)
        print(f"bundle {args.sku} = {_parts_text(bundle)}")
        return 0

    return asyncio.run(with_core(run))


def cmd_bundle_list(args: argparse.Namespace) -> int:
    from quanyi.core.catalog.admin_views import UNCAPPED

    async def run(core: Any) -> int:
        rows: list[BundleView] = await core.catalog.bundle_list()
        table = [
            [
                b.sku,
                str(b.price),
                "on demand" if b.units >= UNCAPPED else b.units,
                "on" if b.active else "off",
                _parts_text(b),
                b.name,
            ]
            for b in rows
        ]
        print_table(["sku", "price", "available", "sale", "parts", "name"], table)
        return 0

    return asyncio.run(with_core(run))


# --- quotes ------------------------------------------------------------------------------------


def cmd_price_quote(args: argparse.Namespace) -> int:
    async def run(core: Any) -> int:
        quote = await core.catalog.quote(
            args.sku, args.quantity, channel=args.channel, user_id=args.user, coupon_code=args.coupon
        )
        b = quote.breakdown
        cur = b.currency
        print(f"{quote.sku} × {quote.quantity} at {_money(quote.unit_price, cur)} on {quote.channel}")
        rows: list[tuple[str, str]] = [("list", _money(b.list_amount, cur))]
        for a in b.adjustments:
            what = f"{a.kind} {a.name}" + (f" ({a.code})" if a.code else "")
            rows.append((what + (", capped at floor" if a.capped else ""), "-" + _money(a.amount, cur)))
        rows.append(("payable", _money(b.payable, cur)))
        width = max(len(label) for label, _ in rows)
        amounts = max(len(amount) for _, amount in rows)
        for label, amount in rows:
            print(f"  {label.ljust(width)}  {amount.rjust(amounts)}")
        for s in b.skipped:
            why = "the coupon takes more off" if s.kind == "promotion" else _reason(s.reason, dict(s.details), cur)
            print(f"skipped {s.kind} {s.name}: {why}")
        refusal = b.coupon_refusal
        if refusal is not None:
            raise QuanyiError(f"coupon {refusal.name}: {_reason(refusal.reason, dict(refusal.details), cur)}")
        return 0

    return asyncio.run(with_core(run))


# --- parsers -----------------------------------------------------------------------------------

_UNSET: Any = object()  # an option not given, told apart from "unlimited" (None)

_TIMES = "(QUANYI_TIMEZONE), e.g. 2026-12-01 or '2026-12-01 18:00'"


def _add_scope_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--skus", metavar="A,B", help="only these products (default: all)")
    parser.add_argument("--categories", metavar="C,D", help="only products in these categories")
    parser.add_argument("--channels", metavar="bot,CODE", help="only on these channels (default: all)")
    parser.add_argument("--starts", metavar="TIME", help=f"in force from this time {_TIMES}")
    parser.add_argument("--ends", metavar="TIME", help=f"in force until this time {_TIMES}")
    parser.add_argument("--currency", default="CNY", help="currency of the amounts (default CNY)")


def add_parser(sub: Any) -> None:
    """``coupon``, ``promotion``, ``bundle`` and ``price`` under the ``quanyi`` parser."""
    coupon = sub.add_parser("coupon", help="coupon campaigns and their codes").add_subparsers(
        dest="coupon_command", required=True
    )
    create = coupon.add_parser(
        "create",
        help="create a coupon campaign; prints its id",
        description="A campaign holds the rule; buyers type one of its codes. --code adds a named code "
        "(unlimited uses within the campaign's limits unless --code-uses), --generate N makes N one-use codes "
        "and writes them as CSV to --out (default: a file under the data dir's exports/; '-' = stdout, and the "
        "summary goes to stderr).",
    )
    create.add_argument("--name", required=True)
    off = create.add_mutually_exclusive_group(required=True)
    off.add_argument("--amount-off", metavar="AMOUNT", help="amount off, e.g. 5.00")
    off.add_argument("--percent-off", metavar="PERCENT", help="percentage off, e.g. 10 or 2.5")
    create.add_argument("--cap", metavar="AMOUNT", help="most a percentage coupon takes off")
    create.add_argument("--min-spend", metavar="AMOUNT", help="the order (in scope) must come to at least this")
    _add_scope_arguments(create)
    create.add_argument("--max-uses", metavar="N", help="uses over all codes (default: unlimited)")
    create.add_argument("--per-buyer", metavar="N", help="uses per buyer (default: unlimited)")
    create.add_argument("--code", help="a named code such as SPRING10 (3-32 letters, digits, '-' or '_')")
    create.add_argument(
        "--code-uses", type=_uses, default=_UNSET, metavar="N|unlimited", help="uses of --code (default unlimited)"
    )
    create.add_argument("--generate", type=_positive, metavar="N", help="make N random one-use codes")
    create.add_argument("--prefix", help="generated codes start with this")
    create.add_argument("--out", metavar="FILE", help="where generated codes go as CSV ('-' = stdout)")
    create.set_defaults(fn=cmd_coupon_create)

    codes = coupon.add_parser(
        "codes",
        help="generate, import or add codes to a campaign",
        description="--import reads a text or CSV file (first column; a 'code' header is skipped). A file with "
        "any malformed line imports nothing and names the lines; codes that exist already are counted as "
        "duplicates. Default uses per code: 1 for --generate and --import, unlimited for --add.",
    )
    codes.add_argument("coupon_id", type=int, metavar="ID")
    how = codes.add_mutually_exclusive_group(required=True)
    how.add_argument("--generate", type=_positive, metavar="N", help="make N random codes")
    how.add_argument("--import", dest="import_file", metavar="FILE", help="codes from a file")
    how.add_argument("--add", metavar="CODE", help="one named code")
    codes.add_argument("--uses", type=_uses, default=_UNSET, metavar="N|unlimited", help="uses per code")
    codes.add_argument("--prefix", help="--generate: codes start with this")
    codes.add_argument("--out", metavar="FILE", help="--generate: CSV file for the new codes ('-' = stdout)")
    codes.set_defaults(fn=cmd_coupon_codes)

    export = coupon.add_parser("export", help="a campaign's codes as CSV: code, uses, max_uses, coupon_id, coupon")
    export.add_argument("coupon_id", type=int, metavar="ID")
    export.add_argument("--out", metavar="FILE", help="default: a file under the data dir's exports/; '-' = stdout")
    export.set_defaults(fn=cmd_coupon_export)

    coupon.add_parser("list", help="all campaigns, newest first").set_defaults(fn=cmd_coupon_list)
    show = coupon.add_parser("show", help="one campaign's rule and its recent uses")
    show.add_argument("coupon_id", type=int, metavar="ID")
    show.add_argument("--limit", type=_positive, default=50, help="recent uses shown (default 50)")
    show.set_defaults(fn=cmd_coupon_show)
    for name, active in (("disable", False), ("enable", True)):
        toggle = coupon.add_parser(name, help=f"{name} a campaign (all its codes)")
        toggle.add_argument("coupon_id", type=int, metavar="ID")
        toggle.set_defaults(fn=_coupon_active(active))

    promotion = sub.add_parser("promotion", help="promotions: 满减, 满折, N件M价").add_subparsers(
        dest="promotion_command", required=True
    )
    padd = promotion.add_parser(
        "add",
        help="add a promotion; prints its id",
        description="Give --spend with --off (满减) or --percent-off [--cap] (满折), or --units with --pay-for "
        "(N units for the price of M, e.g. --units 3 --pay-for 2.5). When several apply, the one that takes most "
        "off wins; --stacking says how a coupon combines with it: stack (on what is left), best_of (whichever "
        "takes more off) or exclusive (no coupon).",
    )
    padd.add_argument("--name", required=True)
    padd.add_argument("--spend", metavar="AMOUNT", help="spend at least this (in scope)")
    poff = padd.add_mutually_exclusive_group()
    poff.add_argument("--off", metavar="AMOUNT", help="amount off, e.g. 8.00")
    poff.add_argument("--percent-off", metavar="PERCENT", help="percentage off, e.g. 10")
    padd.add_argument("--cap", metavar="AMOUNT", help="most a percentage promotion takes off")
    padd.add_argument("--units", metavar="N", help="every N units of a product ...")
    padd.add_argument("--pay-for", metavar="M", help="... cost M units (up to 2 decimals)")
    _add_scope_arguments(padd)
    padd.add_argument("--stacking", choices=list(Stacking), default=Stacking.STACK.value)
    padd.set_defaults(fn=cmd_promotion_add)
    promotion.add_parser("list", help="all promotions, newest first").set_defaults(fn=cmd_promotion_list)
    for name, active in (("disable", False), ("enable", True)):
        toggle = promotion.add_parser(name, help=f"{name} a promotion")
        toggle.add_argument("promotion_id", type=int, metavar="ID")
        toggle.set_defaults(fn=_promotion_active(active))

    bundle = sub.add_parser("bundle", help="bundles: products sold as one").add_subparsers(
        dest="bundle_command", required=True
    )
    badd = bundle.add_parser(
        "add",
        help="add a bundle product made of other products",
        description="The bundle has its own price; each component is delivered as the product it is.",
    )
    badd.add_argument("sku")
    badd.add_argument("--name", required=True)
    badd.add_argument("--price", required=True, help="decimal text such as 25.00")
    badd.add_argument("--currency", default="CNY")
    badd.add_argument("--parts", required=True, metavar="SKU:N,SKU:N", help="components, e.g. VIP-1M:1,MUSIC-1M:1")
    badd.add_argument("--description")
    badd.add_argument("--category")
    badd.set_defaults(fn=cmd_bundle_add)
    bparts = bundle.add_parser("parts", help="replace a bundle's components (placed orders keep theirs)")
    bparts.add_argument("sku")
    bparts.add_argument("--parts", required=True, metavar="SKU:N,SKU:N")
    bparts.set_defaults(fn=cmd_bundle_parts)
    bundle.add_parser("list", help="bundles with their parts and how many the bot can sell now").set_defaults(
        fn=cmd_bundle_list
    )

    price = sub.add_parser("price", help="pricing").add_subparsers(dest="price_command", required=True)
    quote = price.add_parser(
        "quote",
        help="what an order would cost, with each discount and why others did not apply",
        description="Exits non-zero, with the reason, when the given --coupon does not apply.",
    )
    quote.add_argument("sku")
    quote.add_argument("--quantity", type=_positive, default=1)
    quote.add_argument("--coupon", metavar="CODE")
    quote.add_argument("--channel", default="bot", help="channel code (default bot)")
    quote.add_argument("--user", type=int, metavar="TELEGRAM_ID", help="price as this buyer sees it")
    quote.set_defaults(fn=cmd_price_quote)
