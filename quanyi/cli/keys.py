"""``quanyi keys``: card-key encryption keys — which exist, what uses them, rotation. Never key material."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from quanyi.cli._common import load_settings, print_table
from quanyi.core.errors import InvalidInput


async def _with_db(fn: Any, *, check_keys: bool = True) -> int:
    """``fn(settings, db)`` on the database at the code's schema and, unless ``check_keys`` is off
    (``keys init`` makes them), with keys that match it: a rotation under a foreign key is refused."""
    from quanyi.core.platform.db import Database
    from quanyi.core.platform.migrate import require_current
    from quanyi.core.services import open_checked

    settings = load_settings()
    if check_keys:
        db, _ = await open_checked(settings)
    else:
        db = Database(settings.resolved_database_url)
    try:
        if not check_keys:
            await require_current(db.engine)
        return int(await fn(settings, db))
    finally:
        await db.dispose()


def cmd_keys_init(args: argparse.Namespace) -> int:
    from quanyi.core.platform.keycheck import init_keys

    async def run(settings: Any, db: Any) -> int:
        keys = await init_keys(settings, db, explicit=True)
        if keys.created:
            print(f"created the encryption keys in {keys.source} (0600): back it up with the database")
        else:
            print("keys come from the environment; their check values are recorded in the database")
        return 0

    return asyncio.run(_with_db(run, check_keys=False))


def cmd_keys_status(args: argparse.Namespace) -> int:
    from quanyi.core.platform.crypto import KeyRing
    from quanyi.core.platform.rotation import key_usage

    async def run(settings: Any, db: Any) -> int:
        keyring = KeyRing.load(settings)
        usage = await key_usage(db)
        source = "environment (QUANYI_CARD_KEYS)" if settings.card_keys or settings.lookup_key else "key file"
        print(f"keys from the {source}; active: {keyring.active}")
        rows = []
        for key_id in sorted({*keyring.enc_keys, *usage}):
            u = usage.get(key_id)
            state = "active" if key_id == keyring.active else ("loaded" if key_id in keyring.enc_keys else "MISSING")
            rows.append([key_id, state, u.card_keys if u else 0, u.links if u else 0, u.api_secrets if u else 0])
        print_table(["key id", "state", "card keys", "redemption links", "API secrets"], rows)
        if any(k != keyring.active and u.rows for k, u in usage.items()):
            print("rows still use an older key: run `quanyi keys rotate` to finish re-encrypting them")
        return 0

    return asyncio.run(_with_db(run))


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from quanyi.core.platform.rotation import rotate

    if args.batch < 1:
        raise InvalidInput("--batch must be at least 1")
    if args.max_batches is not None and args.max_batches < 1:
        raise InvalidInput("--max-batches must be at least 1")

    def progress(kind: str, done: int, total: int) -> None:
        print(f"re-encrypted {done:,} / {total:,} {kind}", flush=True)

    def start(added: str | None, active: str, pending: int) -> None:
        if added:
            print(f"added key {added} to the key file; it is active: new codes are encrypted with it")
            print(
                "a running `quanyi serve` reads the key file again on its next use of a card key; restart it to be sure"
            )
        elif pending:
            print(f"continuing the rotation to the active key {active}: {pending:,} rows to re-encrypt")
        else:
            print(f"nothing to re-encrypt: every row is under the active key {active}")

    async def run(settings: Any, db: Any) -> int:
        outcome = await rotate(
            db,
            settings,
            batch=args.batch,
            resume=args.resume,
            max_batches=args.max_batches,
            on_progress=progress,
            on_start=start,
        )
        report = outcome.report
        if report.skipped:
            print(f"{report.skipped:,} rows changed meanwhile and were left as they are; run this again to finish them")
        if not report.finished:
            print("stopped before the end; codes stay readable. Run `quanyi keys rotate --resume` to continue")
            return 0
        if outcome.from_env:
            if outcome.removable:
                print(
                    "no row uses these key ids any more; remove them from QUANYI_CARD_KEYS: "
                    + ", ".join(outcome.removable)
                )
        elif outcome.retired:
            print("retired keys no row uses any more (removed from the key file): " + ", ".join(outcome.retired))
        print(f"done: every card key and redemption link is encrypted with {report.active}")
        return 0

    return asyncio.run(_with_db(run))


def add_parser(sub: Any) -> None:
    keys = sub.add_parser("keys", help="card-key encryption keys").add_subparsers(dest="keys_command", required=True)
    keys.add_parser(
        "init",
        help="create the keys for a database that holds no encrypted data (db upgrade does this for a new one)",
        description="Writes a new keys.json (0600) in QUANYI_DATA_DIR and records its key-check values in the "
        "database. Refused when a key file exists or the database already holds encrypted data or key checks: "
        "restore the key file from your backup instead. With QUANYI_CARD_KEYS it only records their check values.",
    ).set_defaults(fn=cmd_keys_init)
    keys.add_parser("status", help="key ids, the active one and how many rows use each (never keys)").set_defaults(
        fn=cmd_keys_status
    )
    rot = keys.add_parser(
        "rotate",
        help="new active key, re-encrypt card keys and redemption links with it, retire unused keys",
        description="With the key file (keys.json in QUANYI_DATA_DIR): adds a new key and makes it active, "
        "re-encrypts every row under an older key in batches, each its own short transaction, then removes "
        "the keys no row uses. Interrupted, run it again: it finishes the rotation and adds no further key. "
        "Codes stay readable throughout. With QUANYI_CARD_KEYS: add the new key there and make it "
        "QUANYI_CARD_KEY_ACTIVE first; this re-encrypts and names the key ids you can then remove.",
    )
    rot.add_argument("--batch", type=int, default=500, metavar="N", help="rows per transaction (default 500)")
    rot.add_argument("--resume", action="store_true", help="only finish an unfinished rotation; never add a key")
    rot.add_argument("--max-batches", type=int, metavar="N", help="stop after N batches (continue later)")
    rot.set_defaults(fn=cmd_keys_rotate)
