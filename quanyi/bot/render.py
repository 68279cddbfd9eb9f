"""Turning core results into chat texts (HTML parse mode) in the buyer's language."""

from __future__ import annotations

import re
from collections.abc import Sequence
from zoneinfo import ZoneInfo

from quanyi.core.money import Money
from quanyi.core.orders import DeliveredLine
from quanyi.core.redeem import IssuedLink, TokenState, link
from quanyi.i18n import raw_t, t

# Telegram refuses messages over 4096 characters; leave room for the header.
MESSAGE_LIMIT = 3800
# A delivery sends at most this many QR photos; past it the links come as text only.
QR_LIMIT = 10
_PHONE_LIKE = re.compile(r"\+?[\d][\d -]{6,}")


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


def delivery_messages(
    lang: str,
    number: str,
    lines: Sequence[DeliveredLine],
    links: Sequence[Sequence[IssuedLink]] = (),
    *,
    public_url: str = "",
    tz: str = "UTC",
    qr_limit: int | None = None,
) -> list[str]:
    """Every code and link of the order as text, split across messages when one would be too long.

    ``links`` runs parallel to ``lines`` (a card-key line has none). ``qr_limit`` says QR photos
    follow, so a note tells the buyer when some links come without one.
    """
    blocks: list[str] = []
    has_codes = False
    shown = 0
    for index, line in enumerate(lines):
        blocks.append(t(lang, "delivery_line", name=line.name, quantity=line.quantity))
        for code in line.codes:
            has_codes = True
            text = f"{code.serial} {code.secret}" if code.serial else code.secret
            blocks.append(f"<code>{_escape(text)}</code>")
        for issued in links[index] if index < len(links) else ():
            shown += 1
            blocks.append(link_block(lang, issued, public_url, tz))
        if line.instructions:
            blocks.append(t(lang, "delivery_instructions", text=line.instructions))
    if qr_limit is not None and shown > qr_limit:
        blocks.append(t(lang, "deliver.qr_limit", limit=qr_limit))
    blocks.append(t(lang, "delivery_footer" if has_codes or not shown else "deliver.links_footer"))
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


def link_block(lang: str, issued: IssuedLink, public_url: str, tz: str) -> str:
    """A link with what it grants, its uses left and its expiry."""
    if issued.state == TokenState.VALID:
        uses = raw_t(lang, "deliver.uses_left", left=issued.uses_left, max=issued.max_uses)
    else:
        uses = raw_t(lang, f"deliver.state_{issued.state.value}")
    if issued.expires_at is None:
        expiry = raw_t(lang, "deliver.no_expiry")
    else:
        at = issued.expires_at.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M")
        expiry = raw_t(lang, "deliver.valid_until", at=at)
    url = link(public_url, issued.token)
    return (
        t(lang, "deliver.link", url=url)
        + "\n"
        + t(lang, "deliver.link_details", entitlement=issued.entitlement, uses=uses, expiry=expiry)
    )


def mask_account(account: str) -> str:
    """A phone-like account with its middle hidden (first 3 and last 4 digits kept); others as given."""
    digits = sum(ch.isdigit() for ch in account)
    if not _PHONE_LIKE.fullmatch(account) or digits < 8:
        return account
    keep_tail = 4
    head = account[:3]
    return head + "*" * (len(account) - 3 - keep_tail) + account[-keep_tail:]


def money(amount: int, currency: str) -> str:
    return str(Money(amount, currency))


def _escape(text: str) -> str:
    import html

    return html.escape(text, quote=False)
