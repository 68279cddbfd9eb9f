"""``quanyi serve``: HTTP server, bot and scheduler in one process."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from quanyi.cli._common import load_settings


def cmd_serve(args: argparse.Namespace) -> int:
    from quanyi.app import serve

    return asyncio.run(serve(load_settings()))


def add_parser(sub: Any) -> None:
    sub.add_parser("serve", help="HTTP server + bot + scheduler in one process").set_defaults(fn=cmd_serve)
