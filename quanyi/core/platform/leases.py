"""Named leases in the database: one holder at a time (elects the scheduler leader)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError

from quanyi.core.models import Lease, utcnow
from quanyi.core.platform.db import Database, rowcount


async def acquire(db: Database, name: str, holder: str, ttl: timedelta) -> bool:
    """Take or renew the lease; True when ``holder`` holds it afterwards."""
    now = utcnow()
    async with db.transaction() as session:
        result = await session.execute(
            update(Lease)
            .where(Lease.name == name, or_(Lease.holder == holder, Lease.expires_at < now))
            .values(holder=holder, expires_at=now + ttl)
        )
        if rowcount(result):
            return True
        exists = await session.scalar(select(Lease.name).where(Lease.name == name))
        if exists is None:
            try:
                async with session.begin_nested():
                    session.add(Lease(name=name, holder=holder, expires_at=now + ttl))
            except IntegrityError:  # another process inserted it first
                return False
            return True
        return False


async def release(db: Database, name: str, holder: str) -> None:
    async with db.transaction() as session:
        await session.execute(
            update(Lease).where(Lease.name == name, Lease.holder == holder).values(expires_at=utcnow())
        )
