"""Turning core results into chat texts (HTML parse mode) in the buyer's language."""

from __future__ import annotations

from collections.abc import Sequence

from quanyi.core.money import Money
from quanyi.core.orders import DeliveredLine
from quanyi.i18n import raw_t, t

# Telegram refuses messages over 4096 characters; leave room for the header.
MESSAGE_LIMIT = 3800


def method_label(lang: str, method: str, option: str) -> str:
    for key in (f"method_{method}_{option}", f"method_{method}"):
        try:
            return raw_t(lang, key)
        except KeyError:
            continue
    return option or method


def status_label(lang: str, status: str) -> str:
    try:
        return raw_t(lang, f"status.{status}")
    except KeyError:
        return status


def delivery_messages(lang: str, number: str, lines: Sequence[DeliveredLine]) -> list[str]:
    """Every code of the order as text, split across messages when one would be too long."""
    blocks: list[str] = []
    for line in lines:
        blocks.append(t(lang, "delivery_line", name=line.name, quantity=line.quantity))
        for code in line.codes:
            text = f"{code.serial} {code.secret}" if code.serial else code.secret
            blocks.append(f"<code>{_escape(text)}</code>")
        if line.instructions:
            blocks.append(t(lang, "delivery_instructions", text=line.instructions))
    blocks.append(t(lang, "delivery_footer"))
    messages: list[str] = []
    current = [t(lang, "delivery_header", number=number)]
    size = len(current[0])
    for block in blocks:
        if size + len(block) + 1 > MESSAGE_LIMIT:
            messages.append("\n".join(current))
            current = [t(lang, "delivery_continued", number=number, part=len(messages) + 1)]
            size = len(current[0])
        current.append(block)
        size += len(block) + 1
    messages.append("\n".join(current))
    return messages


def money(amount: int, currency: str) -> str:
    return str(Money(amount, currency))


def _escape(text: str) -> str:
    import html

    return html.escape(text, quote=False)
