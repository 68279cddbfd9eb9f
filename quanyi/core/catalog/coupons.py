"""Coupons: campaigns, their codes, and the uses orders take and give back.

A use is taken when an order is placed (counters move by conditional UPDATEs, so concurrent
orders never exceed a limit) and given back when the unpaid order expires or is cancelled.
"""

from __future__ import annotations

import csv
import io
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.catalog.pricing import BASIS_POINTS, CouponRule, Reason, Skipped, in_window, scope_set
from quanyi.core.errors import AlreadyExists, CouponRejected, InvalidInput, NotFound
from quanyi.core.models import (
    Channel,
    Coupon,
    CouponCode,
    CouponUse,
    CouponUseStatus,
    DiscountKind,
    Product,
    utcnow,
)
from quanyi.core.money import exponent
from quanyi.core.platform import export

_CODE = re.compile(r"^[A-Z0-9][A-Z0-9_-]{2,31}$")
# Generated codes avoid characters people misread (0/O, 1/I/L).
_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
MAX_BATCH = 100_000
MAX_CODES_FILE = 2_000_000  # bytes


def normalize_code(text: str | None) -> str | None:
    """A code as stored (upper case), or None when it cannot be one."""
    value = (text or "").strip().upper()
    return value if _CODE.match(value) else None


def join_scope(values: Iterable[str]) -> str:
    return ",".join(sorted({v.strip() for v in values if v and v.strip()}))


async def check_scope(session: AsyncSession, skus: Sequence[str], channels: Sequence[str]) -> None:
    if skus:
        found = set(await session.scalars(select(Product.sku).where(Product.sku.in_(list(skus)))))
        missing = sorted(set(skus) - found)
        if missing:
            raise NotFound(f"no product {', '.join(missing)}", key="err_catalog.no_products", skus=", ".join(missing))
    if channels:
        found = set(await session.scalars(select(Channel.code).where(Channel.code.in_(list(channels)))))
        missing = sorted(set(channels) - found - {"bot"})
        if missing:
            raise NotFound(
                f"no channel {', '.join(missing)}", key="err_catalog.no_channels", channels=", ".join(missing)
            )


def check_window(starts_at: datetime | None, ends_at: datetime | None) -> None:
    if starts_at is not None and ends_at is not None and ends_at <= starts_at:
        raise InvalidInput("the end must come after the start", key="err_catalog.window")


async def create_coupon(
    session: AsyncSession,
    *,
    name: str,
    kind: str,
    value: int,
    currency: str,
    cap: int | None = None,
    min_spend: int = 0,
    skus: Sequence[str] = (),
    categories: Sequence[str] = (),
    channels: Sequence[str] = (),
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
    max_uses: int | None = None,
    per_buyer: int | None = None,
) -> Coupon:
    """A campaign. ``value`` is minor units off (``amount``) or basis points off (``percent``,
    1-10,000, at most ``cap`` minor units); codes are added with ``add_code`` / ``generate_codes``."""
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise InvalidInput("name: 1-100 characters", key="err_catalog.rule_name")
    if kind not in (DiscountKind.AMOUNT, DiscountKind.PERCENT):
        raise InvalidInput("a coupon takes an amount or a percentage off", key="err_catalog.coupon_kind")
    exponent(currency)
    if kind == DiscountKind.PERCENT and not 0 < value <= BASIS_POINTS:
        raise InvalidInput("a percentage off is between 0.01 and 100", key="err_catalog.coupon_percent")
    if kind == DiscountKind.AMOUNT and value <= 0:
        raise InvalidInput("the amount off must be greater than zero", key="err_catalog.amount_off")
    if cap is not None and (cap <= 0 or kind != DiscountKind.PERCENT):
        raise InvalidInput("a cap is a positive amount, for percentage coupons", key="err_catalog.coupon_cap")
    if min_spend < 0:
        raise InvalidInput("the minimum spend cannot be negative", key="err_catalog.min_spend")
    if max_uses is not None and max_uses <= 0:
        raise InvalidInput("total uses must be at least 1", key="err_catalog.max_uses")
    if per_buyer is not None and per_buyer <= 0:
        raise InvalidInput("uses per buyer must be at least 1", key="err_catalog.per_buyer_uses")
    check_window(starts_at, ends_at)
    await check_scope(session, skus, channels)
    coupon = Coupon(
        name=name,
        kind=kind,
        value=value,
        cap=cap,
        min_spend=min_spend,
        currency=currency,
        skus=join_scope(skus),
        categories=join_scope(categories),
        channels=join_scope(channels),
        starts_at=starts_at,
        ends_at=ends_at,
        max_uses=max_uses,
        per_buyer=per_buyer,
        uses=0,
        active=True,
        created_at=utcnow(),
    )
    session.add(coupon)
    await session.flush()
    return coupon


async def get_coupon(session: AsyncSession, coupon_id: int) -> Coupon:
    coupon = await session.get(Coupon, coupon_id)
    if coupon is None:
        raise NotFound(f"no coupon {coupon_id}", key="err_catalog.no_coupon", coupon_id=coupon_id)
    return coupon


async def add_code(session: AsyncSession, coupon_id: int, code: str, *, max_uses: int | None = 1) -> CouponCode:
    """One named code (e.g. ``SPRING10``); ``max_uses`` None = as often as the campaign allows."""
    await get_coupon(session, coupon_id)
    value = normalize_code(code)
    if value is None:
        raise InvalidInput("a code is 3-32 letters, digits, '-' or '_'", key="err_catalog.bad_code")
    if max_uses is not None and max_uses <= 0:
        raise InvalidInput("uses per code must be at least 1", key="err_catalog.code_uses")
    row = CouponCode(coupon_id=coupon_id, code=value, max_uses=max_uses, uses=0, created_at=utcnow())
    try:
        async with session.begin_nested():
            session.add(row)
    except IntegrityError:
        raise AlreadyExists(f"code {value} exists already", key="err_catalog.code_exists", coupon_code=value) from None
    return row


async def generate_codes(
    session: AsyncSession, coupon_id: int, count: int, *, prefix: str = "", length: int = 10, max_uses: int | None = 1
) -> list[str]:
    """``count`` new random codes, unique across all coupons."""
    await get_coupon(session, coupon_id)
    if not 1 <= count <= MAX_BATCH:
        raise InvalidInput(
            f"generate between 1 and {MAX_BATCH} codes at a time", key="err_catalog.batch", most=MAX_BATCH
        )
    prefix = (prefix or "").strip().upper()
    if prefix and normalize_code(prefix + "X" * 3) is None:
        raise InvalidInput("a prefix is letters, digits, '-' or '_'", key="err_catalog.bad_prefix")
    if not 6 <= length <= 24 or len(prefix) + length > 32:
        raise InvalidInput("codes are 6-24 random characters, 32 with the prefix", key="err_catalog.code_length")
    made: list[str] = []
    while len(made) < count:
        want = count - len(made)
        batch = {prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length)) for _ in range(want)}
        taken = set(await session.scalars(select(CouponCode.code).where(CouponCode.code.in_(list(batch)))))
        fresh = sorted(batch - taken)
        now = utcnow()
        try:
            async with session.begin_nested():
                session.add_all(
                    [CouponCode(coupon_id=coupon_id, code=c, max_uses=max_uses, uses=0, created_at=now) for c in fresh]
                )
        except IntegrityError:
            continue  # another batch wrote one of these codes meanwhile: draw again
        made.extend(fresh)
    return made


@dataclass(frozen=True)
class CodeImport:
    added: int
    duplicates: int
    rejected: list[tuple[int, str]]  # (line number, why)


async def import_codes(session: AsyncSession, coupon_id: int, data: bytes, *, max_uses: int | None = 1) -> CodeImport:
    """Codes from a text or CSV file (the first column; a ``code`` header is skipped). A file
    with any malformed line imports nothing and says which lines; known codes are skipped."""
    await get_coupon(session, coupon_id)
    if len(data) > MAX_CODES_FILE:
        mb = MAX_CODES_FILE // 1_000_000
        raise InvalidInput(f"the file is larger than {mb} MB", key="err_catalog.file_too_big", mb=mb)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput("the file is not UTF-8 text", key="err_catalog.not_utf8") from None
    codes: list[str] = []
    rejected: list[tuple[int, str]] = []
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        cell = row[0].strip() if row else ""
        if not cell or (number == 1 and cell.lower() == "code"):
            continue
        value = normalize_code(cell)
        if value is None:
            rejected.append((number, "not a code (3-32 letters, digits, '-' or '_')"))
        else:
            codes.append(value)
    if rejected:
        return CodeImport(0, 0, rejected)
    unique = list(dict.fromkeys(codes))
    known: set[str] = set()
    for start in range(0, len(unique), 500):
        chunk = unique[start : start + 500]
        known |= set(await session.scalars(select(CouponCode.code).where(CouponCode.code.in_(chunk))))
    fresh = [c for c in unique if c not in known]
    now = utcnow()
    session.add_all([CouponCode(coupon_id=coupon_id, code=c, max_uses=max_uses, uses=0, created_at=now) for c in fresh])
    await session.flush()
    return CodeImport(len(fresh), len(codes) - len(fresh), [])


async def export_csv(session: AsyncSession, coupon_id: int) -> str:
    """The campaign's codes as CSV: code, uses, max_uses, coupon_id, coupon (its name)."""
    coupon = await get_coupon(session, coupon_id)
    lines: list[list[export.Cell]] = [["code", "uses", "max_uses", "coupon_id", "coupon"]]
    rows = await session.execute(
        select(CouponCode.code, CouponCode.uses, CouponCode.max_uses)
        .where(CouponCode.coupon_id == coupon_id)
        .order_by(CouponCode.id)
    )
    lines += [[code, uses, max_uses, coupon.id, coupon.name] for code, uses, max_uses in rows.all()]
    return export.csv_text(lines)


@dataclass(frozen=True)
class CouponSummary:
    coupon: Coupon
    codes: int
    spent: int  # uses by paid orders and pending ones (``uses``)


async def list_coupons(session: AsyncSession) -> list[CouponSummary]:
    counts = dict(
        (await session.execute(select(CouponCode.coupon_id, func.count()).group_by(CouponCode.coupon_id))).all()
    )
    coupons = await session.scalars(select(Coupon).order_by(Coupon.id.desc()))
    return [CouponSummary(c, int(counts.get(c.id, 0)), c.uses) for c in coupons]


async def set_active(session: AsyncSession, coupon_id: int, active: bool) -> Coupon:
    coupon = await get_coupon(session, coupon_id)
    coupon.active = active  # through the ORM: the audit trail records the old and new value
    await session.flush()
    return coupon


def rule_of(coupon: Coupon, code: CouponCode) -> CouponRule:
    return CouponRule(
        id=coupon.id,
        code_id=code.id,
        code=code.code,
        name=coupon.name,
        kind=coupon.kind,
        value=coupon.value,
        currency=coupon.currency,
        cap=coupon.cap,
        min_spend=coupon.min_spend,
        skus=scope_set(coupon.skus),
        categories=scope_set(coupon.categories),
    )


async def lookup(
    session: AsyncSession, text: str, *, channel: str, user_id: int | None, now: datetime | None = None
) -> tuple[CouponRule | None, Skipped | None]:
    """The rule a typed code stands for, or why it cannot be used here and now. Limits are
    checked here to tell the buyer early; ``take`` enforces them."""
    now = now or utcnow()
    value = normalize_code(text)
    row = None
    if value is not None:
        row = (
            await session.execute(
                select(Coupon, CouponCode)
                .join(Coupon, Coupon.id == CouponCode.coupon_id)
                .where(CouponCode.code == value)
            )
        ).first()
    shown = value or (text or "").strip()[:32]
    if row is None:
        return None, Skipped("coupon", 0, shown, Reason.UNKNOWN)
    coupon, code = row
    refusal: tuple[str, dict[str, object]] | None = None
    if not coupon.active:
        refusal = (Reason.INACTIVE, {})
    elif coupon.starts_at is not None and now < coupon.starts_at:
        refusal = (Reason.NOT_STARTED, {"starts_at": coupon.starts_at.isoformat()})
    elif not in_window(coupon.starts_at, coupon.ends_at, now):
        refusal = (Reason.EXPIRED, {})
    elif scope_set(coupon.channels) and channel not in scope_set(coupon.channels):
        refusal = (Reason.CHANNEL, {"channel": channel})
    elif (coupon.max_uses is not None and coupon.uses >= coupon.max_uses) or (
        code.max_uses is not None and code.uses >= code.max_uses
    ):
        refusal = (Reason.USED_UP, {})
    elif coupon.per_buyer is not None and await _buyer_uses(session, coupon.id, user_id) >= coupon.per_buyer:
        refusal = (Reason.PER_BUYER, {"per_buyer": coupon.per_buyer})
    if refusal is not None:
        return None, Skipped("coupon", coupon.id, code.code, refusal[0], refusal[1])
    return rule_of(coupon, code), None


async def _buyer_uses(session: AsyncSession, coupon_id: int, user_id: int | None) -> int:
    if user_id is None:
        return 0
    used = await session.scalar(
        select(func.count()).where(
            CouponUse.coupon_id == coupon_id, CouponUse.user_id == user_id, CouponUse.status == CouponUseStatus.TAKEN
        )
    )
    return int(used or 0)


async def take(
    session: AsyncSession, rule: CouponRule, *, order_id: int, user_id: int | None, discount: int, currency: str
) -> None:
    """Take one use for ``order_id``, or raise ``CouponRejected`` (the caller rolls back).

    The campaign's counter is bumped first: that row stays locked until commit, so two
    orders of one buyer are counted one after the other for the per-buyer limit."""
    now = utcnow()
    bumped = await session.execute(
        update(Coupon)
        .where(
            Coupon.id == rule.id,
            Coupon.active.is_(True),
            (Coupon.max_uses.is_(None)) | (Coupon.uses < Coupon.max_uses),
            (Coupon.starts_at.is_(None)) | (Coupon.starts_at <= now),
            (Coupon.ends_at.is_(None)) | (Coupon.ends_at > now),
        )
        .values(uses=Coupon.uses + 1)
        .returning(Coupon.per_buyer)
    )
    row = bumped.first()
    if row is None:
        raise CouponRejected(f"coupon {rule.code} cannot be used any more", reason=Reason.USED_UP, code=rule.code)
    code_bumped = await session.execute(
        update(CouponCode)
        .where(CouponCode.id == rule.code_id, (CouponCode.max_uses.is_(None)) | (CouponCode.uses < CouponCode.max_uses))
        .values(uses=CouponCode.uses + 1)
        .returning(CouponCode.id)
    )
    if code_bumped.first() is None:
        raise CouponRejected(f"coupon {rule.code} has been used", reason=Reason.USED_UP, code=rule.code)
    per_buyer = row[0]
    if per_buyer is not None and await _buyer_uses(session, rule.id, user_id) >= per_buyer:
        raise CouponRejected(
            f"you have used coupon {rule.code} {per_buyer} times already",
            reason=Reason.PER_BUYER,
            code=rule.code,
            per_buyer=per_buyer,
        )
    session.add(
        CouponUse(
            coupon_id=rule.id,
            code_id=rule.code_id,
            order_id=order_id,
            user_id=user_id,
            discount=discount,
            currency=currency,
            status=CouponUseStatus.TAKEN,
            created_at=now,
        )
    )
    await session.flush()


async def give_back(session: AsyncSession, order_id: int) -> bool:
    """An unpaid order's coupon use goes back (once, however often this runs)."""
    released = (
        await session.execute(
            update(CouponUse)
            .where(CouponUse.order_id == order_id, CouponUse.status == CouponUseStatus.TAKEN)
            .values(status=CouponUseStatus.RELEASED, released_at=utcnow())
            .returning(CouponUse.coupon_id, CouponUse.code_id)
        )
    ).first()
    if released is None:
        return False
    coupon_id, code_id = released
    await session.execute(update(Coupon).where(Coupon.id == coupon_id).values(uses=Coupon.uses - 1))
    await session.execute(update(CouponCode).where(CouponCode.id == code_id).values(uses=CouponCode.uses - 1))
    return True


@dataclass(frozen=True)
class UseRow:
    order_id: int
    code: str
    user_id: int | None
    discount: int
    currency: str
    status: str
    created_at: datetime


async def uses_of(session: AsyncSession, coupon_id: int, *, limit: int = 50) -> list[UseRow]:
    rows = await session.execute(
        select(
            CouponUse.order_id,
            CouponCode.code,
            CouponUse.user_id,
            CouponUse.discount,
            CouponUse.currency,
            CouponUse.status,
            CouponUse.created_at,
        )
        .join(CouponCode, CouponCode.id == CouponUse.code_id)
        .where(CouponUse.coupon_id == coupon_id)
        .order_by(CouponUse.id.desc())
        .limit(limit)
    )
    return [UseRow(*r) for r in rows.all()]
