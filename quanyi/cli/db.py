"""``quanyi db upgrade``: create or migrate the database to the latest schema."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from quanyi.cli._common import load_settings
from quanyi.core.platform.db import redacted_url


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from quanyi.core.platform.setup import prepare_database

    settings = load_settings()
    prepared = asyncio.run(prepare_database(settings))
    print(f"database is at the latest schema ({redacted_url(settings.resolved_database_url)})")
    if prepared.keys.created:
        print(f"created the encryption keys in {prepared.keys.source} (0600): back it up with the database")
    first = prepared.first_anchor
    if first is not None and first.ok:
        print(f"audit chain of {first.checked} records verified and anchored for the first time")
    elif first is not None:
        print(f"audit chain broken at record {first.first_bad_seq or '?'}: {first.problem}; not anchored")
    return 0


def add_parser(sub: Any) -> None:
    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="create or migrate the database to the latest schema").set_defaults(fn=cmd_db_upgrade)
