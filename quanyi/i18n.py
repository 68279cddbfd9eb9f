"""The one translation layer for chat and pages: zh-CN (default) and en.

Texts live in ``templates/i18n/<lang>.toml`` and ``<lang>.<area>.toml`` (one file per
front area, merged; a key defined twice is an error). Every value passed into a text is
HTML-escaped, because chat messages use Telegram's HTML parse mode.
"""

from __future__ import annotations

import html
import re
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

LANGUAGES = ("zh", "en")
DEFAULT = "zh"
_DIR = Path(__file__).resolve().parent / "templates" / "i18n"
# The HTML tags our texts use; a callback toast or alert shows them literally.
_TAG = re.compile(r"</?(?:b|i|u|s|code|pre|a|blockquote|tg-spoiler)(?:\s[^<>]*)?>")


def pick_language(code: str | None) -> str:
    """Telegram's ``language_code`` (``zh-hans``, ``en-US``...) to one of ours; zh by default."""
    if code:
        base = code.lower().split("-")[0].split("_")[0]
        if base in LANGUAGES:
            return base
    return DEFAULT


@cache
def catalog(lang: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for path in [_DIR / f"{lang}.toml", *sorted(_DIR.glob(f"{lang}.*.toml"))]:
        with path.open("rb") as handle:
            for key, value in tomllib.load(handle).items():
                if key in merged:
                    raise ValueError(f"{path.name}: [{key}] is defined in another {lang} file too")
                merged[key] = value
    return merged


def _lookup(lang: str, key: str) -> str:
    node: Any = catalog(lang if lang in LANGUAGES else DEFAULT)
    for part in key.split("."):
        node = node[part]
    return str(node)


def t(lang: str, key: str, **values: Any) -> str:
    """Look up ``key`` (``status.pending`` for nested tables) and fill in escaped values."""
    text = _lookup(lang, key)
    if not values:
        return text
    return text.format(**{k: html.escape(str(v), quote=False) for k, v in values.items()})


def raw_t(lang: str, key: str, **values: Any) -> str:
    """Like ``t`` but without escaping, for plain-text places (button labels, page titles)."""
    text = _lookup(lang, key)
    return text.format(**values) if values else text


def plain_t(lang: str, key: str, **values: Any) -> str:
    """The text without its HTML tags and unescaped, for callback toasts and alerts, which
    Telegram shows as plain text (a ``<code>`` there would be shown literally)."""
    text = html.unescape(_TAG.sub("", _lookup(lang, key)))
    return text.format(**values) if values else text
