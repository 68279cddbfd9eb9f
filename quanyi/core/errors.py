"""The one exception tree. Each error has a stable code and a message fit for a user.

Messages never contain card-key secrets or credentials.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


class QuanyiError(Exception):
    """``message`` is English (logs, the CLI, the partner API); ``key`` names the same refusal's
    text in the i18n catalogues (``err_<domain>.<name>``, filled from ``details``), so a chat
    reply says it in the reader's language."""

    code = "error"

    def __init__(self, message: str = "", *, key: str = "", **details: object) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code
        self.key = key
        self.details = details


class ConfigError(QuanyiError):
    code = "config"


class NotFound(QuanyiError):
    code = "not_found"


class AlreadyExists(QuanyiError):
    code = "already_exists"


class InvalidInput(QuanyiError):
    code = "invalid_input"


class OutOfStock(QuanyiError):
    code = "out_of_stock"


class InsufficientBalance(QuanyiError):
    code = "insufficient_balance"


class Conflict(QuanyiError):
    """The same idempotency key with a different request."""

    code = "conflict"


class NotForSale(QuanyiError):
    code = "not_for_sale"


class Forbidden(QuanyiError):
    code = "forbidden"


class StockFileError(InvalidInput):
    """The stock file is malformed in a way that makes its meaning unclear; nothing imported."""

    code = "stock_file_malformed"

    def __init__(self, line: int, reason: str, *, key: str = "", **details: object) -> None:
        super().__init__(f"line {line}: {reason}", key=key, line=line, **details)
        self.line = line
        self.reason = reason


class CallbackRejected(QuanyiError):
    """A payment callback failed verification; nothing changed."""

    code = "callback_rejected"


class PaymentMethodUnavailable(QuanyiError):
    code = "payment_method_unavailable"


class CardKeyError(QuanyiError):
    code = "card_key"


class RefundNotSupported(QuanyiError):
    code = "refund_not_supported"


class RefundFailed(QuanyiError):
    """The provider refused or could not be reached; the refund stays open to retry."""

    code = "refund_failed"


class ProviderError(QuanyiError):
    """A payment provider's API answered with an error or not at all."""

    code = "provider_error"


class TokenUnusable(QuanyiError):
    """A redemption link exists but can take no more uses (HTTP 410).

    Carries what a refusal page shows: the link's use count and its expiry.
    """

    code = "token_unusable"

    def __init__(self, message: str = "", *, max_uses: int = 0, expires_at: datetime | None = None) -> None:
        super().__init__(message, max_uses=max_uses, expires_at=expires_at)
        self.max_uses = max_uses
        self.expires_at = expires_at


class TokenExpired(TokenUnusable):
    code = "token_expired"


class TokenUsedUp(TokenUnusable):
    code = "token_used_up"


class TokenVoid(TokenUnusable):
    code = "token_void"


class SignInRefused(QuanyiError):
    """A one-time sign-in link that cannot sign anyone in: expired or used already."""

    code = "sign_in_refused"


class SupplierError(QuanyiError):
    """A recharge supplier refused a request or did not answer. Nothing is known to be credited;
    asking again with the same order number is always safe (the supplier dedupes on it)."""

    code = "supplier_error"


class SupplierOrderUnknown(SupplierError):
    """The supplier has no order under this number: the place call never reached it."""

    code = "supplier_order_unknown"


class CouponRejected(InvalidInput):
    """A coupon code that does not apply to this order; ``reason`` is a ``pricing.Reason``."""

    code = "coupon_rejected"

    def __init__(self, message: str, *, reason: str, **details: Any) -> None:
        super().__init__(message, reason=reason, **details)
        self.reason = reason


class RiskRefusal(QuanyiError):
    """The risk screen did not allow an order; nothing was written. ``decision`` is the unsaved
    record ``risk.record`` persists, which then fills ``decision_id``."""

    code = "risk"

    def __init__(self, message: str, *, decision: Any, secret: bytes = b"", **details: Any) -> None:
        super().__init__(message, decision_id=None, **details)
        self.decision: Any = decision
        self.decision_id: int | None = None
        self.secret = secret


class RiskBlocked(RiskRefusal):
    code = "risk_blocked"

    def __init__(self, message: str, *, decision: Any, secret: bytes = b"") -> None:
        super().__init__(message, decision=decision, secret=secret, reason=decision.reason)
        self.reason: str = decision.reason


class ChallengeRequired(RiskRefusal):
    """The buyer must answer ``question`` in chat before the order proceeds."""

    code = "risk_challenge"

    def __init__(self, message: str, *, decision: Any, secret: bytes, question: str, answer: int) -> None:
        super().__init__(message, decision=decision, secret=secret, question=question)
        self.question = question
        self.answer = answer  # never in details or the message: only its HMAC is stored


class HeldForReview(RiskRefusal):
    code = "risk_hold"


class MalformedJson(InvalidInput):
    """A body from outside that is not the JSON it must be: not UTF-8, not JSON, a key given
    twice where that is refused, or NaN / Infinity (not JSON at all)."""

    code = "malformed_json"


class JsonTooDeep(MalformedJson):
    """JSON nested deeper than the reader allows: refused before the parser recurses into it."""

    code = "json_too_deep"


class LimitReached(QuanyiError):
    """A buyer asked for more than a limit allows (open support tickets, messages an hour);
    ``details["limit"]`` names which, ``details["max"]`` how many."""

    code = "limit_reached"
