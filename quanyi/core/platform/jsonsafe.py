"""JSON that arrives from outside (partner API bodies, payment and supplier callbacks), read with
limits: a stable domain error for anything that is not plain JSON, never a parser crash.

The standard parser recurses once per nesting level, so a 64 KB body of ``[`` raises
``RecursionError`` (a 5xx) rather than ``ValueError``. The depth is therefore measured first, by
a flat scan that recurses into nothing, and a body nested deeper than ``max_depth`` is refused
before the parser sees it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from quanyi.core.errors import JsonTooDeep, MalformedJson

MAX_DEPTH = 32
# A string (its closing quote optional, so an unterminated one ends the scan in one linear match
# instead of being retried from every quote inside it) or one bracket.
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)
_OPENERS = frozenset("[{")


def loads_limited(body: bytes | str, *, max_depth: int = MAX_DEPTH, unique_keys: bool = False) -> Any:
    """The JSON value in ``body`` (bytes are UTF-8). Raises ``JsonTooDeep`` past ``max_depth``
    levels of arrays and objects, ``MalformedJson`` for anything else that is not JSON: NaN and
    Infinity, and with ``unique_keys`` a key given twice (a signed body never needs one, and which
    of the two counts is the parser's choice)."""
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
    except UnicodeDecodeError:
        raise MalformedJson("the body is not UTF-8") from None
    check_depth(text, max_depth)
    try:
        return json.loads(text, object_pairs_hook=_unique if unique_keys else None, parse_constant=_no_constant)
    except RecursionError:  # cannot happen after check_depth with a sane limit; still a 4xx if it does
        raise JsonTooDeep(f"the JSON nests deeper than {max_depth} levels") from None
    except ValueError as exc:  # JSONDecodeError, and the hooks' refusals
        raise MalformedJson(f"the body is not JSON ({_reason(exc)})") from None


def check_depth(text: str, max_depth: int = MAX_DEPTH) -> None:
    """Raise ``JsonTooDeep`` when arrays and objects in ``text`` nest deeper than ``max_depth``
    (brackets inside strings do not count). Malformed text is left to the parser."""
    if text.count("[") + text.count("{") <= max_depth:  # the common case: too few to nest that deep
        return
    depth = 0
    for match in _TOKEN.finditer(text):
        bracket = match.group()
        if bracket in _OPENERS:
            depth += 1
            if depth > max_depth:
                raise JsonTooDeep(f"the JSON nests deeper than {max_depth} levels")
        elif bracket in ("]", "}"):
            depth -= 1


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError("a key given twice")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _reason(exc: ValueError) -> str:
    # JSONDecodeError's own words ("Expecting value: line 1 column 1 (char 0)") quote no input.
    return exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)[:60]
