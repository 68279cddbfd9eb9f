"""Reconciling a payment provider's statement with our payments: in core, on the command line
and in the operator chat."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from quanyi.core.books.reconcile import (
    MAX_STATEMENT_BYTES,
    Section,
    StatementError,
    parse_statement,
    reconcile_statement,
)
from quanyi.core.errors import InvalidInput
from quanyi.core.models import Order, Payment
from quanyi.core.money import Money
from quanyi.core.sales.refunds import refund_order
from quanyi.core.services import Core
from tests.helpers import new_order, product_with_stock, sandbox_event
from tests.test_bot_chat import shop, tg  # noqa: F401  (fixtures)
from tests.test_cli_channels import _open
from tests.test_cli_pricing import cmd  # noqa: F401  (fixture)

HEADER = "provider_txn_id,order_number,amount,status,time\n"


async def paid_orders(core: Core, tmp_path: Path, count: int) -> list[str]:
    """``count`` orders of ¥15.00 paid through the sandbox with txn ids T1..Tn; their numbers."""
    await product_with_stock(core, tmp_path, units=count + 2)
    numbers = []
    for n in range(1, count + 1):
        placed = await new_order(core, user_id=1000 + n)
        await core.fulfiller.submit(sandbox_event(placed.order.number, placed.order.amount, txn=f"T{n}"))
        numbers.append(placed.order.number)
    return numbers


async def statement_rows(core: Core) -> list[list[str]]:
    """Our sandbox payments as the provider would list them: all paid, at our times."""
    async with core.db.read() as session:
        payments = (await session.scalars(select(Payment).order_by(Payment.id))).all()
        numbers = {p.id: await order_number(session, p.order_id) for p in payments}
    return [
        [
            p.provider_txn_id,
            numbers[p.id],
            Money(p.amount, p.currency).format_plain(),
            "success",
            p.created_at.isoformat(),
        ]
        for p in payments
    ]


async def order_number(session, order_id: int) -> str:
    return str(await session.scalar(select(Order.number).where(Order.id == order_id)))


def statement(rows: list[list[str]], header: str = HEADER) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return (header + out.getvalue()).encode()


async def run(core: Core, data: bytes, provider: str = "sandbox"):
    return await reconcile_statement(
        core.db, data, provider, methods=core.payments.names(), default_currency="CNY", tz="Asia/Shanghai"
    )


def found(report) -> list[tuple[str, str, str, str | None, str | None, str | None, str | None]]:
    return [
        (
            m.section.value,
            m.order_number,
            m.provider_txn_id,
            m.theirs.format_plain() if m.theirs else None,
            m.ours.format_plain() if m.ours else None,
            m.their_status,
            m.our_status,
        )
        for m in report.mismatches
    ]


async def test_each_kind_of_injected_mismatch_is_found_and_nothing_else(core, tmp_path):
    numbers = await paid_orders(core, tmp_path, 5)
    unpaid = (await new_order(core, user_id=2001)).order.number
    rows = await statement_rows(core)
    # A payment from long before the statement's span is not expected on it.
    old = (await new_order(core, user_id=2002)).order
    await core.fulfiller.submit(sandbox_event(old.number, old.amount, txn="T-OLD"))
    async with core.db.transaction() as session:
        await session.execute(
            update(Payment)
            .where(Payment.provider_txn_id == "T-OLD")
            .values(created_at=datetime.now(UTC) - timedelta(days=2))
        )

    del rows[1]  # T2: paid with us, not with them
    rows[1][2] = "16.00"  # T3: they got ¥1.00 more
    rows[2][3] = "TRADE_CLOSED"  # T4: they say it failed
    rows.append(["T-LOST", unpaid, "15.00", "paid", rows[0][4]])  # paid with them, no callback reached us
    report = await run(core, statement(rows))

    assert found(report) == [
        ("missing_with_them", numbers[1], "T2", None, "15.00", None, "paid"),
        ("missing_with_us", unpaid, "T-LOST", "15.00", None, "paid", None),
        ("amount", numbers[2], "T3", "16.00", "15.00", "paid", "paid"),
        ("status", numbers[3], "T4", "15.00", "15.00", "failed", "paid"),
    ]
    assert [m.line for m in report.mismatches] == [None, 6, 3, 4]
    assert (report.rows, report.transactions, report.matched) == (5, 5, 2)  # T1 and T5
    assert report.total(Section.MISSING_WITH_THEM) == [Money(1500, "CNY")]
    assert report.total(Section.AMOUNT) == [Money(100, "CNY")]  # theirs minus ours
    assert not report.ok


async def test_a_clean_statement_matches_with_refunds_and_ids_the_provider_renamed(core, tmp_path):
    numbers = await paid_orders(core, tmp_path, 3)
    await refund_order(core, numbers[2], reason="buyer asked", actor="cli")
    rows = await statement_rows(core)
    rows[0][0] = "PROVIDER-OWN-ID-1"  # not our txn id: matched by the order number
    rows[2][3] = "refunded"
    rows.append(["T9", numbers[0], "15.00", "FAILED", rows[0][4]])  # an attempt that failed with them
    report = await run(core, statement(rows))
    assert report.ok and found(report) == []
    assert (report.transactions, report.matched) == (4, 3)

    # We refunded T3; a statement that still says paid is a status mismatch.
    rows[2][3] = "succeeded"
    report = await run(core, statement(rows))
    assert found(report) == [("status", numbers[2], "T3", "15.00", "15.00", "paid", "refunded")]


async def test_a_payment_and_its_refund_on_two_rows_are_one_transaction(core, tmp_path):
    numbers = await paid_orders(core, tmp_path, 2)
    await refund_order(core, numbers[1], reason="buyer asked", actor="cli")
    rows = await statement_rows(core)
    later = (datetime.fromisoformat(rows[1][4]) + timedelta(minutes=1)).isoformat()
    # The refund row carries its own amount; the paid row's amount is the one compared.
    rows.append(["T2", numbers[1], "15.00", "refunded", later])
    rows.append(["", "", "", "", ""])  # blank lines are skipped
    report = await run(core, statement(rows))
    assert report.ok, found(report)
    assert (report.rows, report.transactions) == (3, 2)


async def test_a_currency_column_and_a_double_payment_kept_for_review(core, tmp_path):
    numbers = await paid_orders(core, tmp_path, 1)
    await core.fulfiller.submit(sandbox_event(numbers[0], 1500, txn="T-TWICE"))  # needs_review with us
    rows = await statement_rows(core)
    with_currency = [[*row[:3], "CNY", *row[3:]] for row in rows]
    header = "provider_txn_id,order_number,amount,currency,status,time\n"
    assert (await run(core, statement(with_currency, header))).ok
    with_currency[0][3] = "USD"
    del with_currency[1]
    report = await run(core, statement(with_currency, header))
    assert found(report) == [
        ("missing_with_them", numbers[0], "T-TWICE", None, "15.00", None, "needs_review"),
        ("amount", numbers[0], "T1", "15.00", "15.00", "paid", "paid"),
    ]
    assert report.mismatches[1].theirs == Money(1500, "USD")


async def test_an_unknown_provider_is_refused(core, tmp_path):
    await paid_orders(core, tmp_path, 1)
    data = statement(await statement_rows(core))
    with pytest.raises(InvalidInput, match="no payment method 'alipay'"):
        await run(core, data, provider="alipay")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (
            b"provider_txn_id,order_number,amount,time\nT1,Q1,15.00,2024-05-01T10:00:00\n",
            "line 1: missing column status",
        ),
        (
            HEADER.encode() + b"T1,Q1,15.00,paid,2024-05-01T10:00:00\nT2,Q2,15.0.0,paid,2024-05-01T10:00:00\n",
            "line 3: not an amount: '15.0.0'",
        ),
        (HEADER.encode() + b"T1,Q1,-15.00,paid,2024-05-01T10:00:00\n", "line 2: not an amount: '-15.00'"),
        (HEADER.encode() + b"T1,Q1,15.00,paid,yesterday\n", "line 2: not an ISO 8601 time: 'yesterday'"),
        (HEADER.encode() + b"T1,Q1,15.00,maybe,2024-05-01T10:00:00\n", "line 2: unknown status 'maybe'"),
        (HEADER.encode() + b"T1,Q1,15.00\n", "line 2: 3 fields, the header has 5"),
        (
            HEADER.encode() + b"T1,Q1,15.00,paid,2024-05-01T10:00:00\nT2,Q\xe9,1.00,paid,2024-05-01T10:00:00\n",
            "line 3: not UTF-8 text",
        ),
        (
            b"provider_txn_id,order_number,amount,currency,status,time\nT1,Q1,15.001,CNY,paid,2024-05-01\n",
            "line 2: CNY amounts have at most 2 decimals",
        ),
        (
            b"provider_txn_id,order_number,amount,currency,status,time\nT1,Q1,15,XXX,paid,2024-05-01\n",
            "line 2: unknown currency 'XXX'",
        ),
        (HEADER.encode(), "no transactions"),
        (b"", "the file is empty"),
        (HEADER.encode() + b"x" * MAX_STATEMENT_BYTES, "larger than 10 MB"),
    ],
)
def test_a_malformed_statement_is_refused_naming_the_line(data, reason):
    with pytest.raises(StatementError) as refused:
        parse_statement(data)
    assert reason in refused.value.message


def test_statement_words_and_times_are_read_as_documented():
    data = (
        "\ufeffTime , Status,Amount,Order_Number,Provider_Txn_Id,fee\n"
        "2024-05-01 10:00:00,TRADE_SUCCESS,15.5,Q1,T1,0.10\n"
        "2024-05-01T02:00:00Z,Partially-Refunded,15.50,Q1,T1,\n"
        "2024-05-01T10:00:00+08:00,succeeded,8,Q2,,\n"
    ).encode()
    rows = parse_statement(data, tz="Asia/Shanghai")
    assert [(r.line, r.provider_txn_id, r.order_number, r.amount, r.status.value) for r in rows] == [
        (2, "T1", "Q1", "15.5", "paid"),
        (3, "T1", "Q1", "15.50", "refunded"),
        (4, "", "Q2", "8", "paid"),
    ]
    # A time without an offset is in QUANYI_TIMEZONE: 10:00 in Shanghai is 02:00 UTC.
    assert {r.time for r in rows} == {datetime(2024, 5, 1, 2, 0, tzinfo=UTC)}


# --- command line ----------------------------------------------------------------------------


async def test_the_command_line_prints_the_sections_and_exits_by_outcome(cmd, tmp_path):
    core = await _open(tmp_path, upgrade=True)
    try:
        numbers = await paid_orders(core, tmp_path, 3)
        rows = await statement_rows(core)
    finally:
        await core.close()
    clean = tmp_path / "clean.csv"
    clean.write_bytes(statement(rows))
    result = cmd.run("reconcile", str(clean), "--provider", "sandbox")
    assert result.returncode == 0, result.stderr
    assert "sandbox statement: 3 transactions on 3 rows" in result.stdout and "; 3 match" in result.stdout
    assert "paid with us, not with them: 0 (-)" in result.stdout
    assert result.stdout.rstrip().endswith("everything matches")

    rows[0][2] = "14.50"
    del rows[2]
    broken = tmp_path / "broken.csv"
    broken.write_bytes(statement(rows))
    out = tmp_path / "mismatches.csv"
    result = cmd.run("reconcile", str(broken), "--provider", "SANDBOX", "--out", str(out))
    assert result.returncode == 3, result.stderr
    assert "paid with us, not with them: 1 (¥15.00)" in result.stdout
    assert "paid with them, not with us: 0 (-)" in result.stdout
    assert "amount mismatches: 1 (¥-0.50)" in result.stdout
    assert "status mismatches: 0 (-)" in result.stdout
    table_line = next(line for line in result.stdout.splitlines() if line.startswith(numbers[0]))
    assert table_line.split() == [numbers[0], "T1", "¥14.50", "¥15.00", "paid", "paid", "2"]
    assert "\n2 mismatches\nmismatches written to" in result.stdout
    written = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [(r["section"], r["order_number"], r["their_amount"], r["our_amount"]) for r in written] == [
        ("missing_with_them", numbers[2], "", "15.00"),
        ("amount", numbers[0], "14.50", "15.00"),
    ]

    bad = tmp_path / "bad.csv"
    bad.write_bytes(HEADER.encode() + b"T1,Q1,15.00,paid,noon\n")
    result = cmd.run("reconcile", str(bad), "--provider", "sandbox")
    assert result.returncode == 1
    assert result.stderr.strip() == f"quanyi: {bad}: line 2: not an ISO 8601 time: 'noon'"
    result = cmd.run("reconcile", str(tmp_path / "nowhere.csv"), "--provider", "sandbox")
    assert result.returncode == 1 and "cannot read" in result.stderr
    result = cmd.run("reconcile", str(clean), "--provider", "alipay")
    assert result.returncode == 1 and "no payment method 'alipay'" in result.stderr


# --- operator chat ---------------------------------------------------------------------------


async def test_an_operator_reconciles_a_statement_sent_in_chat(core, shop, tmp_path):
    numbers = await paid_orders(core, tmp_path, 3)
    rows = await statement_rows(core)
    admin = shop.user(9000, "en")

    await admin.send_document(statement(rows), "alipay-0501.csv", "/reconcile sandbox")
    clean = await admin.expect("Reconciliation")
    assert "3 transactions on 3 rows" in clean.plain and "Everything matches." in clean.plain

    rows[1][3] = "refunded"
    await admin.send_document(statement(rows), "statement.csv", "/reconcile sandbox")
    found_message = await admin.expect("mismatches")
    assert "1 mismatches" in found_message.plain
    assert "Status mismatches: 1 (¥15.00)" in found_message.plain
    assert f"{numbers[1]} · T2 · theirs ¥15.00 refunded · ours ¥15.00 paid" in found_message.plain
    document = await admin.expect(lambda m: m.kind == "document")
    assert shop.document_of(document).filename.startswith("reconcile-sandbox-")
    written = list(csv.DictReader(io.StringIO(shop.document_of(document).decode())))
    assert [(r["section"], r["provider_txn_id"], r["their_status"], r["our_status"]) for r in written] == [
        ("status", "T2", "refunded", "paid")
    ]

    await admin.send_document(HEADER.encode() + b"T1,Q1,15.00,paid\n", "statement.csv", "/reconcile sandbox")
    assert "Refused: line 2: 4 fields, the header has 5" in (await admin.expect("Refused")).plain
    downloads = len(shop.calls_of("getFile"))
    await admin.send_document(statement(rows), "big.csv", "/reconcile sandbox", file_size=11_000_000)
    assert "larger than 10 MB" in (await admin.expect()).plain
    await admin.send_document(statement(rows), "statement.pdf", "/reconcile sandbox")
    assert ".csv or .txt" in (await admin.expect()).plain
    assert len(shop.calls_of("getFile")) == downloads  # neither was fetched
    await admin.send_document(statement(rows), "statement.csv", "/reconcile")
    assert "/reconcile PROVIDER" in (await admin.expect()).plain
    await admin.send("/reconcile sandbox")
    assert "Providers: sandbox" in (await admin.expect()).plain

    buyer = shop.user(1001, "zh")
    await buyer.send_document(statement(rows), "statement.csv", "/reconcile sandbox")
    assert "没看懂" in (await buyer.expect()).plain
