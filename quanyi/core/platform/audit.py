"""The audit trail: an append-only, hash-chained record of who changed or revealed what.

Each record's hash covers the previous record's hash and its own fields, keyed with the audit
key (``audit_chain``), so an edited, deleted or reordered record breaks the chain and ``verify``
names it. Appending locks the single ``AuditHead`` row; take it last in a transaction (after the
rows the work locks), so two transactions never wait on each other in opposite orders.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, event, insert, or_, select, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from quanyi.core.models import AuditHead, AuditRecord, utcnow
from quanyi.core.platform.audit_chain import GENESIS as GENESIS
from quanyi.core.platform.audit_chain import HEAD_ID, Chain, canonical, chain_of
from quanyi.core.platform.audit_chain import VerifyReport as VerifyReport
from quanyi.core.platform.audit_chain import verify as verify
from quanyi.core.platform.db import Database, on_connection

_TEXT_LIMIT = 4000  # old / new hold small dicts; a runaway value is cut, never a failed append


@dataclass(frozen=True)
class Entry:
    actor: str
    front: str
    action: str
    object_type: str
    object_id: str
    old: Mapping[str, Any] | None = None
    new: Mapping[str, Any] | None = None


def _json(value: Mapping[str, Any] | None) -> str | None:
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)[:_TEXT_LIMIT]


def _row(entry: Entry, seq: int, prev_hash: str, at: datetime, chain: Chain) -> dict[str, Any]:
    values: dict[str, Any] = {
        "seq": seq,
        "at": at,
        "actor": entry.actor[:64],
        "front": entry.front[:16],
        "action": entry.action[:64],
        "object_type": entry.object_type[:32],
        "object_id": str(entry.object_id)[:64],
        "old": _json(entry.old),
        "new": _json(entry.new),
        "prev_hash": prev_hash,
    }
    fields = canonical(
        seq,
        at,
        values["actor"],
        values["front"],
        values["action"],
        values["object_type"],
        values["object_id"],
        values["old"],
        values["new"],
    )
    values["hash"] = chain.link(prev_hash, fields)
    return values


def _insert_head(dialect: str) -> Any:
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(AuditHead)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(AuditHead)


_LOCK_HEAD = select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == HEAD_ID).with_for_update()


def _create_head(dialect: str) -> Any:
    return (
        _insert_head(dialect)
        .values(id=HEAD_ID, seq=0, hash=GENESIS)
        .on_conflict_do_nothing(index_elements=[AuditHead.id])
    )


def _now() -> datetime:
    # Microseconds are kept by both databases; stored naive UTC, read back aware.
    return utcnow()


async def record_many(session: AsyncSession, entries: Sequence[Entry]) -> list[AuditRecord]:
    """Append ``entries`` in order, in the caller's transaction."""
    if not entries:
        return []
    chain = chain_of(session.info)  # before the head is locked: no key, no lock taken
    rows = await on_connection(session, lambda conn: _append_sync(conn, entries, chain))
    return [AuditRecord(**values) for values in rows]


async def record(
    session: AsyncSession,
    *,
    actor: str,
    front: str,
    action: str,
    object_type: str,
    object_id: str | int,
    old: Mapping[str, Any] | None = None,
    new: Mapping[str, Any] | None = None,
) -> AuditRecord:
    """Append one record in the caller's transaction. ``old`` / ``new``: small dicts, never secrets."""
    entry = Entry(actor, front, action, object_type, str(object_id), old, new)
    return (await record_many(session, [entry]))[0]


def record_many_sync(conn: Connection, entries: Sequence[Entry]) -> None:
    """``record_many`` on a synchronous connection (the batch settlement path, ``Database.run_write``),
    the same chain; the connection carries the audit key in its execution options."""
    _append_sync(conn, entries, chain_of(conn.get_execution_options()))


def _append_sync(conn: Connection, entries: Sequence[Entry], chain: Chain) -> list[dict[str, Any]]:
    """The one append: lock the head, insert the linked rows, move the head; returns the rows."""
    if not entries:
        return []
    head = conn.execute(_LOCK_HEAD).first()
    if head is None:
        conn.execute(_create_head(conn.dialect.name))
        head = conn.execute(_LOCK_HEAD).one()
    seq, prev = int(head.seq), str(head.hash)
    at = _now()
    rows: list[dict[str, Any]] = []
    for entry in entries:
        seq += 1
        values = _row(entry, seq, prev, at, chain)
        prev = values["hash"]
        rows.append(values)
    conn.execute(insert(AuditRecord), rows)
    conn.execute(update(AuditHead).where(AuditHead.id == HEAD_ID).values(seq=seq, hash=prev))
    work = _work.get()
    if work is not None:
        work.recorded += len(rows)
    return rows


async def append(db: Database, entry: Entry) -> None:
    """One record in a transaction of its own (a chat button, a CLI command after it ran)."""
    async with db.transaction() as session:
        await record_many(session, [entry])


async def trail(
    session: AsyncSession,
    *,
    actor: str | None = None,
    object_type: str | None = None,
    object_id: str | None = None,
    day: date | None = None,
    tz: str,
    limit: int = 50,
    before: int | None = None,
) -> list[AuditRecord]:
    """The latest records (older than record ``before`` when given), newest first. ``actor`` is an
    exact actor or a bare Telegram user id (then any of operator:/distributor:/buyer: with that id)."""
    query = select(AuditRecord)
    if actor:
        if actor.isdigit():
            query = query.where(
                or_(*(AuditRecord.actor == f"{kind}:{actor}" for kind in ("operator", "distributor", "buyer")))
            )
        else:
            query = query.where(AuditRecord.actor == actor)
    if object_type:
        query = query.where(AuditRecord.object_type == object_type)
    if object_id:
        query = query.where(AuditRecord.object_id == object_id)
    if day is not None:
        start = datetime.combine(day, time(), tzinfo=ZoneInfo(tz))
        query = query.where(AuditRecord.at >= start, AuditRecord.at < start + timedelta(days=1))
    if before is not None:
        query = query.where(AuditRecord.seq < before)
    query = query.order_by(AuditRecord.seq.desc()).limit(max(1, min(limit, 501)))
    return list((await session.scalars(query)).all())


# --- operators' changes, old and new values ---------------------------------------------------
#
# An operator's or a distributor's command runs inside ``acting(actor, front)``. Every row of an
# audited table that the command inserts, changes or deletes through the ORM is then recorded
# with its old and new values, and ``note`` records a change made by a conditional UPDATE; all of
# them are appended in the command's own transaction, just before it commits, so a command that
# fails leaves no record and a record never describes a change that did not happen.

_acting: ContextVar[tuple[str, str] | None] = ContextVar("quanyi_audit_acting", default=None)
_work: ContextVar[Work | None] = ContextVar("quanyi_audit_work", default=None)
_PENDING = "quanyi_audit_pending"

# Table → object type on the trail. Stock rows, orders and card keys are not here: stock imports
# and sales are recorded as commands and payments, and secrets have no place on the trail.
AUDITED: dict[str, str] = {
    "products": "product",
    "channels": "channel",
    "channel_prices": "channel_price",
    "allocations": "allocation",
    "distributors": "distributor",
    "distributor_invites": "invite",
    "cost_prices": "cost_price",
    "commission_rates": "commission_rate",
    "partners": "partner",
    "partner_keys": "partner_key",
    "coupons": "coupon",
    "promotions": "promotion",
    "bundle_components": "bundle_part",
    "risk_rules": "risk_rule",
    "risk_decisions": "risk_decision",
    "blocklist": "block",
    "withdrawals": "withdrawal",
    "staff_members": "staff",
}
# Columns never written to the trail: secrets and their hashes, and bookkeeping stamps.
_HIDDEN = frozenset(
    {"token", "key_hash", "secret_ct", "answer_hash", "request_key", "created_at", "updated_at", "last_used_at"}
)


@dataclass
class Work:
    """What the code inside ``acting`` put on the trail: ``recorded`` records."""

    recorded: int = 0


@contextmanager
def acting(actor: str, front: str) -> Iterator[Work]:
    """Record what the code inside changes as done by ``actor`` through ``front``; the ``Work``
    yielded tells whether it changed (or revealed) anything."""
    work = Work()
    token = _acting.set((actor[:64], front[:16]))
    work_token = _work.set(work)
    try:
        yield work
    finally:
        _work.reset(work_token)
        _acting.reset(token)


def current_actor() -> tuple[str, str] | None:
    return _acting.get()


def note(
    session: AsyncSession | Session,
    action: str,
    object_type: str,
    object_id: str | int,
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
) -> None:
    """Queue a change made outside the ORM (a conditional UPDATE) for the trail; nothing
    happens outside ``acting``, nor when the values are the same (a press that changed nothing)."""
    who = _acting.get()
    if who is None or (old is not None and new is not None and _json(old) == _json(new)):
        return
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    sync.info.setdefault(_PENDING, []).append(Entry(who[0], who[1], action, object_type, str(object_id), old, new))


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return None
    return value


def _shown(key: str, value: Any) -> Any:
    """A column's value as the trail keeps it: a URL's query and credentials (where a partner
    might put a token) are cut off."""
    value = _plain(value)
    if key.endswith("_url") and isinstance(value, str):
        parts = urlsplit(value)
        return f"{parts.scheme}://{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}{parts.path}"
    return value


def _values(obj: Any, which: str) -> dict[str, Any]:
    """The object's column values; ``which`` "old" / "new" / "diff" (changed columns as (old, new))."""
    state = sa_inspect(obj)
    out: dict[str, Any] = {}
    for column in state.mapper.column_attrs:
        key = column.key
        if key in _HIDDEN:
            continue
        if which == "new":
            out[key] = _shown(key, state.dict.get(key))
            continue
        history = state.attrs[key].history
        if which == "old":
            old = history.deleted[0] if history.deleted else (history.unchanged[0] if history.unchanged else None)
            out[key] = _shown(key, old)
        elif history.added and (not history.deleted or history.added[0] != history.deleted[0]):
            # An attribute set without being loaded first has no known old value.
            before = _shown(key, history.deleted[0]) if history.deleted else None
            out[key] = (before, _shown(key, history.added[0]))
    return out


# Rows operators name by a code rather than an id are recorded under that code, so the trail
# of `product:VIP` holds its price changes next to the commands that made them.
_NATURAL_KEYS = {"products": "sku", "channels": "code", "partners": "code", "partner_keys": "access_key"}


def _identity(obj: Any) -> str:
    natural = _NATURAL_KEYS.get(getattr(obj, "__tablename__", ""))
    if natural is not None and getattr(obj, natural, None):
        return str(getattr(obj, natural))
    ident = sa_inspect(obj).identity
    if ident:
        return ":".join(str(part) for part in ident)
    pk = [getattr(obj, c.key, None) for c in sa_inspect(obj).mapper.primary_key]
    return ":".join(str(part) for part in pk if part is not None) or "?"


def _collect(session: Session, _flush_context: Any, _instances: Any) -> None:
    who = _acting.get()
    if who is None:
        return
    pending = session.info.setdefault(_PENDING, [])
    for obj in session.dirty:
        kind = AUDITED.get(getattr(obj, "__tablename__", ""))
        if kind is None or not session.is_modified(obj, include_collections=False):
            continue
        diff = _values(obj, "diff")
        if diff:
            old = {k: v[0] for k, v in diff.items()}
            new = {k: v[1] for k, v in diff.items()}
            pending.append(Entry(who[0], who[1], f"update {kind}", kind, _identity(obj), old, new))
    for obj in session.deleted:
        kind = AUDITED.get(getattr(obj, "__tablename__", ""))
        if kind is not None:
            pending.append(Entry(who[0], who[1], f"delete {kind}", kind, _identity(obj), _values(obj, "old"), None))
    # New rows have no id until the flush: they are recorded after it.
    session.info.setdefault(_PENDING + "_new", []).extend(
        (obj, who) for obj in session.new if getattr(obj, "__tablename__", "") in AUDITED
    )


def _collect_new(session: Session, _flush_context: Any) -> None:
    added = session.info.pop(_PENDING + "_new", None)
    if not added:
        return
    pending = session.info.setdefault(_PENDING, [])
    for obj, who in added:
        kind = AUDITED[obj.__tablename__]
        pending.append(Entry(who[0], who[1], f"create {kind}", kind, _identity(obj), None, _values(obj, "new")))


def write_pending(session: Session) -> None:
    """Flush the session and append the changes it collected (the end of a write transaction)."""
    session.flush()  # the command's last changes, collected by the hooks above
    entries = session.info.pop(_PENDING, [])
    if entries:
        _append_sync(session.connection(), entries, chain_of(session.info))


def _forget(session: Session, *_: Any) -> None:
    session.info.pop(_PENDING, None)
    session.info.pop(_PENDING + "_new", None)


_installed = False


def install() -> None:
    """Hook the recording of operators' changes into every ORM session (once per process)."""
    global _installed
    if _installed:
        return
    event.listen(Session, "before_flush", _collect)
    event.listen(Session, "after_flush", _collect_new)
    event.listen(Session, "before_commit", write_pending)
    event.listen(Session, "after_rollback", _forget)
    _installed = True
