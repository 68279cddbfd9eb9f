"""The little Markdown the API's texts use, rendered to HTML for the docs page.

Escape first, then convert: the only tags on the page are the ones added here, so a text that
quotes ``<code>`` shows it. Handles paragraphs, numbered and bulleted lists, inline code (`x`,
and the docstrings' ``x``), **bold** and [links](https://…); anything else stays text.
"""

from __future__ import annotations

import re

from markupsafe import Markup, escape

_CODE = re.compile(r"(``?)(.+?)\1")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
# Only web and same-site targets: a javascript: link in a text must not become one on the page.
_LINK = re.compile(r"\[([^\]]+)\]\(((?:https?://|/|#)[^\s)]*)\)")
_ITEM = re.compile(r"(\d+\.|[-*])\s+(.*)")


def _text(raw: str) -> str:
    html = str(escape(raw))
    html = _BOLD.sub(r"<strong>\1</strong>", html)
    return _LINK.sub(r'<a href="\2">\1</a>', html)


def inline(raw: str) -> Markup:
    """One line of text: code spans, bold and links, everything else escaped."""
    parts, last = [], 0
    for match in _CODE.finditer(raw):
        parts.append(_text(raw[last : match.start()]))
        parts.append(f"<code>{escape(match.group(2))}</code>")
        last = match.end()
    parts.append(_text(raw[last:]))
    return Markup("".join(parts))


def _blocks(lines: list[str]) -> list[tuple[str, list[str]]]:
    """Group one paragraph's lines into ("p", lines) and ("ol"/"ul", items) runs."""
    blocks: list[tuple[str, list[str]]] = []
    for line in lines:
        item = _ITEM.fullmatch(line)
        if item:
            kind = "ol" if item.group(1)[0].isdigit() else "ul"
            if not blocks or blocks[-1][0] != kind:
                blocks.append((kind, []))
            blocks[-1][1].append(item.group(2))
        elif blocks:
            # A line under a list item continues it, a line under a paragraph line joins it.
            blocks[-1][1][-1] += " " + line
        else:
            blocks.append(("p", [line]))
    return blocks


def block(raw: str) -> Markup:
    """A text of paragraphs (split by blank lines) and lists, each line's indent ignored."""
    html: list[str] = []
    for paragraph in re.split(r"\n\s*\n", raw.strip()):
        lines = [line.strip() for line in paragraph.splitlines() if line.strip()]
        for kind, items in _blocks(lines):
            if kind == "p":
                html.append(f"<p>{inline(' '.join(items))}</p>")
            else:
                html.append(f"<{kind}>" + "".join(f"<li>{inline(item)}</li>" for item in items) + f"</{kind}>")
    return Markup("\n".join(html))
