"""``quanyi db upgrade``: create or migrate the database to the latest schema."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from quanyi.cli._common import load_settings, redact_url


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from quanyi.core.audit_chain import Chain, anchor_first
    from quanyi.core.db import Database
    from quanyi.core.keycheck import init_keys
    from quanyi.core.migrate import upgrade

    async def run() -> int:
        settings = load_settings()
        db = Database(settings.resolved_database_url)
        try:
            await upgrade(db.engine)
            from quanyi.core import risk

            async with db.transaction() as session:
                await risk.ensure_defaults(session)  # the default risk rules, on; edits stay
            # Keys for a new database; an existing one must match the keys configured.
            keys = await init_keys(settings, db)
            db.audit_chain = Chain(keys.keyring.audit_key)
            first = await anchor_first(db, settings.data_dir, settings.admin_id_list)
        finally:
            await db.dispose()
        print(f"database is at the latest schema ({redact_url(settings.resolved_database_url)})")
        if keys.created:
            print(f"created the encryption keys in {keys.source} (0600): back it up with the database")
        if first is not None and first.ok:
            print(f"audit chain of {first.checked} records verified and anchored for the first time")
        elif first is not None:
            print(f"audit chain broken at record {first.first_bad_seq or '?'}: {first.problem}; not anchored")
        return 0

    return asyncio.run(run())


def add_parser(sub: Any) -> None:
    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="create or migrate the database to the latest schema").set_defaults(fn=cmd_db_upgrade)
