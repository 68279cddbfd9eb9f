"""Staff use cases: roles (add, list, remove), one-time sign-in links, console sessions, and the
checks every door makes before it lets a person act ("may this person read or change that").

Each method takes plain values, opens and commits its own transaction and returns plain values
or frozen dataclasses. Roles are read through a cache of a few seconds, because the chat asks on
every operator message; a change made here is seen at once, one made by another process within
``ROLE_CACHE_SECONDS``."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select

from quanyi.core.errors import Forbidden
from quanyi.core.models import StaffMember, User
from quanyi.core.money import format_minor
from quanyi.core.platform import audit
from quanyi.core.staff import accounts, widget
from quanyi.core.staff.roles import Area, Role, may
from quanyi.core.staff.views import Member, SessionView, Signed

if TYPE_CHECKING:
    from quanyi.core.wiring import Wiring

ROLE_CACHE_SECONDS = 5.0
CONSOLE = "console"


class StaffService:
    def __init__(self, wiring: Wiring) -> None:
        self._wiring = wiring
        self._db = wiring.db
        self._roles: dict[int, tuple[Role, int]] = {}
        self._roles_read_at = float("-inf")

    # --- who is who --------------------------------------------------------------------------

    @property
    def _owners(self) -> list[int]:
        return self._wiring.settings.admin_id_list

    async def _table(self) -> dict[int, tuple[Role, int]]:
        if time.monotonic() - self._roles_read_at > ROLE_CACHE_SECONDS:
            async with self._db.read() as session:
                rows = (await session.execute(select(StaffMember))).scalars().all()
            self._roles = {row.user_id: (Role(row.role), row.refund_limit) for row in rows}
            self._roles_read_at = time.monotonic()
        return self._roles

    def _forget(self) -> None:
        self._roles_read_at = float("-inf")

    async def role_of(self, user_id: int) -> Role | None:
        """The person's role: owner for ``QUANYI_ADMIN_IDS``, else their row's, else None."""
        if user_id in self._owners:
            return Role.OWNER
        found = (await self._table()).get(user_id)
        return found[0] if found else None

    async def may(self, user_id: int, area: Area | str, *, write: bool = False) -> bool:
        return may(await self.role_of(user_id), area, write=write)

    async def is_staff(self, user_id: int) -> bool:
        return await self.role_of(user_id) is not None

    async def require(self, user_id: int, area: Area | str, *, write: bool = False) -> Role:
        """The person's role when it may read (or change) ``area``; ``Forbidden`` otherwise."""
        role = await self.role_of(user_id)
        if not may(role, area, write=write):
            what = "change" if write else "see"
            raise Forbidden(
                f"your role ({role.value if role else 'none'}) may not {what} {Area(area).value}",
                key="err_staff.forbidden",
                role=role.value if role else "-",
                area=Area(area).value,
            )
        assert role is not None
        return role

    async def require_refund(self, user_id: int, amount: int) -> None:
        """A refund of ``amount`` (minor units) by this person: support staff up to the limit the
        owner set for them, owners and operators any amount; ``Forbidden`` otherwise."""
        role = await self.require(user_id, Area.ORDERS, write=True)
        if role is not Role.SUPPORT:
            return
        limit = (await self._table()).get(user_id, (role, 0))[1]
        if amount > limit:
            currency = self._wiring.settings.currency
            shown, most = format_minor(amount, currency), format_minor(limit, currency)
            raise Forbidden(
                f"a refund of {shown} is over your limit of {most}",
                key="err_staff.over_refund_limit",
                amount=shown,
                limit=most,
            )

    async def require_order_refund(self, user_id: int, number: str, line_no: int | None = None) -> None:
        """``require_refund`` for refunding an order, or one line of it: the amount is read off
        the order (``NotFound`` for an unknown order or line)."""
        from quanyi.core.errors import NotFound
        from quanyi.core.sales import order_lookup

        async with self._db.read() as session:
            sheet = await order_lookup.order_sheet(session, number)
        amount = sheet.amount
        if line_no:
            line = next((line for line in sheet.lines if line.line_no == line_no), None)
            if line is None:
                raise NotFound(f"order {number} has no line {line_no}", key="err_staff.no_line", line=line_no)
            amount = line.amount
        await self.require_refund(user_id, amount)

    async def require_payment_refund(self, user_id: int, payment_id: int) -> None:
        """``require_refund`` for refunding a payment kept for review."""
        from quanyi.core.models import Payment

        async with self._db.read() as session:
            payment = await session.get(Payment, payment_id)
        await self.require_refund(user_id, payment.amount if payment is not None else 0)

    async def members(self) -> list[Member]:
        async with self._db.read() as session:
            rows = (await session.execute(select(StaffMember).order_by(StaffMember.added_at))).scalars().all()
            ids = [*self._owners, *(row.user_id for row in rows)]
            names = dict((await session.execute(select(User.id, User.username).where(User.id.in_(ids)))).all())
        owners = [Member(uid, Role.OWNER, 0, "QUANYI_ADMIN_IDS", None, True, names.get(uid)) for uid in self._owners]
        return owners + [
            Member(r.user_id, Role(r.role), r.refund_limit, r.added_by, r.added_at, False, names.get(r.user_id))
            for r in rows
            if r.user_id not in self._owners
        ]

    async def add(self, user_id: int, role: Role, *, refund_limit: int = 0, actor: str, front: str) -> bool:
        """Give a person a role (or change it); True when they are new to the staff. Owners of
        ``QUANYI_ADMIN_IDS`` are refused (``AlreadyExists``): that setting is theirs."""
        accounts.refuse_owner_row(user_id, self._owners)
        with audit.acting(actor, front):
            async with self._db.transaction() as session:
                added = await accounts.add(session, user_id, role, refund_limit, actor)
        self._forget()
        return added

    async def remove(self, user_id: int, *, actor: str, front: str) -> int:
        """Take a person off the staff and end their sessions (how many). ``NotFound``."""
        accounts.refuse_owner_row(user_id, self._owners)
        with audit.acting(actor, front):
            async with self._db.transaction() as session:
                ended = await accounts.remove(session, user_id, actor)
        self._forget()
        return ended

    # --- signing in ------------------------------------------------------------------------------

    def _lifetimes(self) -> accounts.Lifetimes:
        settings = self._wiring.settings
        return accounts.Lifetimes(
            link=timedelta(minutes=settings.login_link_minutes),
            idle=timedelta(minutes=settings.console_idle_minutes),
            session=timedelta(hours=settings.console_session_hours),
        )

    def login_url(self, token: str, *, path: str = "/admin/login") -> str:
        """The link to send: the token rides in the fragment, which browsers never send to a
        server, so it stays out of access logs and proxies; the page posts it."""
        return f"{self._wiring.settings.public_url.rstrip('/')}{path}#t={token}"

    async def login_link(self, user_id: int, *, actor: str, front: str) -> str:
        """A one-time sign-in link for a staff member (``Forbidden`` for anyone else)."""
        if not await self.is_staff(user_id):
            raise Forbidden(f"{user_id} has no back-office role", key="err_staff.not_staff", user_id=user_id)
        async with self._db.transaction() as session:
            token = await accounts.issue_link(session, user_id, CONSOLE, self._lifetimes().link)
            await audit.record(
                session, actor=actor, front=front, action="issue login link", object_type="staff", object_id=user_id
            )
        return self.login_url(token)

    async def sign_in(self, token: str, *, client: str) -> tuple[str, Signed]:
        """Spend a sign-in link: a new session token (for the cookie) and who it is. The link's
        errors (``SignInRefused``, ``NotFound``) and ``Forbidden`` when the
        person lost their role since."""
        async with self._db.transaction() as session:
            user_id = await accounts.use_link(session, token, CONSOLE)
        return await self._open(user_id, via="link", client=client)

    async def sign_in_telegram(self, fields: Mapping[str, str], *, client: str) -> tuple[str, Signed]:
        """The Telegram Login Widget's signed answer: a session for a staff member."""
        user_id = widget.signed_user(fields, self._wiring.settings.bot_token)
        return await self._open(user_id, via="telegram", client=client)

    async def _open(self, user_id: int, *, via: str, client: str) -> tuple[str, Signed]:
        role = await self.role_of(user_id)
        if role is None:
            raise Forbidden(f"{user_id} has no back-office role", key="err_staff.not_staff", user_id=user_id)
        lifetimes = self._lifetimes()
        async with self._db.transaction() as session:
            token = await accounts.open_session(
                session, user_id, purpose=CONSOLE, via=via, client=client, lifetime=lifetimes.session
            )
            await audit.record(
                session,
                actor=f"operator:{user_id}",
                front="web",
                action="sign in",
                object_type="staff",
                object_id=user_id,
                new={"via": via},
            )
        signed = await self.signed(token)
        assert signed is not None
        return token, signed

    async def signed(self, token: str) -> Signed | None:
        """Who is behind a session cookie, while the session lives and the person has a role."""
        if not token:
            return None
        async with self._db.transaction() as session:
            row = await accounts.live_session(session, token, CONSOLE, self._lifetimes().idle)
            if row is None:
                return None
            session_id, user_id = row.id, row.user_id
        role = await self.role_of(user_id)
        if role is None:
            return None
        limit = (await self._table()).get(user_id, (role, 0))[1]
        return Signed(session_id, user_id, role, limit, csrf_token(token))

    async def sign_out(self, token: str) -> bool:
        signed = await self.signed(token)
        async with self._db.transaction() as session:
            ended = await accounts.end_session(session, token, signed.actor if signed else "-")
            if ended and signed is not None:
                await audit.record(
                    session,
                    actor=signed.actor,
                    front="web",
                    action="sign out",
                    object_type="staff",
                    object_id=signed.user_id,
                )
        return ended

    async def sessions(self, user_id: int | None = None) -> list[SessionView]:
        async with self._db.read() as session:
            rows = await accounts.open_sessions(session, self._lifetimes().idle, user_id)
        return [SessionView(r.id, r.user_id, r.via, r.client, r.created_at, r.last_seen_at, r.expires_at) for r in rows]

    async def logout_all(self, user_id: int | None = None, *, actor: str, front: str) -> int:
        """End every open console session (one person's, or everyone's); how many."""
        with audit.acting(actor, front):
            async with self._db.transaction() as session:
                return await accounts.end_sessions(
                    session, user_id, actor, purpose=CONSOLE, idle=self._lifetimes().idle
                )


def csrf_token(session_token: str) -> str:
    """The CSRF token of a session: derived from its secret token, so it needs no storage and no
    page can compute it without the cookie it cannot read."""
    return hashlib.sha256(b"quanyi-csrf:" + session_token.encode()).hexdigest()[:40]
