"""What the staff pages and commands show: members with their roles, and open sessions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from quanyi.core.staff.roles import Role


@dataclass(frozen=True)
class Member:
    user_id: int
    role: Role
    refund_limit: int
    added_by: str
    added_at: datetime | None
    by_setting: bool  # an owner through QUANYI_ADMIN_IDS (no row; removed by changing the setting)
    username: str | None = None


@dataclass(frozen=True)
class SessionView:
    id: int
    user_id: int
    via: str
    client: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class Signed:
    """A live session: who it is, their role now, and the CSRF token every POST must carry."""

    session_id: int
    user_id: int
    role: Role
    refund_limit: int
    csrf: str

    @property
    def actor(self) -> str:
        return f"operator:{self.user_id}"
