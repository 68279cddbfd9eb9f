"""Redemption links: issuing unguessable tokens, looking them up, and consuming uses.

A token is stored only as an HMAC lookup hash and an AES-GCM ciphertext; it never
appears in a log line or an exception message. A use is taken by one conditional
UPDATE, so concurrent confirmations of a link can never exceed its ``max_uses``.
"""

from __future__ import annotations

import enum
import io
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import qrcode
import qrcode.constants
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.errors import InvalidInput, NotFound, TokenExpired, TokenUnusable, TokenUsedUp, TokenVoid
from quanyi.core.models import Order, Product, RedeemStatus, RedeemToken, Redemption, utcnow
from quanyi.core.platform import audit
from quanyi.core.platform.crypto import KeyRing
from quanyi.core.platform.db import rowcount

TOKEN_BYTES = 24  # 192 bits; token_urlsafe gives 32 characters
# What a presented token may look like, checked before any query: URL-safe base64 of at
# least 128 bits, and nothing long enough to be worth hashing.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{22,64}")
CHANNELS = ("web", "chat", "api")
MAX_ISSUE = 1000


class TokenState(enum.StrEnum):
    VALID = "valid"
    USED_UP = "used_up"
    EXPIRED = "expired"
    VOID = "void"


@dataclass(frozen=True)
class TokenView:
    token_id: int
    order_id: int | None
    product_name: str
    entitlement: str
    uses: int
    max_uses: int
    expires_at: datetime | None
    state: TokenState
    # Set by ``consume``: which use of the link this was (1-based).
    use_no: int | None = None

    @property
    def uses_left(self) -> int:
        return self.max_uses - self.uses if self.state == TokenState.VALID else 0


@dataclass(frozen=True)
class RedemptionRecord:
    token_id: int
    order_line_id: int | None
    use_no: int
    by: str
    channel: str
    at: datetime


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def is_well_formed(token: str) -> bool:
    return len(token) <= 64 and _TOKEN.fullmatch(token) is not None


def link(public_url: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/r/{token}"


def token_aad(product_id: int, token_hash: bytes) -> bytes:
    # Binds a ciphertext to its row: one copied onto another link fails to decrypt.
    return f"quanyi:redeem:{product_id}:".encode() + token_hash


def _lookup_hash(keyring: KeyRing, token: str) -> bytes:
    if not is_well_formed(token):
        raise NotFound("unknown redemption link", key="err_sales.unknown_link")
    return keyring.lookup_hash(token)


async def issue(
    session: AsyncSession,
    keyring: KeyRing,
    *,
    product: Product,
    count: int,
    order_id: int | None = None,
    order_line_id: int | None = None,
    max_uses: int | None = None,
    valid_days: int | None = None,
    entitlement: str | None = None,
) -> list[str]:
    """Issue ``count`` links and return their tokens, in the clear this once, for delivery.

    ``max_uses``, ``valid_days`` and ``entitlement`` left unset come from the product
    (one use, no expiry and the product name when the product sets none either).
    """
    if not 1 <= count <= MAX_ISSUE:
        raise InvalidInput(f"count must be 1-{MAX_ISSUE}", key="err_sales.bad_count", most=MAX_ISSUE)
    uses = max_uses if max_uses is not None else (product.redeem_max_uses or 1)
    if uses < 1:
        raise InvalidInput("max uses must be at least 1", key="err_sales.bad_max_uses")
    days = valid_days if valid_days is not None else product.redeem_valid_days
    if days is not None and days < 1:
        raise InvalidInput("valid days must be at least 1", key="err_sales.bad_valid_days")
    grants = (entitlement or product.entitlement or product.name).strip()
    expires_at = utcnow() + timedelta(days=days) if days is not None else None
    tokens = [new_token() for _ in range(count)]
    for token in tokens:
        token_hash = keyring.lookup_hash(token)
        key_id, blob = keyring.encrypt(token, token_aad(product.id, token_hash))
        session.add(
            RedeemToken(
                token_hash=token_hash,
                key_id=key_id,
                token_ct=blob,
                product_id=product.id,
                order_id=order_id,
                order_line_id=order_line_id,
                entitlement=grants,
                max_uses=uses,
                uses=0,
                expires_at=expires_at,
                status=RedeemStatus.ACTIVE,
            )
        )
    await session.flush()
    return tokens


async def tokens_for_order(session: AsyncSession, keyring: KeyRing, order_id: int) -> list[str]:
    """An order's tokens in the clear, in issue order, to show the buyer its links again."""
    rows = await session.execute(
        select(RedeemToken.product_id, RedeemToken.token_hash, RedeemToken.key_id, RedeemToken.token_ct)
        .where(RedeemToken.order_id == order_id)
        .order_by(RedeemToken.id)
    )
    return [
        keyring.decrypt(key_id, blob, token_aad(product_id, token_hash))
        for product_id, token_hash, key_id, blob in rows.all()
    ]


@dataclass(frozen=True)
class IssuedLink:
    """One of an order's links, in the clear, with what it grants and its state now."""

    order_line_id: int | None
    token: str
    entitlement: str
    uses: int
    max_uses: int
    expires_at: datetime | None
    state: TokenState

    @property
    def uses_left(self) -> int:
        return self.max_uses - self.uses if self.state == TokenState.VALID else 0


async def order_links(
    session: AsyncSession, keyring: KeyRing, order_id: int, *, actor: str = "system", purpose: str = "system"
) -> list[IssuedLink]:
    """An order's links in issue order, decrypted, to show them to its buyer (callers check who asks).
    Each decryption is on the audit trail (``actor`` asked, for ``purpose``), so the session must write."""
    now = utcnow()
    rows = list(
        await session.scalars(select(RedeemToken).where(RedeemToken.order_id == order_id).order_by(RedeemToken.id))
    )
    if rows:
        number = await session.scalar(select(Order.number).where(Order.id == order_id))
        await audit.record(
            session,
            actor=actor,
            front="core",
            action=f"links.decrypt.{purpose}",
            object_type="order",
            object_id=number or order_id,
            new={"links": len(rows)},
        )
    return [
        IssuedLink(
            order_line_id=row.order_line_id,
            token=keyring.decrypt(row.key_id, row.token_ct, token_aad(row.product_id, row.token_hash)),
            entitlement=row.entitlement,
            uses=row.uses,
            max_uses=row.max_uses,
            expires_at=row.expires_at,
            state=_state(row, now),
        )
        for row in rows
    ]


def _state(token: RedeemToken, now: datetime) -> TokenState:
    # A used-up link says so even after it expired: that is what its holder wants to know.
    if token.status != RedeemStatus.ACTIVE:
        return TokenState.VOID
    if token.uses >= token.max_uses:
        return TokenState.USED_UP
    if token.expires_at is not None and token.expires_at <= now:
        return TokenState.EXPIRED
    return TokenState.VALID


async def _view(session: AsyncSession, token_hash: bytes, now: datetime, use_no: int | None = None) -> TokenView:
    row = (
        await session.execute(
            select(RedeemToken, Product.name)
            .join(Product, Product.id == RedeemToken.product_id)
            .where(RedeemToken.token_hash == token_hash)
            .execution_options(populate_existing=True)
        )
    ).one_or_none()
    if row is None:
        raise NotFound("unknown redemption link", key="err_sales.unknown_link")
    token, product_name = row
    return TokenView(
        token_id=token.id,
        order_id=token.order_id,
        product_name=product_name,
        entitlement=token.entitlement,
        uses=token.uses,
        max_uses=token.max_uses,
        expires_at=token.expires_at,
        state=_state(token, now),
        use_no=use_no,
    )


async def inspect(session: AsyncSession, keyring: KeyRing, token: str) -> TokenView:
    """What a link grants and whether it can be used. NotFound for unknown or malformed tokens."""
    return await _view(session, _lookup_hash(keyring, token), utcnow())


_REFUSALS: dict[TokenState, type[TokenUnusable]] = {
    TokenState.USED_UP: TokenUsedUp,
    TokenState.EXPIRED: TokenExpired,
    TokenState.VOID: TokenVoid,
}
_MESSAGES = {
    TokenState.USED_UP: "this link has been used up",
    TokenState.EXPIRED: "this link has expired",
    TokenState.VOID: "this link has been withdrawn",
}


async def consume(session: AsyncSession, keyring: KeyRing, token: str, *, by: str, channel: str) -> TokenView:
    """Take one use of a link and record who took it; returns the link after the use.

    Raises NotFound, TokenUsedUp, TokenExpired or TokenVoid, having changed nothing.
    """
    if channel not in CHANNELS:
        raise InvalidInput(
            f"channel must be one of: {', '.join(CHANNELS)}", key="err_sales.bad_channel", choices=", ".join(CHANNELS)
        )
    by = by.strip()[:80]
    if not by:
        raise InvalidInput("who redeems must be given", key="err_sales.no_redeemer")
    token_hash = _lookup_hash(keyring, token)
    now = utcnow()
    # The WHERE clause is the whole check. On PostgreSQL a concurrent confirmation waits on
    # the row lock and then re-evaluates it against the committed row, so it fails cleanly.
    taken = (
        await session.execute(
            update(RedeemToken)
            .where(
                RedeemToken.token_hash == token_hash,
                RedeemToken.status == RedeemStatus.ACTIVE,
                RedeemToken.uses < RedeemToken.max_uses,
                or_(RedeemToken.expires_at.is_(None), RedeemToken.expires_at > now),
            )
            .values(uses=RedeemToken.uses + 1)
            .returning(RedeemToken.id, RedeemToken.uses)
            .execution_options(synchronize_session=False)
        )
    ).one_or_none()
    if taken is None:
        view = await _view(session, token_hash, now)
        # VALID here means it expired between the two statements' clocks; call it expired.
        state = view.state if view.state != TokenState.VALID else TokenState.EXPIRED
        raise _REFUSALS[state](_MESSAGES[state], max_uses=view.max_uses, expires_at=view.expires_at)
    token_id, use_no = taken
    session.add(Redemption(token_id=token_id, use_no=use_no, by=by, channel=channel))
    await session.flush()
    # On the audit trail: who took a use, through which front (never the token itself).
    await audit.record(
        session,
        actor=by[:64],
        front="chat" if channel == "chat" else "http",
        action="link.redeemed",
        object_type="redeem_token",
        object_id=token_id,
        new={"use_no": use_no, "channel": channel},
    )
    return await _view(session, token_hash, now, use_no=use_no)


async def void(session: AsyncSession, *, order_line_id: int) -> int:
    """Withdraw an order line's links (its refund): they take no more uses. Returns how many."""
    result = await session.execute(
        update(RedeemToken)
        .where(RedeemToken.order_line_id == order_line_id, RedeemToken.status == RedeemStatus.ACTIVE)
        .values(status=RedeemStatus.VOID)
        .execution_options(synchronize_session=False)
    )
    return rowcount(result)


async def redemptions(session: AsyncSession, order_id: int) -> list[RedemptionRecord]:
    """Every use of an order's links, oldest first: who, when, through which channel."""
    rows = await session.execute(
        select(RedeemToken.id, RedeemToken.order_line_id, Redemption)
        .join(Redemption, Redemption.token_id == RedeemToken.id)
        .where(RedeemToken.order_id == order_id)
        .order_by(Redemption.created_at, Redemption.id)
    )
    return [
        RedemptionRecord(
            token_id=token_id,
            order_line_id=line_id,
            use_no=record.use_no,
            by=record.by,
            channel=record.channel,
            at=record.created_at,
        )
        for token_id, line_id, record in rows.all()
    ]


def qr_png(url: str) -> bytes:
    """A QR code of ``url`` as PNG bytes."""
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=8, border=4)
    code.add_data(url)
    code.make(fit=True)
    buffer = io.BytesIO()
    code.make_image().save(buffer, format="PNG")
    return buffer.getvalue()
