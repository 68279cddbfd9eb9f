"""`stock import`: CSV and TXT read as a stream, duplicates and bad lines counted, malformed files refused whole."""

from __future__ import annotations

import asyncio
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from quanyi.core.catalog.products import add_product
from quanyi.core.errors import InvalidInput, NotFound, StockFileError
from quanyi.core.models import StockBatch, StockItem
from quanyi.core.money import Money
from quanyi.core.services import Core
from quanyi.core.stock.items import available_counts, import_stock, item_aad

BOM = b"\xef\xbb\xbf"


async def add_card_product(core: Core, sku: str = "VIP", kind: str = "card_key") -> int:
    async with core.db.transaction() as session:
        product = await add_product(session, sku=sku, name=f"{sku} card", kind=kind, price=Money.parse("15.00", "CNY"))
        return product.id


async def stored_codes(core: Core, product_id: int) -> list[tuple[str | None, str, str, datetime | None]]:
    """(serial, decrypted secret, status, expires_at) of every stored item of a product, in id order."""
    async with core.db.read() as session:
        rows = (
            await session.execute(
                select(StockItem.serial, StockItem.key_id, StockItem.secret_ct, StockItem.status, StockItem.expires_at)
                .where(StockItem.product_id == product_id)
                .order_by(StockItem.id)
            )
        ).all()
    aad = item_aad(product_id)
    return [(serial, core.keyring.decrypt(key_id, ct, aad), status, exp) for serial, key_id, ct, status, exp in rows]


async def row_counts(core: Core) -> tuple[dict[str, int], int]:
    """Stock items per status (all products) and the number of import batches."""
    async with core.db.read() as session:
        items = dict((await session.execute(select(StockItem.status, func.count()).group_by(StockItem.status))).all())
        batches = await session.scalar(select(func.count()).select_from(StockBatch))
    return items, int(batches or 0)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


async def test_csv_with_bom_crlf_header_and_optional_expiry_imports_every_line(core, tmp_path):
    product_id = await add_card_product(core)
    path = write(
        tmp_path / "keys.csv",
        BOM
        + b"serial,secret,expires_at\r\n"
        + b"S-001,AAAA-1111-\xe5\x8d\xa1\xe5\xaf\x86,2099-12-31\r\n"  # a non-ASCII secret survives the round trip
        + b"S-002,BBBB-2222,\r\n"
        + b'S-003,"CC,CC-3333",2099-06-30T12:00:00+08:00\r\n'
        + b"\r\n",
    )

    report = await import_stock(core.db, core.keyring, "VIP", path)

    assert (report.imported, report.duplicates, report.rejected) == (3, 0, 0)
    assert await stored_codes(core, product_id) == [
        ("S-001", "AAAA-1111-卡密", "available", datetime(2099, 12, 31, tzinfo=UTC)),
        ("S-002", "BBBB-2222", "available", None),
        ("S-003", "CC,CC-3333", "available", datetime(2099, 6, 30, 4, 0, tzinfo=UTC)),
    ]


async def test_csv_columns_may_come_in_any_order_and_serial_is_optional(core, tmp_path):
    first = await add_card_product(core, "A")
    second = await add_card_product(core, "B")
    await import_stock(core.db, core.keyring, "A", write(tmp_path / "a.csv", b" Secret , SERIAL \nk-a1,s1\nk-a2,s2\n"))
    await import_stock(core.db, core.keyring, "B", write(tmp_path / "b.csv", b"secret\nk-b1\nk-b2\n"))
    assert [(s, c) for s, c, _, _ in await stored_codes(core, first)] == [("s1", "k-a1"), ("s2", "k-a2")]
    assert [(s, c) for s, c, _, _ in await stored_codes(core, second)] == [(None, "k-b1"), (None, "k-b2")]


async def test_txt_takes_one_code_per_line_or_serial_and_code(core, tmp_path):
    product_id = await add_card_product(core)
    path = write(
        tmp_path / "keys.txt",
        BOM + b"CODE-ONLY-1\r\nSN-2 CODE-2\r\n\r\n   \r\n  CODE-ONLY-3  \r\nSN-4\tCODE-4\nCODE-ONLY-5",
    )

    report = await import_stock(core.db, core.keyring, "VIP", path)

    assert (report.imported, report.duplicates, report.rejected) == (5, 0, 0)
    assert [(serial, secret) for serial, secret, _, _ in await stored_codes(core, product_id)] == [
        (None, "CODE-ONLY-1"),
        ("SN-2", "CODE-2"),
        (None, "CODE-ONLY-3"),
        ("SN-4", "CODE-4"),
        (None, "CODE-ONLY-5"),
    ]


async def test_duplicates_in_the_file_and_in_the_database_are_counted_and_never_stored_twice(core, tmp_path):
    vip = await add_card_product(core, "VIP")
    other = await add_card_product(core, "OTHER")
    first = await import_stock(core.db, core.keyring, "VIP", write(tmp_path / "one.txt", b"OLD-1\nOLD-2\n"))
    assert (first.imported, first.duplicates) == (2, 0)
    await import_stock(core.db, core.keyring, "OTHER", write(tmp_path / "other.txt", b"ELSEWHERE-1\n"))

    # More lines than one write chunk, so a repeat far down the file lands in a later chunk.
    filler = [f"FILL-{n:05d}" for n in range(6000)]
    lines = ["NEW-1", "OLD-1", "NEW-1", "S9 NEW-2", "ELSEWHERE-1", *filler, "NEW-1", "OLD-2", filler[0], "NEW-3"]
    second = await import_stock(
        core.db, core.keyring, "VIP", write(tmp_path / "two.txt", ("\n".join(lines) + "\n").encode())
    )

    assert (second.imported, second.duplicates, second.rejected) == (6003, 6, 0)
    secrets = [secret for _, secret, _, _ in await stored_codes(core, vip)]
    assert len(secrets) == len(set(secrets)) == 2 + 6003
    assert {"NEW-1", "NEW-2", "NEW-3"} <= set(secrets)
    assert "ELSEWHERE-1" not in secrets  # a code is unique across products too
    assert [secret for _, secret, _, _ in await stored_codes(core, other)] == ["ELSEWHERE-1"]

    again = await import_stock(core.db, core.keyring, "VIP", write(tmp_path / "three.txt", b"NEW-1\nNEW-3\n"))
    assert (again.imported, again.duplicates) == (0, 2)
    assert (await row_counts(core))[0] == {"available": 2 + 6003 + 1}


async def test_rejected_lines_are_counted_with_their_line_numbers_and_the_rest_imported(core, tmp_path):
    product_id = await add_card_product(core)
    yesterday = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    rows = [
        "serial,secret,expires_at",  # 1
        "S1,GOOD-1,2099-01-01",  # 2
        "S2,,2099-01-01",  # 3 empty secret
        f"S3,{'x' * 513},",  # 4 over-long secret
        "S4,GOOD-4,31/12/2099",  # 5 not a date
        f"S5,GOOD-5,{yesterday}",  # 6 already expired
        f"S6,{'y' * 512},",  # 7 the longest secret allowed
        "S7,GOOD-7,2099-02-30",  # 8 no such day
        "S8,GOOD-8,",  # 9
    ]
    report = await import_stock(
        core.db, core.keyring, "VIP", write(tmp_path / "mixed.csv", ("\n".join(rows) + "\n").encode())
    )

    assert (report.imported, report.duplicates, report.rejected) == (3, 0, 5)
    assert [r.line for r in report.rejected_examples] == [3, 4, 5, 6, 8]
    reasons = [r.reason for r in report.rejected_examples]
    assert "empty" in reasons[0] and "longer" in reasons[1] and "date" in reasons[2] and "expired" in reasons[3]
    assert all("x" * 20 not in reason for reason in reasons)  # reasons never quote the line
    assert [secret for _, secret, _, _ in await stored_codes(core, product_id)] == ["GOOD-1", "y" * 512, "GOOD-8"]

    txt = await import_stock(
        core.db, core.keyring, "VIP", write(tmp_path / "long.txt", f"OK-1\nSN {'z' * 600}\nOK-3\n".encode())
    )
    assert (txt.imported, txt.rejected, [r.line for r in txt.rejected_examples]) == (2, 1, [2])


def _valid_prefix(count: int, *, csv: bool) -> bytes:
    if csv:
        return b"serial,secret\n" + b"".join(f"S{n},PRE-{n:05d}\n".encode() for n in range(count))
    return b"".join(f"S{n} PRE-{n:05d}\n".encode() for n in range(count))


# Each file starts with thousands of good lines (more than one write chunk) before the
# line that makes it unreadable, so "nothing imported" is not just "nothing read yet".
MALFORMED = {
    "csv-wrong-column-count": (
        "keys.csv",
        _valid_prefix(6000, csv=True) + b"S9,HIDDEN-SECRET-9,2099-01-01\nS10,K10\n",
        6002,
    ),
    "csv-too-few-columns": ("keys.csv", _valid_prefix(6000, csv=True) + b"HIDDEN-SECRET-9\nS10,K10\n", 6002),
    "csv-undecodable-bytes": ("keys.csv", _valid_prefix(6000, csv=True) + b"S9,HIDDEN\xff\xfeSECRET\nS10,K10\n", 6002),
    "csv-nul-byte": ("keys.csv", _valid_prefix(6000, csv=True) + b"S9,HIDDEN\x00SECRET\nS10,K10\n", 6002),
    "csv-unclosed-quote": (
        "keys.csv",
        _valid_prefix(6000, csv=True) + b'S9,"HIDDEN-SECRET-9\nS10,K10\nS11,K11\n',
        6002,
    ),
    "csv-field-over-two-lines": (
        "keys.csv",
        _valid_prefix(6000, csv=True) + b'S9,"HIDDEN-SECRET\nPART-TWO"\nS10,K10\n',
        6002,
    ),
    "csv-bad-header": ("keys.csv", b"serial,code\nS1,HIDDEN-SECRET-1\n", 1),
    "csv-header-repeats-a-column": ("keys.csv", b"secret,secret\nHIDDEN-SECRET-1,K\n", 1),
    "txt-three-fields": ("keys.txt", _valid_prefix(6000, csv=False) + b"S9 HIDDEN-SECRET-9 extra\nK10\n", 6001),
    "txt-undecodable-bytes": ("keys.txt", _valid_prefix(6000, csv=False) + b"\xc3\x28HIDDEN-SECRET\nK10\n", 6001),
    "txt-nul-byte": ("keys.txt", _valid_prefix(6000, csv=False) + b"HIDDEN-SECRET\x00\nK10\n", 6001),
    "txt-old-mac-line-endings": ("keys.txt", b"SN-1\rHIDDEN-SECRET-1\r", 1),  # else read as "serial secret"
    "txt-latin1-file": ("keys.txt", "K1\nK2\nHIDDEN-SECRET-é\n".encode("latin-1"), 3),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_a_malformed_file_imports_nothing_and_names_its_line(core, tmp_path, case):
    name, data, bad_line = MALFORMED[case]
    await add_card_product(core)
    await import_stock(core.db, core.keyring, "VIP", write(tmp_path / "before.txt", b"EARLIER-1\nEARLIER-2\n"))
    before = await row_counts(core)

    with pytest.raises(StockFileError) as caught:
        await import_stock(core.db, core.keyring, "VIP", write(tmp_path / name, data))

    assert caught.value.line == bad_line
    assert str(caught.value).startswith(f"line {bad_line}:")
    assert "HIDDEN" not in str(caught.value)  # the line's content (a secret) is never quoted
    assert await row_counts(core) == before == ({"available": 2}, 1)  # not one staged, available or batch row


async def test_a_file_that_is_not_csv_or_txt_or_a_product_that_takes_no_codes_is_refused(core, tmp_path):
    await add_card_product(core, "VIP")
    await add_card_product(core, "LINK", kind="redeem_link")
    good = write(tmp_path / "keys.txt", b"K1\n")
    with pytest.raises(StockFileError):
        await import_stock(core.db, core.keyring, "VIP", write(tmp_path / "keys.xlsx", b"K1\n"))
    with pytest.raises(NotFound):
        await import_stock(core.db, core.keyring, "NOPE", good)
    with pytest.raises(InvalidInput):
        await import_stock(core.db, core.keyring, "LINK", good)
    assert await row_counts(core) == ({}, 0)
    # An explicit format overrides the file name.
    report = await import_stock(core.db, core.keyring, "VIP", write(tmp_path / "keys.dat", b"secret\nK1\n"), fmt="csv")
    assert report.imported == 1


async def test_a_file_that_turns_malformed_while_it_is_written_leaves_nothing_behind(core, tmp_path):
    """The file passed the first check, then grew a bad line while the rows were being written."""
    await add_card_product(core)
    path = write(tmp_path / "growing.txt", b"".join(f"CODE-{n:06d}\n".encode() for n in range(12_000)))
    calls: list[int] = []

    def progress(line: int) -> None:
        if not calls:  # after the first chunk was written
            with path.open("ab") as handle:
                handle.write(b"SN CODE extra\n")
        calls.append(line)

    with pytest.raises(StockFileError) as caught:
        await import_stock(core.db, core.keyring, "VIP", path, progress=progress)

    assert calls and caught.value.line == 12_001
    items, _ = await row_counts(core)
    assert items == {}  # the rows already written were taken back
    async with core.db.read() as session:
        assert (await session.scalars(select(StockBatch.status))).all() == ["aborted"]
    # The same codes import cleanly afterwards.
    path.write_bytes(b"".join(f"CODE-{n:06d}\n".encode() for n in range(12_000)))
    assert (await import_stock(core.db, core.keyring, "VIP", path)).imported == 12_000


async def test_imported_items_become_sellable_only_when_the_import_finished(core, tmp_path):
    product_id = await add_card_product(core)
    lines = 12_000  # several write chunks
    path = write(tmp_path / "big.txt", b"".join(f"CODE-{n:06d}\n".encode() for n in range(lines)))
    seen: list[tuple[int, int]] = []  # (staged, available), each pair from one statement
    sellable_seen: list[int] = []  # what the catalogue shows as in stock
    finished = asyncio.Event()

    async def watch() -> None:
        while not finished.is_set():
            async with core.db.read() as session:
                counts = dict(
                    (
                        await session.execute(
                            select(StockItem.status, func.count())
                            .where(StockItem.product_id == product_id)
                            .group_by(StockItem.status)
                        )
                    ).all()
                )
                sellable_seen.append((await available_counts(session, [product_id])).get(product_id, 0))
            seen.append((counts.get("staged", 0), counts.get("available", 0)))
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    try:
        report = await import_stock(core.db, core.keyring, "VIP", path)
    finally:
        finished.set()
        await watcher

    assert report.imported == lines
    in_progress = [s for s in seen if s[0] > 0]
    assert in_progress, "the watcher never saw the import half-way; make the file bigger"
    assert all(available == 0 for _, available in in_progress), in_progress
    # Every moment is either "nothing sellable yet" or "everything sellable": never a part.
    assert {available for _, available in seen} <= {0, lines}
    assert set(sellable_seen) <= {0, lines}
    assert await row_counts(core) == ({"available": lines}, 1)


def _write_codes(path: Path, count: int, prefix: str) -> Path:
    with path.open("w") as handle:
        for n in range(count):
            handle.write(f"SN{n:08d} {prefix}-{n:08d}-abcdefghijklmnop\n")
    return path


async def _peak_while_importing(core: Core, sku: str, path: Path) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        baseline = tracemalloc.get_traced_memory()[0]
        report = await import_stock(core.db, core.keyring, sku, path)
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    assert report.imported > 0
    return peak


def _memory_to_hold(path: Path) -> int:
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        held = path.read_text().splitlines()
        size = tracemalloc.get_traced_memory()[0] - baseline
        del held
    finally:
        tracemalloc.stop()
    return size


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_import_streams_the_file_with_memory_that_does_not_grow_with_its_size(core, tmp_path):
    for sku in ("WARM", "SMALL", "LARGE"):
        await add_card_product(core, sku)
    # Warm the statement caches first, so neither measurement pays for them.
    await import_stock(core.db, core.keyring, "WARM", _write_codes(tmp_path / "warm.txt", 6000, "warm"))

    small = _write_codes(tmp_path / "small.txt", 20_000, "small")
    large = _write_codes(tmp_path / "large.txt", 100_000, "large")
    small_peak = await _peak_while_importing(core, "SMALL", small)
    large_peak = await _peak_while_importing(core, "LARGE", large)

    # Five times the lines, (almost) the same peak: nothing per line is kept.
    assert large_peak < small_peak * 1.2 + 1_000_000, (small_peak, large_peak)
    # Holding a 1,000,000-line file of such lines would take ten times what 100,000 take.
    per_million = _memory_to_hold(large) * 10
    assert large_peak < per_million / 4, (large_peak, per_million)
