"""Bringing a database up to date: the schema, the default risk rules, the keys, the first audit anchor.

One use case (``quanyi db upgrade``) that owns its database handle; the command line only renders
what it reports.
"""

from __future__ import annotations

from dataclasses import dataclass

from quanyi.core.platform.audit_chain import Chain, VerifyReport, anchor_first
from quanyi.core.platform.config import Settings
from quanyi.core.platform.db import Database
from quanyi.core.platform.keycheck import KeysReady, init_keys
from quanyi.core.platform.migrate import upgrade
from quanyi.core.risk import rules as risk


@dataclass(frozen=True)
class Prepared:
    keys: KeysReady
    # The audit chain found never anchored: verified (and, intact, anchored); None = nothing to do.
    first_anchor: VerifyReport | None


async def prepare_database(settings: Settings) -> Prepared:
    """Migrate to the code's schema, add the default risk rules (edits stay), make the keys of a new
    database or check the configured ones against an existing one, and anchor a chain never anchored."""
    db = Database(settings.resolved_database_url)
    try:
        await upgrade(db.engine)
        async with db.transaction() as session:
            await risk.ensure_defaults(session)
        keys = await init_keys(settings, db)
        db.audit_chain = Chain(keys.keyring.audit_key)
        first = await anchor_first(db, settings.data_dir, settings.admin_id_list)
    finally:
        await db.dispose()
    return Prepared(keys, first)
