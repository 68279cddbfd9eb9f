"""The keyed audit chain: someone who can write the database but lacks the audit key cannot re-chain
an edited record; a chain written before the key still verifies, but a keyed record rewritten as an
old one is a downgrade; anchors, written at each settlement to the data dir and to the operators,
catch a chain rewritten (even with the key) or cut back after them; ``quanyi audit verify`` and
``quanyi audit anchor`` on both databases."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import secrets
import stat
from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import delete, select, update

import quanyi.bot.operator.audit  # noqa: F401  (registers the anchor message's renderer)
from quanyi.bot.outbox_sender import OutboxSender
from quanyi.core.books.settlement import local_day
from quanyi.core.catalog.products import update_product
from quanyi.core.errors import ConfigError, InvalidInput
from quanyi.core.models import AuditHead, AuditRecord, Order, OutboxMessage, utcnow
from quanyi.core.platform import audit, audit_chain
from quanyi.core.platform.audit_chain import KEYED, Anchor, anchors_path, canonical, legacy_link, parse_anchor
from quanyi.core.platform.crypto import KeyRing
from quanyi.core.platform.db import Database
from quanyi.core.platform.outbox import Outgoing
from quanyi.core.platform.scheduler import Jobs
from quanyi.core.sales.fulfilment import PaymentOutcome
from quanyi.core.services import Core, build_core
from tests.conftest import make_keyring, make_settings
from tests.helpers import new_order, product_with_stock, sandbox_event
from tests.test_cli import LocalCli, pg_database  # noqa: F401  (fixture)

OPERATORS = "9000,9001"
Link = Callable[[str, str], str]  # (prev_hash, canonical fields) -> the record's hash


def wrong_key_link(prev_hash: str, fields: str) -> str:
    """What an attacker without the audit key computes: an HMAC under a key of their own."""
    mac = hmac.digest(b"attacker's guess at the key......", (prev_hash + fields).encode(), "sha256")
    return KEYED + mac.hex()[:61]


def plain_sha256(prev_hash: str, fields: str) -> str:
    return hashlib.sha256((prev_hash + fields).encode()).hexdigest()


async def some_records(core: Core, count: int = 10, first: int = 1) -> None:
    async with core.db.transaction() as session:
        for n in range(first, first + count):
            await audit.record(
                session, actor="operator:9000", front="chat", action="product.update", object_type="product",
                object_id="VIP", old={"price": 1000 + n}, new={"price": 1500 + n},
            )  # fmt: skip


async def chain(core: Core) -> list[AuditRecord]:
    async with core.db.read() as session:
        return list((await session.scalars(select(AuditRecord).order_by(AuditRecord.seq))).all())


async def rechain(
    core: Core, from_seq: int, link: Link, *, edit: dict[str, str] | None = None, upto: int | None = None
) -> None:
    """Edit record ``from_seq`` (``edit``), then recompute every hash from it on (to ``upto``: the
    next record then only gets the new ``prev_hash``) with ``link``, and fix up the head: all that
    write access to the database allows."""
    async with core.db.transaction() as session:
        if edit:
            await session.execute(update(AuditRecord).where(AuditRecord.seq == from_seq).values(**edit))
        rows = (await session.scalars(select(AuditRecord).order_by(AuditRecord.seq))).all()
        prev = next((r.hash for r in rows if r.seq == from_seq - 1), audit_chain.GENESIS)
        for rec in rows:
            if rec.seq < from_seq:
                continue
            if upto is not None and rec.seq > upto:
                rec.prev_hash = prev
                return
            fields = canonical(
                rec.seq, rec.at, rec.actor, rec.front, rec.action, rec.object_type, rec.object_id, rec.old, rec.new
            )
            rec.prev_hash, rec.hash = prev, link(prev, fields)
            prev = rec.hash
        await session.execute(update(AuditHead).values(hash=prev))


async def cut_back(core: Core, to_seq: int) -> None:
    """Delete every record after ``to_seq`` and point the head at it."""
    async with core.db.transaction() as session:
        last = await session.scalar(select(AuditRecord.hash).where(AuditRecord.seq == to_seq))
        await session.execute(delete(AuditRecord).where(AuditRecord.seq > to_seq))
        await session.execute(update(AuditHead).values(seq=to_seq, hash=last))


async def check(core: Core, anchors: list[Anchor] | None = None) -> audit.VerifyReport:
    async with core.db.read() as session:
        return await audit.verify(session, anchors or [])


@pytest.mark.parametrize("link", [plain_sha256, wrong_key_link], ids=["plain-sha256", "wrong-hmac-key"])
async def test_a_record_edited_and_rechained_without_the_key_is_named(core: Core, link: Link) -> None:
    await some_records(core)
    await rechain(core, 4, link, edit={"new": '{"price":1}'})
    report = await check(core)
    assert (report.ok, report.first_bad_seq, report.checked) == (False, 4, 3)
    assert "record 4" in report.problem


async def test_with_the_right_key_every_record_is_keyed_and_verifies(core: Core, tmp_path: Path) -> None:
    await some_records(core, 3)
    await product_with_stock(core, tmp_path, units=2)
    placed = await new_order(core, user_id=1001)
    # The batched payment path (Database.run_write) appends to the same keyed chain.
    assert await core.fulfiller.submit(sandbox_event(placed.order.number, 1500)) == PaymentOutcome.DELIVERED
    with audit.acting("operator:9000", "chat"):  # an operator's change, recorded at commit
        async with core.db.transaction() as session:
            await update_product(session, "VIP", price="16.00")
    records = await chain(core)
    assert {"payment.applied", "update product"} <= {r.action for r in records}
    assert all(r.hash.startswith(KEYED) and len(r.hash) == 64 for r in records)
    report = await check(core)
    assert (report.ok, report.checked, report.keyed_from) == (True, len(records), 1)


async def test_the_same_records_under_another_key_fail_at_the_first_and_say_so(core: Core) -> None:
    await some_records(core, 3)
    core.db.audit_chain = audit_chain.Chain(make_keyring().audit_key)
    report = await check(core)
    assert (report.ok, report.first_bad_seq) == (False, 1)
    assert "the audit key is not the one it was written with" in report.problem


async def test_a_database_without_the_audit_key_refuses_to_append(db: Database) -> None:
    with pytest.raises(ConfigError, match="audit key is not loaded"):
        async with db.transaction() as session:
            await audit.record(session, actor="system", front="core", action="x", object_type="t", object_id=1)
    async with db.read() as session:
        assert (await session.scalars(select(AuditRecord))).all() == []


async def test_old_sha256_records_then_keyed_ones_verify_and_a_downgrade_is_caught(core: Core) -> None:
    # A database from before the key: five plain SHA-256 records.
    await some_records(core, 5)
    await rechain(core, 1, legacy_link)
    assert not any(r.hash.startswith(KEYED) for r in await chain(core))
    assert (await check(core)).ok
    # The keyed chain goes on from the old head.
    await some_records(core, 5, first=6)
    records = await chain(core)
    assert [r.hash.startswith(KEYED) for r in records] == [False] * 5 + [True] * 5
    report = await check(core)
    assert (report.ok, report.checked, report.keyed_from) == (True, 10, 6)

    # A keyed record rewritten as an old one: the downgrade is named.
    await rechain(core, 8, plain_sha256, edit={"actor": "operator:1"})
    report = await check(core)
    assert (report.ok, report.first_bad_seq) == (False, 8)
    assert "record 8 is not keyed though record 6 before it is" in report.problem


async def test_an_old_record_edited_below_the_keyed_ones_is_caught_by_the_first_keyed_record(core: Core) -> None:
    await some_records(core, 3)
    await rechain(core, 1, legacy_link)
    await some_records(core, 3, first=4)
    # Records 2 and 3 re-chained; record 4 can only be given the new prev_hash, not its MAC.
    await rechain(core, 2, legacy_link, edit={"new": '{"price":1}'}, upto=3)
    report = await check(core)
    assert (report.ok, report.first_bad_seq) == (False, 4)
    assert "record 4 does not match its hash" in report.problem


def yesterday_at_ten(tz: str) -> datetime:
    day = local_day(utcnow(), tz) - timedelta(days=1)
    return datetime.combine(day, time(10), tzinfo=ZoneInfo(tz))


async def sold_yesterday(core: Core, tmp_path: Path) -> None:
    await product_with_stock(core, tmp_path, units=2)
    placed = await new_order(core, user_id=1001)
    assert await core.fulfiller.submit(sandbox_event(placed.order.number, 1500)) == PaymentOutcome.DELIVERED
    async with core.db.transaction() as session:
        at = yesterday_at_ten(core.settings.timezone)
        await session.execute(update(Order).where(Order.id == placed.order.id).values(paid_at=at, created_at=at))


async def test_a_settlement_anchors_the_head_in_the_data_dir_and_tells_each_operator(
    db: Database, keyring: KeyRing, tmp_path: Path
) -> None:
    core = build_core(make_settings(tmp_path, admin_ids=OPERATORS), db=db, keyring=keyring)
    await some_records(core, 5)
    await sold_yesterday(core, tmp_path)
    jobs = Jobs(core)
    assert await jobs.settle() == [(local_day(utcnow(), core.settings.timezone) - timedelta(days=1)).isoformat()]

    path = anchors_path(core.settings.data_dir)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    [line] = path.read_text().splitlines()
    pinned = json.loads(line)
    last = (await chain(core))[-1]
    assert (pinned["seq"], pinned["hash"]) == (last.seq, last.hash)
    assert datetime.fromisoformat(pinned["at"]) <= utcnow()
    assert core.keyring.audit_key.hex() not in path.read_text()
    async with core.db.read() as session:
        sent = (await session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "admin_audit_anchor"))).all()
    assert sorted(m.chat_id for m in sent) == [9000, 9001]
    assert all(json.loads(m.payload) == pinned for m in sent)
    sender = OutboxSender(core, None)  # type: ignore[arg-type]  (render only, nothing is sent)
    for lang, word in (("en", "Audit anchor"), ("zh", "审计锚点")):
        [text] = await sender.parts(Outgoing(1, 9000, "admin_audit_anchor", pinned, lang, 0))
        assert isinstance(text, str) and word in text and last.hash in text
        assert f"--anchor {last.seq}:{last.hash}" in text

    # Nothing new settled: no new anchor.
    assert await jobs.settle() == []
    assert len(path.read_text().splitlines()) == 1
    # Later records are fine; the nightly check holds the anchor.
    await some_records(core, 2, first=100)
    report = await jobs.audit_verify()
    assert report is not None and (report.ok, report.anchors) == (True, 1)

    # Cut back below the anchor, head fixed up: the anchor names it.
    await cut_back(core, last.seq - 2)
    report = await jobs.audit_verify()
    assert report is not None and (report.ok, report.first_bad_seq) == (False, last.seq - 1)
    assert f"the chain ends at record {last.seq - 2} but record {last.seq} was anchored at" in report.problem
    async with core.db.read() as session:
        alerts = (await session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "admin_audit_broken"))).all()
    assert sorted(a.chat_id for a in alerts) == [9000, 9001]


async def test_a_rewrite_with_the_key_itself_is_caught_by_an_anchor(core: Core) -> None:
    await some_records(core, 6)
    pinned = await audit_chain.anchor(core.db, core.settings.data_dir, core.settings.admin_id_list)
    assert pinned is not None and pinned.seq == 6
    # Someone who holds the key re-chains an edit: every hash is right, only the anchor knows.
    key = audit_chain.Chain(core.keyring.audit_key)
    await rechain(core, 3, key.link, edit={"actor": "operator:1"})
    assert (await check(core)).ok
    report = await audit_chain.verify_anchored(core.db, core.settings.data_dir)
    assert (report.ok, report.first_bad_seq) == (False, 6)
    assert "record 6 is not the record anchored at" in report.problem
    # The same anchor given by an operator (the data dir lost) tells the same.
    anchors_path(core.settings.data_dir).unlink()
    report = await check(core, [parse_anchor(f"6:{pinned.hash}")])
    assert (report.ok, report.first_bad_seq) == (False, 6) and "given as an anchor" in report.problem


async def test_a_chain_rewritten_whole_as_plain_sha256_is_caught_by_an_anchor(core: Core) -> None:
    await some_records(core, 4)
    await audit_chain.anchor(core.db, core.settings.data_dir, [])
    await rechain(core, 1, plain_sha256, edit={"new": '{"price":1}'})  # no keyed record left
    report = await audit_chain.verify_anchored(core.db, core.settings.data_dir)
    assert (report.ok, report.first_bad_seq) == (False, 4)


async def test_a_damaged_anchors_file_fails_the_check(core: Core) -> None:
    await some_records(core, 2)
    path = anchors_path(core.settings.data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"seq":1,"hash":"nope","at":"2025-01-01T00:00:00+00:00"}\n')
    report = await audit_chain.verify_anchored(core.db, core.settings.data_dir)
    assert (report.ok, report.problem) == (False, "audit-anchors.jsonl line 1 is not an anchor")


# --- the command line, on both databases ----------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def cli_db(request: pytest.FixtureRequest) -> str | None:
    """The CLI's database: its data dir's SQLite file, or a fresh PostgreSQL database."""
    return None if request.param == "sqlite" else str(request.getfixturevalue("pg_database"))


def test_quanyi_audit_verify_and_anchor_exit_codes(cli_db: str | None, tmp_path: Path) -> None:
    cli = LocalCli(tmp_path, cli_db)
    cli.env["QUANYI_ADMIN_IDS"] = "9000"
    cli.ok("db", "upgrade")
    cli.ok("product", "add", "--sku", "VIP", "--name", "VIP", "--kind", "card_key", "--price", "15.00")
    assert cli.ok("audit", "verify").strip() == "2 records, chain intact"
    anchored = cli.ok("audit", "anchor").splitlines()
    assert anchored[0].startswith("anchored record 2: h1:") and "sent to 1 operator" in anchored[1]
    digest = anchored[0].split(": ", 1)[1]
    assert cli.ok("audit", "verify").strip() == "2 records, chain intact; 1 anchor held"
    assert cli.ok("audit", "verify", "--anchor", f"2:{digest}").strip() == "2 records, chain intact; 2 anchors held"
    assert "give an anchor as SEQ:HASH" in cli.fails("audit", "verify", "--anchor", "2-h1:abc")

    # A settlement anchors the head too (the command's own record comes after it).
    settled = cli.ok("settle", "--day", "2025-03-10")
    found = re.search(r"audit chain anchored at record (\d+): (\S+)", settled)
    lines = (cli.data_dir / "audit-anchors.jsonl").read_text().splitlines()
    assert found is not None and len(lines) == 2
    assert json.loads(lines[1])["seq"] == int(found[1]) and json.loads(lines[1])["hash"] == found[2]

    settings = make_settings(tmp_path, **({"database_url": cli_db} if cli_db else {}))

    async def tamper() -> None:
        core = build_core(settings)
        try:
            await rechain(core, 1, plain_sha256, edit={"action": "product remove"})
        finally:
            await core.close()

    asyncio.run(tamper())  # every record re-chained as plain SHA-256: no keyed record is left
    broken = cli.run("audit", "verify")
    assert broken.returncode == 1 and len(broken.stderr.strip().splitlines()) == 1
    assert "broken at record 2: record 2 is not the record anchored at" in broken.stderr
    # Without the anchors file the downgrade goes unseen, but the operators' anchor still catches it.
    (cli.data_dir / "audit-anchors.jsonl").unlink()
    assert cli.run("audit", "verify").returncode == 0
    rewritten = cli.run("audit", "verify", "--anchor", f"2:{digest}")
    assert rewritten.returncode == 1 and "record 2 is not the record given as an anchor" in rewritten.stderr


def test_an_anchor_is_parsed_as_the_message_shows_it() -> None:
    digest = "h1:" + secrets.token_hex(32)[:61]
    assert parse_anchor(f" 12:{digest} ") == Anchor(12, digest)
    assert parse_anchor("3:" + "a" * 64) == Anchor(3, "a" * 64)
    for bad in ("12", "0:" + digest, "x:" + digest, "12:h1:zz", "12:" + digest + "0"):
        with pytest.raises(InvalidInput):
            parse_anchor(bad)


def test_anchors_append_to_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "data" / "audit-anchors.jsonl"
    first = Anchor(1, "a" * 64, datetime(2025, 3, 11, 1, tzinfo=ZoneInfo("UTC")))
    audit_chain.write_anchor(path, first)
    path.chmod(0o644)
    audit_chain.write_anchor(path, Anchor(2, "b" * 64, first.at))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert audit_chain.read_anchors(path) == [first, Anchor(2, "b" * 64, first.at)]
    assert date(2025, 3, 11).isoformat() in path.read_text()
