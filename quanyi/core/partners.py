"""Partner systems that call the open API: each has a code, a sales channel and one secret key.

The key is shown once when the partner is added; only its HMAC under the lookup key is
stored, so a database copy does not let anyone call the API as the partner.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core import channels
from quanyi.core.crypto import KeyRing
from quanyi.core.errors import AlreadyExists, InvalidInput
from quanyi.core.models import Channel, ChannelKind, Partner

KEY_PREFIX = "qk_"
KEY_BYTES = 32
# Longer presented keys are refused before hashing: no real key is that long.
MAX_KEY_LENGTH = 128


@dataclass(frozen=True)
class NewPartner:
    partner: Partner
    channel: Channel
    # The API key in the clear, this once.
    key: str


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


async def add_partner(session: AsyncSession, keyring: KeyRing, code: str, name: str) -> NewPartner:
    """Add a partner and its partner channel (the channel of that code, made if missing)."""
    channels.validate_code(code)
    name = (name or "").strip()
    if not 1 <= len(name) <= 100:
        raise InvalidInput("partner name: 1-100 characters")
    if await session.scalar(select(Partner.id).where(Partner.code == code)) is not None:
        raise AlreadyExists(f"partner {code} already exists")
    channel = await session.scalar(select(Channel).where(Channel.code == code))
    if channel is None:
        channel = await channels.add_channel(session, code, name, ChannelKind.PARTNER)
    elif channel.kind != ChannelKind.PARTNER:
        raise InvalidInput(f"channel {code} is a {channel.kind} channel, not a partner's")
    key = new_key()
    partner = Partner(code=code, name=name, key_hash=keyring.lookup_hash(key), channel_id=channel.id, active=True)
    session.add(partner)
    await session.flush()
    return NewPartner(partner=partner, channel=channel, key=key)


async def list_partners(session: AsyncSession) -> list[Partner]:
    return list(await session.scalars(select(Partner).order_by(Partner.code)))


async def authenticate(session: AsyncSession, keyring: KeyRing, key: str) -> Partner | None:
    """The active partner holding ``key``, or None.

    The row is found by the key's HMAC, so how long the look-up takes says nothing about
    how much of a guessed key was right; the final comparison is constant-time as well.
    """
    if not key or len(key) > MAX_KEY_LENGTH or not key.isascii():
        return None
    key_hash = keyring.lookup_hash(key)
    partner = await session.scalar(select(Partner).where(Partner.key_hash == key_hash))
    if partner is None or not partner.active or not hmac.compare_digest(partner.key_hash, key_hash):
        return None
    return partner
