"""What the channel, distributor, partner and pricing pages share: reading a posted form's
fields, the status a refusal answers with, and the one-line notice after a change."""

from __future__ import annotations

from typing import Any

from quart import request

from quanyi.core.errors import Forbidden, NotFound, QuanyiError
from quanyi.webhooks.console.shell import text


class BadForm(ValueError):
    """A posted field that is missing or malformed; ``key`` names its text in ``console_people``."""

    def __init__(self, key: str, **values: Any) -> None:
        super().__init__(key)
        self.key, self.values = key, values

    def text(self) -> str:
        return text(f"console_people.bad.{self.key}", **self.values)


def status_of(exc: QuanyiError) -> int:
    if isinstance(exc, Forbidden):
        return 403
    if isinstance(exc, NotFound):
        return 404
    return 400


def field(form: Any, name: str) -> str:
    return str(form.get(name, "") or "").strip()


def required(form: Any, name: str) -> str:
    value = field(form, name)
    if not value:
        raise BadForm("missing", field=text(f"console_people.field.{name}"))
    return value


def whole(form: Any, name: str, *, default: int | None = None, least: int = 0) -> int:
    """A whole number field (``default`` when empty, if given)."""
    value = field(form, name)
    if not value and default is not None:
        return default
    if not (value.isascii() and value.isdigit()) or int(value) < least:
        raise BadForm("whole", field=text(f"console_people.field.{name}"), least=least)
    return int(value)


def optional_whole(form: Any, name: str, *, least: int = 0) -> int | None:
    return whole(form, name, least=least) if field(form, name) else None


def checked(form: Any, name: str) -> bool:
    return field(form, name) in ("1", "on", "yes", "true")


def done_notice() -> str:
    """The notice a change redirects with (``?done=KEY``): only a known text, never the query itself."""
    key = request.args.get("done", "")
    if not key or not key.replace("_", "").isalnum():
        return ""
    try:
        return text(f"console_people.done.{key}")
    except KeyError:
        return ""
