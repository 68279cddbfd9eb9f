"""What the doors show of the audit trail and the keys: records, the chain's verdict, anchors and
which encryption keys rows use, as frozen dataclasses (plus the anchor parser a door needs)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.platform import audit
from quanyi.core.platform.audit_chain import ANCHOR_KIND, Anchor, VerifyReport, parse_anchor
from quanyi.core.platform.keycheck import KeysReady
from quanyi.core.platform.rotation import KeyUsage, RotateOutcome, RotationReport

__all__ = [
    "ANCHOR_KIND",
    "Anchor",
    "KeyRow",
    "KeyStatus",
    "KeyUsage",
    "KeysReady",
    "Pinned",
    "RotateOutcome",
    "RotationReport",
    "TrailRecord",
    "VerifyReport",
    "parse_anchor",
    "trail",
]


@dataclass(frozen=True)
class TrailRecord:
    seq: int
    at: datetime
    actor: str
    front: str
    action: str
    object_type: str
    object_id: str
    old: str | None
    new: str | None


@dataclass(frozen=True)
class Pinned:
    """An anchor just written: where its line went and how many operators were sent it."""

    seq: int
    hash: str
    path: Path
    operators: int


@dataclass(frozen=True)
class KeyRow:
    key_id: str
    state: str  # active | loaded | MISSING (rows use it, the keyring lacks it)
    card_keys: int
    links: int
    api_secrets: int


@dataclass(frozen=True)
class KeyStatus:
    from_env: bool
    active: str
    keys: tuple[KeyRow, ...]
    unfinished: bool  # rows still under an older key: a rotation to finish


async def trail(
    session: AsyncSession,
    *,
    actor: str | None = None,
    object_type: str | None = None,
    object_id: str | None = None,
    day: date | None = None,
    tz: str,
    limit: int = 50,
) -> list[TrailRecord]:
    """The latest records, newest first (``audit.trail``'s filters)."""
    rows = await audit.trail(
        session, actor=actor, object_type=object_type, object_id=object_id, day=day, tz=tz, limit=limit
    )
    return [
        TrailRecord(r.seq, r.at, r.actor, r.front, r.action, r.object_type, r.object_id, r.old, r.new) for r in rows
    ]
