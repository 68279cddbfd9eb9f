"""What the doors show of the audit trail and the keys: records, the chain's verdict, anchors and
which encryption keys rows use, as frozen dataclasses (plus the anchor parser a door needs)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.models import AuditRecord
from quanyi.core.platform import audit
from quanyi.core.platform.audit_chain import ANCHOR_KIND, Anchor, VerifyReport, parse_anchor
from quanyi.core.platform.keycheck import KeysReady
from quanyi.core.platform.rotation import KeyUsage, RotateOutcome, RotationReport

__all__ = [
    "ANCHOR_KIND",
    "Anchor",
    "FieldChange",
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


# Columns that hold money in minor units (a Stars price, a quota, a rate or a coupon's value,
# which may be basis points, are plain numbers).
MONEY_FIELDS = frozenset(
    {"price", "floor_price", "ceiling_price", "cost_price", "list_price", "balance", "amount", "min_spend", "cap"}
)
# Bookkeeping columns a created or deleted row carries that say nothing to a reader.
_UNSHOWN = frozenset({"id", "position", "sort_order"})


@dataclass(frozen=True)
class FieldChange:
    """One field of a change: its old and new value (None: the row was created / deleted);
    ``money`` says they are minor units of ``currency``."""

    field: str
    old: Any
    new: Any
    money: bool = False
    currency: str = ""


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
    changes: tuple[FieldChange, ...] = ()


def field_changes(old: str | None, new: str | None, *, currency: str) -> tuple[FieldChange, ...]:
    """A record's old and new values (JSON objects) as one change per field that differs; a
    value the trail cut short (past its length limit) is one change of the whole text."""
    try:
        before = json.loads(old) if old else {}
        after = json.loads(new) if new else {}
    except ValueError:
        return (FieldChange("", old, new),)
    if not isinstance(before, dict) or not isinstance(after, dict):
        return (FieldChange("", before, after),)
    own = str(after.get("currency") or before.get("currency") or currency)
    changes = []
    for key in [*before, *(k for k in after if k not in before)]:
        was, now = before.get(key), after.get(key)
        if was == now or key in _UNSHOWN or (was is None and now is None):
            continue
        money = key in MONEY_FIELDS and all(isinstance(v, int | None) for v in (was, now))
        changes.append(FieldChange(key, was, now, money, own if money else ""))
    return tuple(changes)


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
    currency: str = "CNY",
    limit: int = 50,
) -> list[TrailRecord]:
    """The latest records, newest first (``audit.trail``'s filters), each change split into fields
    (money without a currency of its own is in the shop's ``currency``)."""
    rows = await audit.trail(
        session, actor=actor, object_type=object_type, object_id=object_id, day=day, tz=tz, limit=limit
    )
    return [trail_record(r, currency) for r in rows]


def trail_record(row: AuditRecord, currency: str) -> TrailRecord:
    """A stored record as screens show it, each change split into fields."""
    return TrailRecord(
        row.seq,
        row.at,
        row.actor,
        row.front,
        row.action,
        row.object_type,
        row.object_id,
        row.old,
        row.new,
        field_changes(row.old, row.new, currency=currency),
    )
