"""The Telegram Login Widget's answer, checked as Telegram documents it: the fields but ``hash``,
sorted and joined as ``key=value`` lines, HMAC-SHA256 under SHA-256(bot token), must equal
``hash``; ``auth_date`` must be recent."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

from quanyi.core.errors import Forbidden

MAX_AGE_SECONDS = 300
_FIELDS = frozenset({"id", "first_name", "last_name", "username", "photo_url", "auth_date", "hash"})


def signed_user(fields: Mapping[str, str], bot_token: str, *, now: float | None = None) -> int:
    """The Telegram user id the widget vouches for. ``Forbidden`` when the fields are not
    signed by this bot, carry unknown fields, or are older than five minutes."""
    given = fields.get("hash", "")
    if not bot_token or not given or set(fields) - _FIELDS or "id" not in fields or "auth_date" not in fields:
        raise Forbidden("the Telegram sign-in is incomplete", key="err_staff.widget_bad")
    check = "\n".join(f"{key}={fields[key]}" for key in sorted(fields) if key != "hash")
    secret = hashlib.sha256(bot_token.encode()).digest()
    expected = hmac.new(secret, check.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, given.lower()):
        raise Forbidden("the Telegram sign-in is not signed by this bot", key="err_staff.widget_bad")
    try:
        user_id, signed_at = int(fields["id"]), int(fields["auth_date"])
    except ValueError:
        raise Forbidden("the Telegram sign-in is malformed", key="err_staff.widget_bad") from None
    age = (time.time() if now is None else now) - signed_at
    if age > MAX_AGE_SECONDS or age < -60:
        raise Forbidden("the Telegram sign-in is too old; sign in again", key="err_staff.widget_old")
    return user_id
