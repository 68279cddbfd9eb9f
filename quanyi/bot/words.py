"""Status words in the reader's language: a core value a message names (a refund's status, a
payment's outcome, a recharge's state, a report's view) is looked up in ``words.<table>`` of the
language files, so a Chinese message never shows ``succeeded`` and an English one never 已退款."""

from __future__ import annotations

import re

from quanyi.i18n import raw_t

_CODE = re.compile(r"^[a-z][a-z0-9_]*$")


def word(lang: str, table: str, value: str) -> str:
    """``value`` of ``words.<table>`` in ``lang``; a value the table lacks is shown as it is."""
    try:
        return raw_t(lang, f"words.{table}.{value}")
    except (KeyError, TypeError):  # not in the table (a dotted value may run into a text)
        return value


def supplier_reason(lang: str, reason: str) -> str:
    """A supplier's reason: a code it is known to send (``simulated_failure``) in words, its own
    sentence as it wrote it."""
    reason = reason.strip()
    return word(lang, "supplier_reason", reason) if _CODE.match(reason) else reason


def actor_name(lang: str, actor: str) -> str:
    """Who acted, as the trail names them (``operator:9000``, ``cli:ops``, ``system``), in words."""
    kind, _, who = actor.partition(":")
    try:
        return raw_t(lang, f"audit_words.actor.{kind}", id=who).strip()
    except KeyError:
        return actor
