"""Readiness (``GET /readyz``): whether this process can take orders now, beyond being alive.

Ready means the database commits a write (a full disk or a read-only file answers reads but
takes no payment), the schema is at the code's head, and the keyring is the one the data was
written with. Reasons name the failing part, never a secret or a driver's message.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from quanyi.core.errors import ConfigError
from quanyi.core.platform.crypto import KeyRing
from quanyi.core.platform.db import Database
from quanyi.core.platform.keycheck import verify_keyring
from quanyi.core.platform.migrate import require_current

log = logging.getLogger(__name__)
TIMEOUT_SECONDS = 5.0
# alembic's own one-row table: present exactly when the schema is managed, and rewriting its row
# in place changes nothing while proving that a commit reaches the disk.
_WRITE_PROBE = text("UPDATE alembic_version SET version_num = version_num")


async def unready_reason(db: Database, keyring: KeyRing) -> str | None:
    """None when ready, else a short reason fit for a load balancer's log."""
    try:
        return await asyncio.wait_for(_check(db, keyring), TIMEOUT_SECONDS)
    except TimeoutError:
        return f"the database did not answer within {TIMEOUT_SECONDS:g} s"


async def _check(db: Database, keyring: KeyRing) -> str | None:
    try:
        await require_current(db.engine)
    except ConfigError as exc:
        return exc.message
    except (SQLAlchemyError, OSError) as exc:
        log.warning("readiness: database unreachable (%s)", type(exc).__name__)
        return "the database is unreachable"
    try:
        async with db.transaction() as session:
            await session.execute(_WRITE_PROBE)
    except (SQLAlchemyError, OSError) as exc:
        # The driver's text may quote SQL; the type is enough to tell a full disk from a lock.
        log.warning("readiness: the database refused a write (%s)", type(exc).__name__)
        return "the database refuses writes"
    try:
        await verify_keyring(db, keyring)
    except ConfigError as exc:
        return exc.message  # names the key id, never the key
    except (SQLAlchemyError, OSError) as exc:
        log.warning("readiness: key check failed on the database (%s)", type(exc).__name__)
        return "the key check could not read the database"
    return None
