"""``quanyi keys``: card-key encryption keys — which exist, what uses them, rotation. Never key material."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from quanyi.cli._common import load_settings, print_table, with_core
from quanyi.core.errors import InvalidInput


def cmd_keys_init(args: argparse.Namespace) -> int:
    from quanyi.core.platform.keycheck import init_keys_at

    # No core here: building one needs the keys this makes.
    keys = asyncio.run(init_keys_at(load_settings()))
    if keys.created:
        print(f"created the encryption keys in {keys.source} (0600): back it up with the database")
    else:
        print("keys come from the environment; their check values are recorded in the database")
    return 0


def cmd_keys_status(args: argparse.Namespace) -> int:
    async def run(core: Any) -> int:
        status = await core.platform.key_status()
        source = "environment (QUANYI_CARD_KEYS)" if status.from_env else "key file"
        print(f"keys from the {source}; active: {status.active}")
        print_table(
            ["key id", "state", "card keys", "redemption links", "API secrets"],
            [[k.key_id, k.state, k.card_keys, k.links, k.api_secrets] for k in status.keys],
        )
        if status.unfinished:
            print("rows still use an older key: run `quanyi keys rotate` to finish re-encrypting them")
        return 0

    return asyncio.run(with_core(run))


def cmd_keys_rotate(args: argparse.Namespace) -> int:
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

    async def run(core: Any) -> int:
        outcome = await core.platform.rotate_keys(
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

    return asyncio.run(with_core(run))


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
