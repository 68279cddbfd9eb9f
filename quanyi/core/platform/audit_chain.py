"""The audit trail's chain: each record's hash, the chain's check, and anchors outside the database.

A record's hash is HMAC-SHA-256 under the audit key (kept with the other keys, never in the
database) over the previous record's hash and the record's fields, so someone who can write the
database but lacks the key cannot re-chain an edited record. Records written before the key
have plain SHA-256 hashes; they still verify, but never after a keyed one (that is a downgrade).
An anchor, the head's seq and hash written to the data directory and sent to the operators at
each settlement, catches a chain rewritten or cut back after it, by anyone, key or not.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.errors import ConfigError, InvalidInput
from quanyi.core.models import AuditHead, AuditRecord, utcnow
from quanyi.core.platform import outbox
from quanyi.core.platform.db import AUDIT_CHAIN, Database

GENESIS = "0" * 64
HEAD_ID = 1
# A keyed record's hash is marked, so the check knows which function made it without a column.
# The hash column holds 64 characters: the MAC's hex is cut to 61 (244 bits).
KEYED = "h1:"
_KEYED_HEX = 64 - len(KEYED)
_HASH = re.compile(r"h1:[0-9a-f]{61}|[0-9a-f]{64}")
ANCHORS_FILE = "audit-anchors.jsonl"
ANCHOR_KIND = "admin_audit_anchor"  # the outbox message telling operators of an anchor


@dataclass(frozen=True)
class Chain:
    """The audit key, as the Database carries it into its sessions; repr never shows it."""

    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) < 32:
            raise ConfigError("the audit key must be at least 32 bytes")

    def link(self, prev_hash: str, fields: str) -> str:
        """The hash of a record with canonical ``fields`` following ``prev_hash``: one HMAC call."""
        mac = hmac.digest(self.key, (prev_hash + fields).encode("utf-8"), "sha256")
        return KEYED + mac.hex()[:_KEYED_HEX]


def legacy_link(prev_hash: str, fields: str) -> str:
    """The hash of a record written before the audit key: only ever checked, never written."""
    return hashlib.sha256((prev_hash + fields).encode("utf-8")).hexdigest()


def canonical(
    seq: int,
    at: datetime,
    actor: str,
    front: str,
    action: str,
    object_type: str,
    object_id: str,
    old: str | None,
    new: str | None,
) -> str:
    """A record's fields as hashed. The time in the naive UTC form both databases store."""
    fields = [seq, at.replace(tzinfo=None).isoformat(), actor, front, action, object_type, object_id, old, new]
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":"))


def _canonical_of(rec: AuditRecord) -> str:
    return canonical(
        rec.seq, rec.at, rec.actor, rec.front, rec.action, rec.object_type, rec.object_id, rec.old, rec.new
    )


def chain_of(carrier: Mapping[str, Any]) -> Chain:
    """The chain a session's ``info`` or a write connection's execution options carry (``Database.audit_chain``)."""
    chain = carrier.get(AUDIT_CHAIN)
    if not isinstance(chain, Chain):
        # Never fall back to an unkeyed hash: after a keyed record the check calls that a downgrade.
        raise ConfigError("the audit key is not loaded: open the database through build_core")
    return chain


# --- anchors ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Anchor:
    """A record's seq and hash as they stood when pinned outside the database."""

    seq: int
    hash: str
    at: datetime | None = None  # None: given by an operator (from the anchor message), not from the file

    @property
    def described(self) -> str:
        if self.at is None:
            return "given as an anchor"
        return f"anchored at {self.at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"

    def payload(self) -> dict[str, object]:
        when = self.at.astimezone(UTC).isoformat() if self.at is not None else None
        return {"seq": self.seq, "hash": self.hash, "at": when}


def anchors_path(data_dir: Path) -> Path:
    return data_dir / ANCHORS_FILE


def parse_anchor(text: str) -> Anchor:
    """``SEQ:HASH``, as an operator copies it from the anchor message."""
    seq, sep, digest = text.strip().partition(":")
    if not sep or not seq.isdigit() or int(seq) < 1 or not _HASH.fullmatch(digest):
        raise InvalidInput(f"{text!r}: give an anchor as SEQ:HASH, as in the operators' anchor message")
    return Anchor(int(seq), digest)


def _parse_line(line: str) -> Anchor | None:
    try:
        data = json.loads(line)
        pinned = Anchor(int(data["seq"]), str(data["hash"]), datetime.fromisoformat(data["at"]))
    except (ValueError, KeyError, TypeError):
        return None
    return pinned if pinned.seq >= 1 and _HASH.fullmatch(pinned.hash) else None


def read_anchors(path: Path) -> list[Anchor]:
    """The anchors file's anchors, oldest first; none when there is no file. A line that is not
    an anchor is an error: the file is evidence, so a damaged one is not silently skipped."""
    try:
        lines = path.read_text("utf-8").splitlines()
    except FileNotFoundError:
        return []
    anchors: list[Anchor] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        pinned = _parse_line(line)
        if pinned is None:
            raise InvalidInput(f"{path.name} line {number} is not an anchor")
        anchors.append(pinned)
    return anchors


def write_anchor(path: Path, pinned: Anchor) -> None:
    """Append one line and make it durable; the file is the owner's alone (0600)."""
    line = (json.dumps(pinned.payload(), separators=(",", ":")) + "\n").encode("utf-8")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a file made by hand, or copied, with a wider mode is narrowed
        written = 0
        while written < len(line):
            written += os.write(fd, line[written:])
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:  # the new file's directory entry must survive a crash too
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


async def _head(session: AsyncSession) -> tuple[int, str]:
    head = (await session.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == HEAD_ID))).first()
    return (int(head.seq), str(head.hash)) if head is not None else (0, GENESIS)


async def anchor(
    db: Database, data_dir: Path, admin_ids: Sequence[int], *, now: datetime | None = None
) -> Anchor | None:
    """Pin the chain's head: a line in the anchors file, then a message to each operator (who keep
    it where someone with the server cannot reach). None when the chain is empty."""
    async with db.read() as session:
        seq, digest = await _head(session)
    if seq == 0:
        return None
    pinned = Anchor(seq, digest, now or utcnow())
    await asyncio.to_thread(write_anchor, anchors_path(data_dir), pinned)  # fsync off the event loop
    async with db.transaction() as session:
        await outbox.enqueue_admins(session, list(admin_ids), ANCHOR_KIND, pinned.payload())
    return pinned


# --- the check ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    checked: int
    first_bad_seq: int | None = None
    problem: str = ""
    # How the chain stands, for the operator's summary; not part of the verdict.
    keyed_from: int | None = field(default=None, compare=False)
    anchors: int = field(default=0, compare=False)


class _Walk:
    """The chain walked in seq order; ``step`` names the first record that breaks it."""

    def __init__(self, chain: Chain | None, anchors: Sequence[Anchor]) -> None:
        self.chain = chain
        self.anchors: dict[int, list[Anchor]] = {}
        for pinned in anchors:
            self.anchors.setdefault(pinned.seq, []).append(pinned)
        self.expected, self.prev, self.checked = 1, GENESIS, 0
        self.keyed_from: int | None = None

    def step(self, rec: AuditRecord) -> tuple[int, str] | None:
        if rec.seq != self.expected:
            missing = f"{self.expected}" if rec.seq == self.expected + 1 else f"{self.expected}..{rec.seq - 1}"
            return self.expected, f"record {missing} is missing (deleted)"
        if rec.prev_hash != self.prev:
            return rec.seq, f"record {rec.seq} does not follow record {rec.seq - 1} (reordered, or one was replaced)"
        problem = self._hash_problem(rec)
        if problem:
            return rec.seq, problem
        for pinned in self.anchors.get(rec.seq, ()):
            if pinned.hash != rec.hash:
                return rec.seq, f"record {rec.seq} is not the record {pinned.described} (the chain was rewritten)"
        self.prev, self.expected, self.checked = rec.hash, self.expected + 1, self.checked + 1
        return None

    def _hash_problem(self, rec: AuditRecord) -> str | None:
        fields = _canonical_of(rec)
        if not rec.hash.startswith(KEYED):
            if self.keyed_from is not None:
                return (
                    f"record {rec.seq} is not keyed though record {self.keyed_from} before it is "
                    "(rewritten without the audit key)"
                )
            if legacy_link(rec.prev_hash, fields) != rec.hash:
                return f"record {rec.seq} does not match its hash (edited)"
            return None
        if self.chain is None:
            raise ConfigError("the audit key is not loaded: open the database through build_core")
        if self.chain.link(rec.prev_hash, fields) == rec.hash:
            self.keyed_from = self.keyed_from or rec.seq
            return None
        # The first keyed record failing may as well mean the key is not the one it was written with.
        hint = "" if self.keyed_from else ", or the audit key is not the one it was written with"
        return f"record {rec.seq} does not match its hash (edited{hint})"

    def end(self, head_seq: int, head_hash: str) -> tuple[int | None, str] | None:
        if head_seq > self.checked:
            missing = f"{self.expected}" if head_seq == self.expected else f"{self.expected}..{head_seq}"
            return self.expected, f"record {missing} is missing (deleted; the head counts {head_seq})"
        if head_seq != self.checked or head_hash != self.prev:
            return self.checked or None, f"the chain's head does not match record {self.checked}"
        last = max(self.anchors, default=0)
        if last > self.checked:
            pinned = self.anchors[last][0]
            return self.expected, (
                f"the chain ends at record {self.checked} but record {last} was {pinned.described} "
                "(records were removed)"
            )
        return None


_VERIFY_PAGE = 2000


async def verify(session: AsyncSession, anchors: Sequence[Anchor] = ()) -> VerifyReport:
    """Walk the chain in seq order, with the session's audit key and against ``anchors``; the
    first record that breaks it is named, with how."""
    walk = _Walk(session.info.get(AUDIT_CHAIN), anchors)
    after = 0
    while True:
        rows = (
            await session.scalars(
                select(AuditRecord).where(AuditRecord.seq >= after).order_by(AuditRecord.seq).limit(_VERIFY_PAGE)
            )
        ).all()
        for rec in rows:
            broken = walk.step(rec)
            if broken is not None:
                return VerifyReport(False, walk.checked, broken[0], broken[1], walk.keyed_from, len(anchors))
        if len(rows) < _VERIFY_PAGE:
            break
        after = walk.expected
        session.expunge_all()
    ended = walk.end(*await _head(session))
    if ended is not None:
        return VerifyReport(False, walk.checked, ended[0], ended[1], walk.keyed_from, len(anchors))
    return VerifyReport(True, walk.checked, keyed_from=walk.keyed_from, anchors=len(anchors))


async def verify_anchored(db: Database, data_dir: Path, given: Sequence[Anchor] = ()) -> VerifyReport:
    """``verify`` against the anchors file in ``data_dir`` and any anchors ``given`` by an operator."""
    try:
        anchors = [*read_anchors(anchors_path(data_dir)), *given]
    except InvalidInput as exc:
        return VerifyReport(False, 0, None, exc.message)
    async with db.read() as session:
        return await verify(session, anchors)


async def anchor_first(db: Database, data_dir: Path, admin_ids: Sequence[int]) -> VerifyReport | None:
    """``quanyi db upgrade``: a chain that has never been anchored (an installation from before the
    keyed chain) is verified and, intact, anchored at once, so a later rewrite of it in the old
    unkeyed style is caught. The report says what was found; None when there is nothing to do."""
    if anchors_path(data_dir).exists():
        return None
    report = await verify_anchored(db, data_dir)
    if report.ok and report.checked:
        await anchor(db, data_dir, admin_ids)
    return report if report.checked or not report.ok else None
