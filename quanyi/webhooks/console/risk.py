"""Risk control (风控): the rules screened on every order (add, edit, on/off), the blocklist
(block and unblock with a reason) and the held orders an operator approves or rejects — the
same service methods as ``quanyi risk`` and the chat's /risk, /block and /decisions."""

from __future__ import annotations

import re
from typing import Any

from quart import redirect, request, url_for

from quanyi.core.errors import QuanyiError
from quanyi.core.money import parse_minor
from quanyi.core.risk.views import ACTIONS, AMOUNT_METRICS, BLOCK_KINDS, METRICS, STATUSES
from quanyi.core.staff.roles import Area
from quanyi.webhooks.console import blueprint
from quanyi.webhooks.console.audit import actor_name
from quanyi.webhooks.console.money_words import BadForm, say, status_of
from quanyi.webhooks.console.shell import core, guard, me, page, reason, text

_WINDOW = re.compile(r"(\d{1,9})([smhd]?)")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def window_text(seconds: int | None) -> str:
    if not seconds:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@blueprint.get("/risk")
@guard(Area.RISK)
async def risk() -> Any:
    return await _risk_page()


async def _risk_page(error: str = "", status: int = 200, kept: dict[str, str] | None = None) -> Any:
    board = await core().risk.decision_board()
    shown = request.args.get("decisions", "")
    recent = board.recent
    if shown in STATUSES:  # every decision of one status, as ``quanyi risk decisions --status``
        recent = await core().risk.decisions(status=shown, limit=200)
    return await page(
        "console/risk.html",
        status=status,
        rules=await core().risk.rules(),
        blocks=await core().risk.blocks(),
        held=[d for d in board.open if d.action == "hold"],
        challenges=[d for d in board.open if d.action != "hold"],
        recent=recent,
        statuses=STATUSES,
        shown=shown if shown in STATUSES else "",
        metrics=METRICS,
        amount_metrics=AMOUNT_METRICS,
        actions=ACTIONS,
        kinds=BLOCK_KINDS,
        window_text=window_text,
        who=actor_name,
        say=say,
        decision_reason=decision_reason,
        error=error,
        notice=request.args.get("done", ""),
        kept=kept or {},
    )


def decision_reason(d: Any) -> str:
    """Why the shop decided, as the chat says it: a rule's reason by its metric, or the operator's words."""
    if d.metric in METRICS:
        return text(f"risk.reason_{d.metric}", threshold=d.limit)
    return str(d.reason)


def _window(raw: str) -> int | None:
    raw = raw.strip()
    if not raw:
        return None
    match = _WINDOW.fullmatch(raw)
    if match is None or int(match.group(1)) <= 0:
        raise BadForm(text("console_money.bad_window", value=raw[:20]))
    return int(match.group(1)) * _UNITS[match.group(2) or "s"]


def _threshold(raw: str, metric: str) -> int:
    raw = raw.strip()
    try:
        if metric in AMOUNT_METRICS:
            return parse_minor(raw, core().settings.currency)
        if raw.isdecimal():
            return int(raw)
    except (ValueError, QuanyiError):
        pass
    raise BadForm(text("console_money.bad_threshold", value=raw[:20]))


def _done(what: str) -> Any:
    return redirect(url_for("console.risk", done=what), 303)


@blueprint.post("/risk/rules")
@guard(Area.RISK, write=True)
async def risk_rule_add() -> Any:
    form = await request.form
    metric = form.get("metric", "")
    try:
        await core().risk.add_rule(
            name=form.get("name", ""),
            metric=metric,
            threshold=_threshold(form.get("threshold", ""), metric),
            action=form.get("action", ""),
            window_seconds=_window(form.get("window", "")),
            channels=[form.get("channels", "")],
            skus=[form.get("skus", "")],
            languages=[form.get("languages", "")],
        )
    except BadForm as exc:
        return await _risk_page(str(exc), 400, kept=dict(form))
    except QuanyiError as exc:
        return await _risk_page(reason(exc), status_of(exc), kept=dict(form))
    return _done("rule_added")


@blueprint.post("/risk/rules/edit")
@guard(Area.RISK, write=True)
async def risk_rule_edit() -> Any:
    form = await request.form
    changes = [f"{key}={value}" for key in ("threshold", "action", "window") if (value := form.get(key, "").strip())]
    if not changes:
        return await _risk_page(text("console_money.nothing_to_change"), 400)
    try:
        await core().risk.edit_rule(form.get("name", ""), changes)
    except QuanyiError as exc:
        return await _risk_page(reason(exc), status_of(exc))
    return _done("rule_saved")


@blueprint.post("/risk/rules/<int:rule_id>/toggle")
@guard(Area.RISK, write=True)
async def risk_rule_toggle(rule_id: int) -> Any:
    if await core().risk.toggle_rule(rule_id) is None:
        return await _risk_page(text("console_money.no_rule"), 404)
    return _done("rule_saved")


@blueprint.post("/risk/block")
@guard(Area.RISK, write=True)
async def risk_block() -> Any:
    form = await request.form
    try:
        await core().risk.block(
            form.get("kind", ""), form.get("value", ""), reason=form.get("reason", ""), actor=me().actor
        )
    except QuanyiError as exc:
        return await _risk_page(reason(exc), status_of(exc), kept=dict(form))
    return _done("blocked")


@blueprint.post("/risk/unblock")
@guard(Area.RISK, write=True)
async def risk_unblock() -> Any:
    form = await request.form
    try:
        removed = await core().risk.unblock(form.get("kind", ""), form.get("value", ""))
    except QuanyiError as exc:
        return await _risk_page(reason(exc), status_of(exc))
    if not removed:
        return await _risk_page(text("console_money.not_blocked"), 400)
    return _done("unblocked")


@blueprint.post("/risk/decisions/<int:decision_id>/approve")
@guard(Area.RISK, write=True)
async def risk_approve(decision_id: int) -> Any:
    try:
        await core().risk.approve_hold(decision_id, actor=me().actor)
    except QuanyiError as exc:
        return await _risk_page(reason(exc), status_of(exc))
    return redirect(url_for("console.risk", done="approved") + "#held", 303)


@blueprint.post("/risk/decisions/<int:decision_id>/reject")
@guard(Area.RISK, write=True)
async def risk_reject(decision_id: int) -> Any:
    form = await request.form
    try:
        await core().risk.reject_hold(decision_id, actor=me().actor, reason=form.get("reason", ""))
    except QuanyiError as exc:
        return await _risk_page(reason(exc), status_of(exc))
    return redirect(url_for("console.risk", done="rejected") + "#held", 303)
