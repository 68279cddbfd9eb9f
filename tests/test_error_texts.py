"""Every refusal core can hand to a chat is said in the reader's language: each ``raise`` of a
quanyi error in the domains the chat doors call names its text (``key=``), the text exists in zh
and en, and every value the text shows is passed with the error. Read off the source, so a new
refusal written without its texts fails here, not in a Chinese operator's chat."""

from __future__ import annotations

import ast
import inspect
import string
from pathlib import Path

import pytest

from quanyi.core import errors
from quanyi.i18n import LANGUAGES, raw_t

CORE = Path(errors.__file__).resolve().parent

# Errors with their own constructor are told apart by their type and fields in the doors (a
# stock file's line, a coupon's reason, a risk decision, a link's state); a provider's or a
# supplier's words are theirs, quoted as such.
SAID_BY_TYPE = {
    name
    for name, cls in vars(errors).items()
    if inspect.isclass(cls)
    and issubclass(cls, errors.QuanyiError)
    and ("__init__" in vars(cls) and cls is not errors.QuanyiError)
} | {
    name
    for name, cls in vars(errors).items()
    if inspect.isclass(cls)
    and issubclass(cls, (errors.ProviderError, errors.SupplierError, errors.CallbackRejected, errors.RiskRefusal))
}
QUANYI_ERRORS = {
    name for name, cls in vars(errors).items() if inspect.isclass(cls) and issubclass(cls, errors.QuanyiError)
}

# The domains whose refusals reach the operators', distributors' and buyers' chats.
DOMAINS = ["catalog", "stock", "sales", "risk", "books", "distributors", "partners", "support", "staff"]


def _raises(domain: str) -> list[tuple[str, ast.Call]]:
    found = []
    for path in sorted((CORE / domain).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
                continue
            func = node.exc.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in QUANYI_ERRORS and name not in SAID_BY_TYPE:
                found.append((f"{path.relative_to(CORE)}:{node.lineno}", node.exc))
    return found


def _key(call: ast.Call) -> str | None:
    for keyword in call.keywords:
        if keyword.arg == "key" and isinstance(keyword.value, ast.Constant):
            return str(keyword.value.value)
    return None


@pytest.mark.parametrize("domain", DOMAINS)
def test_every_refusal_names_its_text_and_the_text_has_its_values(domain: str) -> None:
    problems = []
    for where, call in _raises(domain):
        key = _key(call)
        if key is None:
            problems.append(f"{where}: no key= (its words in zh and en)")
            continue
        passes_all = any(keyword.arg is None for keyword in call.keywords)  # **details
        given = {keyword.arg for keyword in call.keywords if keyword.arg}
        for lang in LANGUAGES:
            try:
                text = raw_t(lang, key)
            except KeyError:
                problems.append(f"{where}: {key} has no {lang} text")
                continue
            wanted = {field for _, field, _, _ in string.Formatter().parse(text) if field}
            if not passes_all and not wanted <= given:
                problems.append(f"{where}: {key} ({lang}) shows {sorted(wanted - given)}, not passed")
    assert not problems, "\n".join(problems)


def test_the_scan_sees_the_refusals() -> None:
    # Guard against a scan that finds nothing (a moved package, a renamed error).
    assert sum(len(_raises(domain)) for domain in DOMAINS) > 200
