"""Reading card-key stock files (CSV with a header, or TXT) as a stream of lines.

A file is either read whole or refused whole: wrong column counts and undecodable
bytes make its meaning unclear and raise ``StockFileError`` with the line number.
Lines whose meaning is clear but whose content is unusable (an empty secret, a bad
date) are *rejected* one by one and counted. Error texts never quote the line, which
would put a secret into a log.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from quanyi.core.errors import StockFileError

MAX_SECRET = 512
MAX_SERIAL = 128
MAX_LINE_BYTES = 4096
MAX_FILE_BYTES = 200 * 1024 * 1024  # QUANYI_MAX_STOCK_FILE_MB
CSV_COLUMNS = ("serial", "secret", "expires_at")


@dataclass(frozen=True, slots=True)
class StockLine:
    line: int
    serial: str | None
    secret: str
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class RejectedLine:
    """A line left out: ``reason`` in English (the CLI), ``key`` its text in the i18n catalogues,
    filled with ``limit`` where the text names one."""

    line: int
    reason: str
    key: str = ""
    limit: int = 0


def detect_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".csv", ".txt"):
        return suffix[1:]
    raise StockFileError(0, "stock files end in .csv or .txt", key="err_stock.file_suffix")


def read_stock_file(
    path: Path, fmt: str | None = None, *, max_bytes: int = MAX_FILE_BYTES
) -> Iterator[StockLine | RejectedLine]:
    """The file's lines, parsed as data only (nothing in a line is evaluated or expanded).

    A file larger than ``max_bytes`` is refused before a byte of it is read.
    """
    fmt = fmt or detect_format(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise StockFileError(
            0,
            f"file is {size / 2**20:.1f} MB, larger than the {max_bytes / 2**20:g} MB limit",
            key="err_stock.file_too_big",
            size=f"{size / 2**20:.1f}",
            limit=f"{max_bytes / 2**20:g}",
        )
    lines = _decoded_lines(path)
    if fmt == "csv":
        return _csv_lines(lines)
    return _txt_lines(lines)


def _decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if len(raw) > MAX_LINE_BYTES:
                raise StockFileError(
                    number, f"line longer than {MAX_LINE_BYTES} bytes", key="err_stock.long_line", limit=MAX_LINE_BYTES
                )
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise StockFileError(number, "not valid UTF-8", key="err_stock.file_utf8", encoding="UTF-8") from None
            if number == 1:
                text = text.removeprefix("\ufeff")
            if "\x00" in text:
                raise StockFileError(number, "contains a NUL byte (binary file?)", key="err_stock.file_nul")
            text = text.rstrip("\r\n")
            if "\r" in text:  # CR-only line endings would glue several codes into one line
                raise StockFileError(
                    number, "carriage return inside a line (old Mac line endings?)", key="err_stock.file_cr"
                )
            yield number, text


def _txt_lines(lines: Iterator[tuple[int, str]]) -> Iterator[StockLine | RejectedLine]:
    for number, text in lines:
        parts = text.split()
        if not parts:
            continue
        if len(parts) == 1:
            yield _checked(number, None, parts[0], "")
        elif len(parts) == 2:
            yield _checked(number, parts[0], parts[1], "")
        else:
            raise StockFileError(
                number,
                f"expected 'code' or 'serial code', found {len(parts)} fields",
                key="err_stock.txt_fields",
                found=len(parts),
            )


def _csv_lines(lines: Iterator[tuple[int, str]]) -> Iterator[StockLine | RejectedLine]:
    numbers: list[int] = []

    def feed() -> Iterator[str]:
        for number, text in lines:
            numbers.append(number)
            yield text

    reader = csv.reader(feed(), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return
        columns = [name.strip().lower() for name in header]
        if "secret" not in columns or any(c not in CSV_COLUMNS for c in columns) or len(set(columns)) != len(columns):
            raise StockFileError(
                1,
                "header must name serial, secret[, expires_at]",
                key="err_stock.csv_header",
                columns="serial, secret[, expires_at]",
            )
        index = {name: columns.index(name) for name in columns}
        numbers.clear()
        for row in reader:
            if len(numbers) > 1:  # a quoted field over several lines: no code spans lines
                raise StockFileError(
                    numbers[0], "quoted field runs past the end of the line", key="err_stock.csv_quote"
                )
            number = numbers[-1]
            numbers.clear()
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(columns):
                raise StockFileError(
                    number,
                    f"expected {len(columns)} columns, found {len(row)}",
                    key="err_stock.csv_columns",
                    want=len(columns),
                    found=len(row),
                )
            serial = row[index["serial"]].strip() if "serial" in index else None
            expires = row[index["expires_at"]].strip() if "expires_at" in index else ""
            yield _checked(number, serial or None, row[index["secret"]].strip(), expires)
    except csv.Error as exc:
        line = numbers[0] if numbers else 0
        raise StockFileError(line, f"CSV syntax: {exc}", key="err_stock.csv_syntax") from None


def _checked(number: int, serial: str | None, secret: str, expires: str) -> StockLine | RejectedLine:
    if not secret:
        return RejectedLine(number, "empty secret", "err_stock.line_empty")
    if len(secret) > MAX_SECRET:
        return RejectedLine(number, f"secret longer than {MAX_SECRET} characters", "err_stock.long_secret", MAX_SECRET)
    if any(ord(ch) < 32 for ch in secret):
        return RejectedLine(number, "secret contains control characters", "err_stock.line_control")
    if serial is not None and len(serial) > MAX_SERIAL:
        return RejectedLine(number, f"serial longer than {MAX_SERIAL} characters", "err_stock.long_serial", MAX_SERIAL)
    expires_at = None
    if expires:
        try:
            expires_at = _parse_time(expires)
        except ValueError:
            return RejectedLine(number, "expires_at is not a date (YYYY-MM-DD or ISO 8601)", "err_stock.line_bad_date")
        if expires_at <= datetime.now(UTC):
            return RejectedLine(number, "already expired", "err_stock.line_expired")
    return StockLine(number, serial, secret, expires_at)


def _parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
