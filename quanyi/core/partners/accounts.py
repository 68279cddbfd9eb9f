"""Partner systems that call the open API: a code, a sales channel (its allocation and price
list), a prepaid balance, a webhook URL and signing keys.

A key is an access key id (``ak_…``, public) and a secret shown once when it is made. The
secret is kept encrypted with the card-key keyring (the server must compute the same HMAC),
never in the clear; several keys can be active so a partner rotates without downtime.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.books import ledger
from quanyi.core.errors import AlreadyExists, InsufficientBalance, InvalidInput, NotFound
from quanyi.core.models import ApiNonce, Channel, ChannelKind, Partner, PartnerKey, utcnow
from quanyi.core.money import Money, exponent, parse_minor
from quanyi.core.partners import apisign
from quanyi.core.platform import audit
from quanyi.core.platform.crypto import KeyRing
from quanyi.core.stock import allocations as channels

SECRET_PREFIX = "sk_"
MAX_ACTIVE_KEYS = 5


@dataclass(frozen=True)
class NewKey:
    access_key: str
    # The secret in the clear, this once.
    secret: str


@dataclass(frozen=True)
class NewPartner:
    partner: Partner
    channel: Channel
    key: NewKey


def secret_aad(access_key: str) -> bytes:
    # Binds a ciphertext to its key id: a secret copied onto another key fails to decrypt.
    return f"quanyi:partner-key:{access_key}".encode()


def _access_key() -> str:
    return "ak_" + secrets.token_hex(12)


def check_webhook_url(url: str | None) -> str | None:
    if url is None or not url.strip():
        return None
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > 500:
        raise InvalidInput("webhook URL: an http(s) URL of at most 500 characters", key="err_partners.bad_webhook_url")
    return url


async def add_partner(
    session: AsyncSession,
    keyring: KeyRing,
    code: str,
    name: str,
    *,
    currency: str = "CNY",
    webhook_url: str | None = None,
) -> NewPartner:
    """Add a partner, its partner channel (the channel of that code, made if missing) and its
    first key."""
    channels.validate_code(code)
    name = (name or "").strip()
    if not 1 <= len(name) <= 100:
        raise InvalidInput("partner name: 1-100 characters", key="err_partners.bad_name")
    currency = (currency or "").strip().upper()
    try:
        exponent(currency)
    except Exception:
        raise InvalidInput(
            f"unknown currency {currency!r}", key="err_partners.unknown_currency", currency=currency
        ) from None
    url = check_webhook_url(webhook_url)
    if await session.scalar(select(Partner.id).where(Partner.code == code)) is not None:
        raise AlreadyExists(f"partner {code} already exists", key="err_partners.exists", partner=code)
    channel = await session.scalar(select(Channel).where(Channel.code == code))
    if channel is None:
        channel = await channels.add_channel(session, code, name, ChannelKind.PARTNER)
    elif channel.kind != ChannelKind.PARTNER:
        raise InvalidInput(
            f"channel {code} is a {channel.kind} channel, not a partner's",
            key="err_partners.channel_taken",
            partner=code,
        )
    partner = Partner(
        code=code, name=name, channel_id=channel.id, active=True, balance=0, currency=currency, webhook_url=url
    )
    session.add(partner)
    await session.flush()
    key = await add_key(session, keyring, partner)
    return NewPartner(partner=partner, channel=channel, key=key)


async def get(session: AsyncSession, code: str, *, lock: bool = False) -> Partner:
    query = select(Partner).where(Partner.code == code)
    if lock:
        query = query.with_for_update()
    partner = await session.scalar(query)
    if partner is None:
        raise NotFound(f"no partner {code}", key="err_partners.no_partner", partner=code)
    return partner


async def list_partners(session: AsyncSession) -> list[Partner]:
    return list(await session.scalars(select(Partner).order_by(Partner.code)))


async def add_key(session: AsyncSession, keyring: KeyRing, partner: Partner) -> NewKey:
    """A new active key for ``partner`` (at most ``MAX_ACTIVE_KEYS`` at once)."""
    active = await session.scalars(
        select(PartnerKey.id).where(PartnerKey.partner_id == partner.id, PartnerKey.active.is_(True))
    )
    if len(list(active)) >= MAX_ACTIVE_KEYS:
        raise InvalidInput(
            f"{partner.code} has {MAX_ACTIVE_KEYS} active keys; revoke one first",
            key="err_partners.too_many_keys",
            partner=partner.code,
            most=MAX_ACTIVE_KEYS,
        )
    access_key, secret = _access_key(), SECRET_PREFIX + secrets.token_urlsafe(32)
    key_id, blob = keyring.encrypt(secret, secret_aad(access_key))
    session.add(PartnerKey(partner_id=partner.id, access_key=access_key, key_id=key_id, secret_ct=blob, active=True))
    await session.flush()  # recorded on the audit trail as a new partner_key row, never its secret
    return NewKey(access_key=access_key, secret=secret)


async def revoke_key(session: AsyncSession, code: str, access_key: str) -> PartnerKey:
    partner = await get(session, code)
    key = await session.scalar(
        select(PartnerKey).where(PartnerKey.partner_id == partner.id, PartnerKey.access_key == access_key)
    )
    if key is None:
        raise NotFound(
            f"{code} has no key {access_key}", key="err_partners.no_key", partner=code, access_key=access_key
        )
    key.active = False
    key.revoked_at = utcnow()
    await session.flush()
    return key


async def keys_of(session: AsyncSession, partner_id: int) -> list[PartnerKey]:
    return list(
        await session.scalars(select(PartnerKey).where(PartnerKey.partner_id == partner_id).order_by(PartnerKey.id))
    )


async def set_webhook(session: AsyncSession, code: str, url: str | None) -> Partner:
    partner = await get(session, code)
    partner.webhook_url = check_webhook_url(url)
    await session.flush()
    return partner


async def set_active(session: AsyncSession, code: str, active: bool) -> Partner:
    partner = await get(session, code)
    partner.active = active
    await session.flush()
    return partner


def balance_account(partner_id: int) -> str:
    return f"partner:{partner_id}:balance"


async def adjust_balance(
    session: AsyncSession,
    partner: Partner,
    amount: int,
    *,
    ref: str,
    kind: str,
    counter: str = ledger.CASH,
    order_id: int | None = None,
    memo: str = "",
) -> int:
    """Add (or, negative, take) prepaid balance by a conditional UPDATE (never below zero) and
    post the same amount between the partner's ledger account and ``counter``. Returns the new
    balance; ``InsufficientBalance`` when it is short (nothing changed)."""
    if amount == 0:
        raise InvalidInput("amount must not be zero", key="err_partners.zero_amount")
    query = update(Partner).where(Partner.id == partner.id)
    if amount < 0:
        query = query.where(Partner.balance >= -amount)
    after = (await session.execute(query.values(balance=Partner.balance + amount).returning(Partner.balance))).scalar()
    if after is None:
        have = int(await session.scalar(select(Partner.balance).where(Partner.id == partner.id)) or 0)
        held, wanted = str(Money(have, partner.currency)), str(Money(-amount, partner.currency))
        raise InsufficientBalance(
            f"balance {held} is short of {wanted}",
            key="err_partners.balance_short",
            balance=have,
            needed=-amount,
            held=held,
            wanted=wanted,
        )
    audit.note(
        session,
        f"balance {kind}"[:64],
        "partner",
        partner.code,
        {"balance": int(after) - amount},
        {"balance": int(after), "amount": amount},
    )
    await ledger.post(
        session,
        ref,
        kind[:32],
        ledger.transfer(counter, balance_account(partner.id), amount, partner.currency),
        order_id=order_id,
        memo=memo,
    )
    return int(after)


def parse_signed_amount(text: str, currency: str) -> int:
    """``100.00`` adds, ``-20.00`` takes back (a correction), in minor units; zero is refused."""
    text = text.strip()
    negative = text.startswith("-")
    minor = parse_minor(text[1:] if negative else text, currency)
    if minor == 0:
        raise InvalidInput("the amount must not be zero", key="err_partners.zero_amount")
    return -minor if negative else minor


async def top_up(session: AsyncSession, code: str, amount: int, *, note: str = "") -> int:
    """The operator received ``amount`` from the partner (or, negative, corrects a top-up)."""
    partner = await get(session, code, lock=True)
    ref = f"partner-topup:{partner.id}:{secrets.token_hex(8)}"
    return await adjust_balance(session, partner, amount, ref=ref, kind="partner_topup", memo=note)


# --- authentication ------------------------------------------------------------------------


async def secret_of(session: AsyncSession, keyring: KeyRing, access_key: str) -> tuple[Partner, str] | None:
    """The active partner and secret behind ``access_key``, or None."""
    row = (
        await session.execute(
            select(Partner, PartnerKey)
            .join(PartnerKey, PartnerKey.partner_id == Partner.id)
            .where(PartnerKey.access_key == access_key, PartnerKey.active.is_(True))
        )
    ).first()
    if row is None or not row[0].active:
        return None
    partner, key = row
    return partner, keyring.decrypt(key.key_id, key.secret_ct, secret_aad(key.access_key))


async def signing_key(session: AsyncSession, keyring: KeyRing, partner_id: int) -> tuple[str, str] | None:
    """(access key, secret) of the partner's newest active key: what webhooks are signed with."""
    key = await session.scalar(
        select(PartnerKey)
        .where(PartnerKey.partner_id == partner_id, PartnerKey.active.is_(True))
        .order_by(PartnerKey.id.desc())
        .limit(1)
    )
    if key is None:
        return None
    return key.access_key, keyring.decrypt(key.key_id, key.secret_ct, secret_aad(key.access_key))


async def remember_nonce(session: AsyncSession, access_key: str, nonce: str, now: datetime) -> bool:
    """Record a nonce; False when it was seen already (a replay). Call in its own transaction."""
    try:
        async with session.begin_nested():
            session.add(ApiNonce(access_key=access_key, nonce=nonce, seen_at=now))
            await session.flush()
    except IntegrityError:
        return False
    return True


async def mark_used(session: AsyncSession, access_key: str, now: datetime) -> None:
    """When the key was last used: what operators look at before revoking one."""
    await session.execute(update(PartnerKey).where(PartnerKey.access_key == access_key).values(last_used_at=now))


async def forget_nonces(session: AsyncSession, now: datetime) -> int:
    """Nonces older than twice the window can no longer be replayed (the timestamp is refused)."""
    cutoff = now - timedelta(seconds=2 * apisign.WINDOW_SECONDS)
    result = await session.execute(delete(ApiNonce).where(ApiNonce.seen_at < cutoff))
    return int(getattr(result, "rowcount", 0) or 0)
