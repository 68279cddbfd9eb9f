"""Risk control: the blocklist and operator-editable rules screened on every order before
any stock is reserved, and the decisions they make (challenge, hold, block)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from quanyi.core.errors import (
    AlreadyExists,
    ChallengeRequired,
    HeldForReview,
    InvalidInput,
    NotFound,
    RiskBlocked,
    RiskRefusal,
)
from quanyi.core.models import BlockEntry, Order, OrderStatus, RiskDecision, RiskRule, User, utcnow
from quanyi.core.money import parse_minor
from quanyi.core.platform import audit
from quanyi.core.platform.db import Database, rowcount, upsert

METRICS = (
    "orders_per_user",
    "orders_per_ip",
    "orders_per_device",
    "unpaid_per_user",
    "amount_per_user",
    "quantity",
    "amount",
    "account_age",
)
ACTIONS = ("challenge", "hold", "block")
# Thresholds of these metrics are money in the shop's currency: typed and shown as 5000.00.
AMOUNT_METRICS = ("amount", "amount_per_user")
BLOCK_KINDS = ("user", "ip", "device")
_STRICTNESS = {"challenge": 1, "hold": 2, "block": 3}
MAX_ATTEMPTS = 3
_ANSWER_RE = re.compile(r"[0-9]{1,6}")  # a challenge answer as typed
_FULL_WIDTH_DIGITS = str.maketrans("０１２３４５６７８９", "0123456789")
# A challenge answered or a hold approved lets the same buyer order the same product once, soon.
PASS_VALID = timedelta(minutes=30)
# Challenge answers are hashed with the keyring's lookup key, which fronts pass as the
# secret; this per-process key only serves callers that pass none (a challenge they raise
# can be answered only within this process).
PROCESS_SECRET = secrets.token_bytes(32)

# What the buyer is told, per metric: the reason without the rule's internals.
_REASONS = {
    "orders_per_user": "too many orders in a short time",
    "orders_per_ip": "too many orders from this network",
    "orders_per_device": "too many orders from this device",
    "unpaid_per_user": "too many unpaid orders (at most {threshold}); pay or cancel one first",
    "amount_per_user": "the amount ordered is over the limit for now",
    "quantity": "the quantity is over the limit",
    "amount": "the amount is over the limit",
    "account_age": "the account is too new",
}


def reason_metric(reason: str) -> tuple[str, str] | None:
    """The metric (and its limit, where the reason names one) a decision's stored reason came
    from, so a door can say it in its reader's language; None for an operator's own words."""
    for metric, template in _REASONS.items():
        head, _, tail = template.partition("{threshold}")
        if not tail and reason == head:
            return metric, ""
        if tail and reason.startswith(head) and reason.endswith(tail):
            return metric, reason[len(head) : len(reason) - len(tail)]
    return None


@dataclass(frozen=True)
class Screening:
    user_id: int | None
    channel: str
    sku: str
    quantity: int
    amount: int
    currency: str
    client_ip: str | None = None
    device_id: str | None = None
    language: str | None = None


@dataclass(frozen=True)
class DefaultRule:
    name: str
    metric: str
    threshold: int
    action: str
    window_seconds: int | None = None


DEFAULT_RULES = (
    # Nobody holds the stock with unpaid orders.
    DefaultRule("unpaid-orders", "unpaid_per_user", 3, "block"),
    DefaultRule("burst-per-minute", "orders_per_user", 5, "challenge", 60),
    DefaultRule("orders-per-day", "orders_per_user", 50, "hold", 86400),
    DefaultRule("amount-per-day", "amount_per_user", 500000, "hold", 86400),
)


def _answer_hash(secret: bytes, decision_id: int, answer: str) -> str:
    return hmac.new(secret, f"{decision_id}:{answer}".encode(), hashlib.sha256).hexdigest()


def _split(scope: str) -> set[str]:
    return {part.strip() for part in scope.split(",") if part.strip()}


def _language(code: str | None) -> str:
    """``zh-hans`` → ``zh``: a rule names languages, not regional variants."""
    return (code or "").split("-", 1)[0].split("_", 1)[0].strip().lower()


def _in_scope(rule: RiskRule, s: Screening) -> bool:
    channels, skus = _split(rule.channels or ""), _split(rule.skus or "")
    languages = {_language(code) for code in _split(rule.languages or "")}
    return (
        (not channels or s.channel in channels)
        and (not skus or s.sku in skus)
        and (not languages or _language(s.language) in languages)
    )


async def _blocked(session: AsyncSession, s: Screening) -> BlockEntry | None:
    """The blocklist entry of this buyer, its IP or its device (in that order), if any."""
    keys = [("user", str(s.user_id)) if s.user_id is not None else None]
    keys += [("ip", s.client_ip) if s.client_ip else None, ("device", s.device_id) if s.device_id else None]
    wanted = [key for key in keys if key is not None]
    if not wanted:
        return None
    found = {
        (entry.kind, entry.value): entry
        for entry in await session.scalars(
            select(BlockEntry).where(or_(*(and_(BlockEntry.kind == k, BlockEntry.value == v) for k, v in wanted)))
        )
    }
    return next((found[key] for key in wanted if key in found), None)


def _counted_by(metric: str, s: Screening) -> tuple[Any, Any] | None:
    """The orders column a counted metric groups by, and this order's value of it."""
    return {
        "orders_per_user": (Order.user_id, s.user_id),
        "unpaid_per_user": (Order.user_id, s.user_id),
        "amount_per_user": (Order.user_id, s.user_id),
        "orders_per_ip": (Order.client_ip, s.client_ip),
        "orders_per_device": (Order.device_id, s.device_id),
    }.get(metric)


async def _measure_all(session: AsyncSession, rules: list[RiskRule], s: Screening, now: datetime) -> dict[int, int]:
    """Each rule's metric for this order (counting the order itself), by rule id; a rule whose
    metric does not apply (no IP given, say) is absent. The counted metrics of one column (the
    buyer, the IP, the device) come from one statement of conditional sums over its orders."""
    measured: dict[int, int] = {}
    counted: dict[str, tuple[Any, Any, list[tuple[int, Any, int]]]] = {}
    for rule in rules:
        metric = rule.metric
        if metric == "quantity":
            measured[rule.id] = s.quantity
            continue
        if metric == "amount":
            measured[rule.id] = s.amount
            continue
        if metric == "account_age":
            if s.user_id is not None:
                first_seen = await session.scalar(select(User.first_seen_at).where(User.id == s.user_id))
                measured[rule.id] = int((now - first_seen).total_seconds()) if first_seen is not None else 0
            continue
        column = _counted_by(metric, s)
        if column is None or column[1] is None:
            continue
        who, value = column
        since = now - timedelta(seconds=rule.window_seconds) if rule.window_seconds else None
        conditions: list[ColumnElement[bool]] = []
        if metric == "unpaid_per_user":
            conditions.append(Order.status == OrderStatus.PENDING)
        elif since is not None:
            conditions.append(Order.created_at > since)
        if metric == "amount_per_user":
            conditions += [Order.status != OrderStatus.CANCELLED, Order.currency == s.currency]
            expr: Any = func.coalesce(func.sum(case((and_(*conditions), Order.amount), else_=0)), 0)
            this_order = s.amount
        else:
            expr = func.coalesce(func.sum(case((and_(*conditions), 1), else_=0)), 0) if conditions else func.count()
            this_order = 1
        counted.setdefault(who.key, (who, value, []))[2].append((rule.id, expr, this_order))
    for who, value, wanted in counted.values():
        row = (await session.execute(select(*(expr for _, expr, _ in wanted)).where(who == value))).one()
        for (rule_id, _, this_order), total in zip(wanted, row, strict=True):
            measured[rule_id] = int(total or 0) + this_order
    return measured


def _tripped(rule: RiskRule, measured: int) -> bool:
    if rule.metric == "account_age":
        return measured < rule.threshold
    return measured > rule.threshold


def _same_buyer(s: Screening) -> list[ColumnElement[bool]]:
    """The decisions of this buyer: its Telegram user, or for a partner's order (no user) the
    same channel, end-customer IP and device."""
    if s.user_id is not None:
        return [RiskDecision.user_id == s.user_id]
    return [
        RiskDecision.user_id.is_(None),
        RiskDecision.channel == s.channel,
        RiskDecision.client_ip == s.client_ip if s.client_ip else RiskDecision.client_ip.is_(None),
        RiskDecision.device_id == s.device_id if s.device_id else RiskDecision.device_id.is_(None),
    ]


async def _use_pass(session: AsyncSession, s: Screening, action: str, now: datetime) -> bool:
    """Spend a recent answered challenge (or approved hold) of this buyer for this product."""
    statuses = ["approved"] if action == "hold" else ["approved", "passed"]
    candidates = await session.scalars(
        select(RiskDecision.id)
        .where(
            *_same_buyer(s),
            RiskDecision.sku == s.sku,
            RiskDecision.status.in_(statuses),
            RiskDecision.decided_at > now - PASS_VALID,
        )
        .order_by(RiskDecision.id)
    )
    for decision_id in list(candidates):
        used = await session.execute(
            update(RiskDecision)
            .where(RiskDecision.id == decision_id, RiskDecision.status.in_(statuses))
            .values(status="used")
        )
        if rowcount(used):
            return True
    return False


async def screen(session: AsyncSession, s: Screening, *, now: datetime | None = None, secret: bytes) -> None:
    """Return when the order may go ahead; otherwise raise ``RiskBlocked``, ``HeldForReview`` or
    ``ChallengeRequired`` carrying an unsaved decision (the caller persists it with ``record``
    after rolling back). Call it after the buyer's row is upserted: on PostgreSQL the row is
    locked here so one buyer's concurrent orders are counted one after another."""
    now = now or utcnow()
    if s.user_id is not None:
        await session.execute(select(User.id).where(User.id == s.user_id).with_for_update())
    entry = await _blocked(session, s)
    if entry is not None:
        raise RiskBlocked(
            f"blocked: {entry.reason}", decision=_decision(s, "block", None, entry.reason, now), secret=secret
        )
    worst: tuple[RiskRule, str] | None = None
    active = await session.scalars(select(RiskRule).where(RiskRule.active.is_(True)).order_by(RiskRule.id))
    rules = [rule for rule in active if rule.action in _STRICTNESS and _in_scope(rule, s)]
    measures = await _measure_all(session, rules, s, now)
    for rule in rules:
        measured = measures.get(rule.id)
        if measured is None or not _tripped(rule, measured):
            continue
        if worst is None or _STRICTNESS[rule.action] > _STRICTNESS[worst[0].action]:
            worst = (rule, _REASONS.get(rule.metric, rule.name).format(threshold=rule.threshold))
    if worst is None:
        return
    rule, reason = worst
    # A partner's order has no chat to answer a question in: an operator looks at it instead.
    action = "hold" if rule.action == "challenge" and s.user_id is None else rule.action
    if action != "block" and await _use_pass(session, s, action, now):
        return
    decision = _decision(s, action, rule.id, reason, now)
    if action == "block":
        raise RiskBlocked(f"refused: {reason}", decision=decision, secret=secret)
    if action == "hold":
        held = HeldForReview(f"held for review: {reason}", decision=decision, secret=secret)
        waiting = await session.scalar(
            select(RiskDecision.id)
            .where(
                *_same_buyer(s),
                RiskDecision.sku == s.sku,
                RiskDecision.action == "hold",
                RiskDecision.status == "open",
            )
            .limit(1)
        )
        if waiting is not None:
            # Already waiting for an operator: the same decision, not one more message per retry.
            held.decision_id = waiting
            held.details.update(decision_id=waiting, again=True)
        raise held
    a, b = secrets.randbelow(9) + 1, secrets.randbelow(9) + 1
    raise ChallengeRequired(
        f"answer a question first: {reason}", decision=decision, secret=secret, question=f"{a} + {b} = ?", answer=a + b
    )


def _decision(s: Screening, action: str, rule_id: int | None, reason: str, now: datetime) -> RiskDecision:
    final = action == "block"
    return RiskDecision(
        action=action,
        rule_id=rule_id,
        reason=reason[:255],
        user_id=s.user_id,
        client_ip=s.client_ip,
        device_id=s.device_id,
        channel=s.channel,
        sku=s.sku,
        quantity=s.quantity,
        amount=s.amount,
        currency=s.currency,
        # A block is final; challenges and holds wait for the buyer or an operator.
        status="rejected" if final else "open",
        attempts=0,
        decided_by="risk" if final else None,
        created_at=now,
        decided_at=now if final else None,
    )


async def record(db: Database, exc: RiskRefusal) -> int:
    """Persist the decision a refusal carries (in its own transaction, after the order's rolled
    back) and put its id into the error's details."""
    if exc.decision_id is not None:
        return exc.decision_id
    decision = exc.decision
    async with db.transaction() as session:
        session.add(decision)
        await session.flush()
        if isinstance(exc, ChallengeRequired):
            decision.answer_hash = _answer_hash(exc.secret, decision.id, str(exc.answer))
        decision_id = int(decision.id)
    exc.decision_id = decision_id
    exc.details["decision_id"] = decision_id
    return decision_id


async def answer_challenge(
    session: AsyncSession, decision_id: int, *, user_id: int, answer: str, secret: bytes
) -> bool:
    """True when ``answer`` is right: the buyer's next order of the product goes through once.
    Only the decision's buyer may answer, at most ``MAX_ATTEMPTS`` times; then it is rejected."""
    decision = await session.get(RiskDecision, decision_id)
    if decision is None or decision.user_id != user_id or decision.action != "challenge":
        return False
    if decision.status != "open" or decision.answer_hash is None:
        return False
    # Full-width digits are what a Chinese input method types for 0-9; past them, ASCII digits
    # only: str.isdigit() also takes "²" (which int() refuses) and "١٢" (which it reads as 12).
    # Anything else is simply a wrong answer and costs an attempt.
    given = answer.strip().translate(_FULL_WIDTH_DIGITS)
    right = _ANSWER_RE.fullmatch(given) is not None and hmac.compare_digest(
        decision.answer_hash, _answer_hash(secret, decision_id, str(int(given)))
    )
    open_ = (RiskDecision.id == decision_id, RiskDecision.status == "open", RiskDecision.attempts < MAX_ATTEMPTS)
    now = utcnow()
    if right:
        result = await session.execute(
            update(RiskDecision)
            .where(*open_)
            .values(status="passed", attempts=RiskDecision.attempts + 1, decided_by=f"buyer:{user_id}", decided_at=now)
        )
        await session.refresh(decision)
        return bool(rowcount(result))
    await session.execute(update(RiskDecision).where(*open_).values(attempts=RiskDecision.attempts + 1))
    await session.execute(
        update(RiskDecision)
        .where(RiskDecision.id == decision_id, RiskDecision.status == "open", RiskDecision.attempts >= MAX_ATTEMPTS)
        .values(status="rejected", decided_by="risk", decided_at=now)
    )
    await session.refresh(decision)
    return False


async def _resolve(
    session: AsyncSession, decision_id: int, *, actions: Sequence[str], status: str, actor: str, reason: str | None
) -> RiskDecision:
    values: dict[str, object] = {"status": status, "decided_by": actor[:64], "decided_at": utcnow()}
    if reason is not None:
        values["reason"] = reason.strip()[:255]
    result = await session.execute(
        update(RiskDecision)
        .where(RiskDecision.id == decision_id, RiskDecision.status == "open", RiskDecision.action.in_(actions))
        .values(**values)
    )
    decision = await session.get(RiskDecision, decision_id)
    if decision is None:
        raise NotFound(f"no risk decision {decision_id}", key="err_risk.no_decision", decision=decision_id)
    await session.refresh(decision)
    if not rowcount(result):
        raise InvalidInput(
            f"decision {decision_id} is {decision.status}, not open",
            key="err_risk.decided",
            status=decision.status,
            decision=decision_id,
        )
    return decision


async def approve(session: AsyncSession, decision_id: int, *, actor: str) -> RiskDecision:
    """An operator lets a held order through: the buyer's next order of the product, once."""
    return await _resolve(session, decision_id, actions=("hold",), status="approved", actor=actor, reason=None)


async def reject(session: AsyncSession, decision_id: int, *, actor: str, reason: str) -> RiskDecision:
    if not reason.strip():
        raise InvalidInput("give a reason", key="err_risk.reason_needed")
    return await _resolve(
        session, decision_id, actions=("hold", "challenge"), status="rejected", actor=actor, reason=reason
    )


def _block_key(kind: str, value: str) -> tuple[str, str]:
    kind, value = kind.strip().lower(), value.strip()
    if kind not in BLOCK_KINDS:
        raise InvalidInput(
            f"kind must be one of {', '.join(BLOCK_KINDS)}, not {kind!r}",
            key="err_risk.block_kind",
            kinds=", ".join(BLOCK_KINDS),
            kind=kind,
        )
    if not value or len(value) > 128 or not value.isprintable():
        raise InvalidInput("give a value of 1 to 128 printable characters", key="err_risk.block_value")
    if kind == "user" and not value.lstrip("-").isdigit():
        raise InvalidInput(
            f"a user is a Telegram user id (a number), not {value!r}", key="err_risk.block_user", value=value
        )
    return kind, value


async def block(session: AsyncSession, kind: str, value: str, *, reason: str, actor: str) -> BlockEntry:
    """Block a user, IP or device from ordering; blocking again replaces the reason."""
    kind, value = _block_key(kind, value)
    reason = reason.strip()
    if not reason:
        raise InvalidInput("give a reason", key="err_risk.reason_needed")
    was = await session.scalar(select(BlockEntry.reason).where(BlockEntry.kind == kind, BlockEntry.value == value))
    await session.execute(
        upsert(session, BlockEntry)
        .values(kind=kind, value=value, reason=reason[:255], created_by=actor[:64], created_at=utcnow())
        .on_conflict_do_update(
            index_elements=[BlockEntry.kind, BlockEntry.value],
            set_={"reason": reason[:255], "created_by": actor[:64]},
        )
    )
    entry = await session.scalar(select(BlockEntry).where(BlockEntry.kind == kind, BlockEntry.value == value))
    assert entry is not None
    await session.refresh(entry)
    # An upsert is not seen by the ORM's trail: the block is noted for it here.
    now = {"kind": kind, "value": value, "reason": entry.reason}
    before = None if was is None else {**now, "reason": was}
    audit.note(session, "update block" if before else "create block", "block", entry.id, before, now)
    return entry


async def unblock(session: AsyncSession, kind: str, value: str) -> bool:
    kind, value = _block_key(kind, value)
    entry = await session.scalar(
        select(BlockEntry).where(BlockEntry.kind == kind, BlockEntry.value == value).with_for_update()
    )
    if entry is None:
        return False
    await session.delete(entry)  # through the ORM: the audit trail keeps what was unblocked
    await session.flush()
    return True


async def list_blocks(session: AsyncSession) -> list[BlockEntry]:
    return list(await session.scalars(select(BlockEntry).order_by(BlockEntry.kind, BlockEntry.id)))


async def list_rules(session: AsyncSession) -> list[RiskRule]:
    return list(await session.scalars(select(RiskRule).order_by(RiskRule.id)))


async def decisions(session: AsyncSession, *, status: str | None = None, limit: int = 50) -> list[RiskDecision]:
    query = select(RiskDecision).order_by(RiskDecision.id.desc()).limit(limit)
    if status:
        query = query.where(RiskDecision.status == status)
    return list(await session.scalars(query))


def _check_rule(metric: str, threshold: int, action: str, window_seconds: int | None) -> None:
    if metric not in METRICS:
        raise InvalidInput(
            f"metric must be one of {', '.join(METRICS)}, not {metric!r}",
            key="err_risk.rule_metric",
            metrics=", ".join(METRICS),
            metric=metric,
        )
    if action not in ACTIONS:
        raise InvalidInput(
            f"action must be one of {', '.join(ACTIONS)}, not {action!r}",
            key="err_risk.rule_action",
            actions=", ".join(ACTIONS),
            action=action,
        )
    if not 0 <= threshold <= 10**15:
        raise InvalidInput("threshold must be between 0 and 10^15", key="err_risk.rule_threshold")
    if window_seconds is not None and not 1 <= window_seconds <= 366 * 86400:
        raise InvalidInput("window must be between 1 second and a year", key="err_risk.rule_window")


def _scope(values: Iterable[str]) -> str:
    parts = [v.strip() for value in values for v in value.split(",") if v.strip()]
    if any(len(p) > 64 or not p.isprintable() for p in parts):
        raise InvalidInput("a channel or sku is at most 64 printable characters", key="err_risk.scope_length")
    return ",".join(parts)


def _languages(values: Iterable[str]) -> str:
    codes = sorted({_language(v) for value in values for v in value.split(",") if v.strip()})
    if any(not (2 <= len(c) <= 3 and c.isascii() and c.isalpha()) for c in codes):
        raise InvalidInput(
            "a language is a 2- or 3-letter code such as zh, en, ru", key="err_risk.language_code", example="zh, en, ru"
        )
    text = ",".join(codes)
    if len(text) > 64:
        raise InvalidInput("at most 64 characters of languages", key="err_risk.languages_length")
    return text


async def add_rule(
    session: AsyncSession,
    *,
    name: str,
    metric: str,
    threshold: int,
    action: str,
    window_seconds: int | None = None,
    channels: Iterable[str] = (),
    skus: Iterable[str] = (),
    languages: Iterable[str] = (),
) -> RiskRule:
    """A rule over orders on ``channels`` of ``skus`` by buyers whose Telegram language is one of
    ``languages`` (each empty: all)."""
    name = name.strip()
    if not name or len(name) > 100 or not name.isprintable():
        raise InvalidInput("a rule's name is 1 to 100 printable characters", key="err_risk.rule_name")
    _check_rule(metric, threshold, action, window_seconds)
    if await session.scalar(select(RiskRule.id).where(RiskRule.name == name)) is not None:
        raise AlreadyExists(f"rule {name} exists already", key="err_risk.rule_exists", name=name)
    rule = RiskRule(
        name=name,
        metric=metric,
        threshold=threshold,
        action=action,
        window_seconds=window_seconds,
        channels=_scope(channels),
        skus=_scope(skus),
        languages=_languages(languages) or None,
        active=True,
        created_at=utcnow(),
    )
    session.add(rule)
    await session.flush()
    return rule


async def rule_named(session: AsyncSession, name: str) -> RiskRule:
    rule = await session.scalar(select(RiskRule).where(RiskRule.name == name.strip()))
    if rule is None:
        raise NotFound(f"no risk rule {name}", key="err_risk.no_rule", name=name)
    return rule


async def set_rule(
    session: AsyncSession,
    name: str,
    *,
    threshold: int | None = None,
    action: str | None = None,
    active: bool | None = None,
    window_seconds: int | None = None,
) -> RiskRule:
    rule = await rule_named(session, name)
    _check_rule(
        rule.metric,
        rule.threshold if threshold is None else threshold,
        rule.action if action is None else action,
        window_seconds,
    )
    if threshold is not None:
        rule.threshold = threshold
    if action is not None:
        rule.action = action
    if active is not None:
        rule.active = active
    if window_seconds is not None:
        rule.window_seconds = window_seconds
    await session.flush()
    return rule


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_changes(words: Sequence[str], metric: str, currency: str) -> tuple[int | None, str | None, int | None]:
    """``threshold=N action=A window=S`` as an operator types them: (threshold, action, window
    seconds). A money metric's threshold is an amount in ``currency``; a window may be 10m, 1h, 1d."""
    threshold: int | None = None
    action: str | None = None
    window: int | None = None
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not value:
            raise InvalidInput(f"{word}: expected key=value", key="err_risk.change_form", word=word)
        if key == "threshold":
            if metric in AMOUNT_METRICS:
                threshold = parse_minor(value, currency)
            elif value.isdecimal():
                threshold = int(value)
            else:
                raise InvalidInput(
                    f"threshold={value}: a whole number is needed", key="err_risk.threshold_whole", value=value
                )
        elif key == "action":
            if value not in ACTIONS:
                raise InvalidInput(
                    f"action={value}: one of {', '.join(ACTIONS)}",
                    key="err_risk.action_choice",
                    value=value,
                    actions=", ".join(ACTIONS),
                )
            action = value
        elif key == "window":
            match = re.fullmatch(r"(\d+)([smhd]?)", value)
            if match is None or int(match.group(1)) <= 0:
                raise InvalidInput(
                    f"window={value}: seconds (or 10m, 1h, 1d) above zero", key="err_risk.window_form", value=value
                )
            window = int(match.group(1)) * _UNITS[match.group(2) or "s"]
        else:
            raise InvalidInput(
                f"{key}: not threshold, action or window",
                key="err_risk.change_key",
                name=key,
                choices="threshold, action, window",
            )
    return threshold, action, window


async def ensure_defaults(session: AsyncSession) -> list[str]:
    """Insert the default rules that are missing (by name); an operator's edits stay."""
    have = set(await session.scalars(select(RiskRule.name)))
    added = []
    for default in DEFAULT_RULES:
        if default.name in have:
            continue
        await add_rule(
            session,
            name=default.name,
            metric=default.metric,
            threshold=default.threshold,
            action=default.action,
            window_seconds=default.window_seconds,
        )
        added.append(default.name)
    return added
