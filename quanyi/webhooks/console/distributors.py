"""Distributors (代理): the tree with tiers, parents and balances; invites (a tier without cost
prices asks to be confirmed, like ``--allow-no-margin``); one distributor's quotas, balance
entries, credit and debit with a note, tier, invite limit and whether it is active; cost prices;
commission rates per chain level and commission rows a page at a time. The use cases of
``quanyi distributor`` / ``commission`` and the admin chat's ``/invite`` and ``/topup``."""

from __future__ import annotations

from typing import Any

from quart import redirect, request, url_for

from quanyi.core.distributors.console_views import COMMISSION_STATUSES
from quanyi.core.distributors.terms import NoMargin
from quanyi.core.distributors.views import InviteView, format_rate, parse_rate
from quanyi.core.errors import QuanyiError
from quanyi.core.staff.roles import Area
from quanyi.webhooks.console import blueprint
from quanyi.webhooks.console.people_forms import (
    BadForm,
    checked,
    done_notice,
    field,
    optional_whole,
    required,
    status_of,
    whole,
)
from quanyi.webhooks.console.shell import core, guard, me, page, reason

PER_PAGE = 50


@blueprint.get("/distributors")
@guard(Area.DISTRIBUTORS)
async def distributors() -> Any:
    return await _distributors_page()


async def _distributors_page(
    error: str = "", status: int = 200, *, values: dict[str, str] | None = None, no_margin: str = ""
) -> Any:
    service = core().distributors
    return await page(
        "console/distributors.html",
        status=status,
        tree=await service.tree(),
        invites=await service.open_invites(),
        rates=sorted((await core().books.commission_rates()).items()),
        tier_prices=await service.tier_prices(),
        products=await core().catalog.product_list(),
        format_rate=format_rate,
        error=error,
        notice=done_notice(),
        values=values or {},
        no_margin=no_margin,
    )


@blueprint.post("/distributors/invite")
@guard(Area.DISTRIBUTORS, write=True)
async def distributor_invite() -> Any:
    form = await request.form
    values = {name: field(form, name) for name in ("tier", "invite_limit", "hours", "parent")}
    allow = checked(form, "allow_no_margin")
    try:
        hours = optional_whole(form, "hours", least=1)
        parent = field(form, "parent")
        if parent:
            invite = await core().distributors.create_sub_invite(
                parent, created_by=me().actor, hours=hours, allow_no_margin=allow
            )
        else:
            invite = await core().distributors.create_invite(
                created_by=me().actor,
                tier=field(form, "tier") or "default",
                invite_limit=whole(form, "invite_limit", default=0),
                hours=hours,
                allow_no_margin=allow,
            )
    except BadForm as exc:
        return await _distributors_page(exc.text(), 400, values=values)
    except NoMargin as exc:
        # Like the CLI's --allow-no-margin: say what it means and offer to invite anyway.
        return await _distributors_page(reason(exc), 400, values=values, no_margin=str(exc.details.get("tier", "")))
    except QuanyiError as exc:
        return await _distributors_page(reason(exc), status_of(exc), values=values)
    return await _invited(invite, parent)


async def _invited(invite: InviteView, parent: str) -> Any:
    link = _start_link(invite.start)
    html, status, headers = await page("console/distributor_invited.html", invite=invite, link=link, parent=parent)
    return html, status, {**headers, "Cache-Control": "no-store"}


@blueprint.post("/distributors/rates")
@guard(Area.DISTRIBUTORS, write=True)
async def commission_rate() -> Any:
    form = await request.form
    try:
        level = whole(form, "level", least=1)
        await core().books.set_commission_rate(level, parse_rate(required(form, "rate")))
    except BadForm as exc:
        return await _distributors_page(exc.text(), 400)
    except QuanyiError as exc:
        return await _distributors_page(reason(exc), status_of(exc))
    return redirect(url_for("console.distributors", done="rate_set"), 303)


@blueprint.post("/distributors/cost-prices")
@guard(Area.DISTRIBUTORS, write=True)
async def cost_price() -> Any:
    form = await request.form
    back = field(form, "back")  # a distributor's page posts its own reference
    try:
        sku = required(form, "sku")
        price = None if checked(form, "remove") else required(form, "price")
        tier, who = field(form, "tier") or None, field(form, "distributor") or None
        if (tier is None) == (who is None):
            raise BadForm("tier_or_distributor")
        await core().distributors.set_cost_price(sku, price, tier=tier, distributor=who)
    except BadForm as exc:
        return await (_card_page(back, exc.text(), 400) if back else _distributors_page(exc.text(), 400))
    except QuanyiError as exc:
        text = reason(exc)
        return await (_card_page(back, text, status_of(exc)) if back else _distributors_page(text, status_of(exc)))
    done = "cost_removed" if price is None else "cost_set"
    if back:
        return redirect(url_for("console.distributor", ref=back, done=done), 303)
    return redirect(url_for("console.distributors", done=done), 303)


@blueprint.get("/distributors/commissions")
@guard(Area.DISTRIBUTORS)
async def commissions() -> Any:
    status = request.args.get("status", "").strip() or None
    if status not in COMMISSION_STATUSES:
        status = None
    who = request.args.get("distributor", "").strip() or None
    number = request.args.get("page", "1").strip()
    try:
        found = await core().distributors.commission_page(
            status=status, distributor=who, page=min(int(number), 100_000) if number.isdigit() else 1, per_page=PER_PAGE
        )
    except QuanyiError as exc:
        return await _distributors_page(reason(exc), status_of(exc))
    return await page(
        "console/distributor_commissions.html",
        found=found,
        statuses=COMMISSION_STATUSES,
        who=who or "",
        format_rate=format_rate,
    )


@blueprint.get("/distributors/<ref>")
@guard(Area.DISTRIBUTORS)
async def distributor(ref: str) -> Any:
    return await _card_page(ref)


async def _card_page(ref: str, error: str = "", status: int = 200) -> Any:
    try:
        card = await core().distributors.card(ref)
    except QuanyiError as exc:
        return await _distributors_page(reason(exc), status_of(exc))
    return await page(
        "console/distributor.html",
        status=status,
        card=card,
        ref=str(card.distributor.user_id),
        referral=_start_link(card.distributor.referral_start) or card.distributor.referral_start,
        products=await core().catalog.product_list(),
        error=error,
        notice=done_notice(),
    )


@blueprint.post("/distributors/<ref>/balance")
@guard(Area.DISTRIBUTORS, write=True)
async def distributor_balance(ref: str) -> Any:
    form = await request.form
    try:
        direction = field(form, "direction")
        if direction not in ("credit", "debit"):
            raise BadForm("choice", field=direction)
        amount, note = required(form, "amount"), field(form, "note")
        if direction == "debit" and not note:
            raise BadForm("debit_note")
        change = core().distributors.credit if direction == "credit" else core().distributors.debit
        await change(ref, amount, actor=me().actor, note=note)
    except BadForm as exc:
        return await _card_page(ref, exc.text(), 400)
    except QuanyiError as exc:
        return await _card_page(ref, reason(exc), status_of(exc))
    return redirect(url_for("console.distributor", ref=ref, done=f"{direction}ed"), 303)


@blueprint.post("/distributors/<ref>/update")
@guard(Area.DISTRIBUTORS, write=True)
async def distributor_update(ref: str) -> Any:
    form = await request.form
    try:
        state = field(form, "active")
        if state not in ("", "active", "inactive"):
            raise BadForm("choice", field=state)
        tier = field(form, "tier") or None
        limit = optional_whole(form, "invite_limit")
        active = None if not state else state == "active"
        if tier is None and limit is None and active is None:
            raise BadForm("nothing")
        await core().distributors.update(ref, tier=tier, invite_limit=limit, active=active)
    except BadForm as exc:
        return await _card_page(ref, exc.text(), 400)
    except QuanyiError as exc:
        return await _card_page(ref, reason(exc), status_of(exc))
    return redirect(url_for("console.distributor", ref=ref, done="updated"), 303)


def _start_link(start: str) -> str:
    """The t.me deep link for a /start parameter ("" when the bot's username is not set)."""
    bot = core().settings.bot_username.strip().lstrip("@")
    return f"https://t.me/{bot}?start={start}" if bot else ""
