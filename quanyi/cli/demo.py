"""``quanyi demo``: load the demo catalogue with stock."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from quanyi.cli._common import with_core


def cmd_demo(args: argparse.Namespace) -> int:
    async def run(core: Any) -> int:
        added = await core.platform.load_demo()
        print("demo catalogue loaded: " + (", ".join(added) if added else "already present, nothing to add"))
        return 0

    return asyncio.run(with_core(run))


def add_parser(sub: Any) -> None:
    sub.add_parser("demo", help="load the demo catalogue with stock (idempotent)").set_defaults(fn=cmd_demo)
