"""``quanyi supplier-sim``: a recharge supplier simulator for the demo."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from quanyi.cli._common import load_settings


def cmd_supplier_sim(args: argparse.Namespace) -> int:
    import signal

    from quanyi.core.suppliers.sim import DEFAULT_SECRET, SimOptions, SupplierSim

    configured = load_settings().supplier_generic_secret
    options = SimOptions(
        secret=args.secret or configured or DEFAULT_SECRET,
        fail_rate=args.fail_rate,
        timeout_rate=args.timeout_rate,
        hang_seconds=args.hang_seconds,
        complete_after=args.complete_after,
        callback_delay=args.callback_delay,
        duplicate_callbacks=args.duplicate_callbacks,
        out_of_order=args.out_of_order,
        callbacks=not args.no_callbacks,
        seed=args.seed,
    )
    logging.getLogger("quanyi.supplier_sim").setLevel(logging.INFO)

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with SupplierSim(options, host=args.host, port=args.port) as sim:
            print(f"supplier simulator listening on {sim.base_url} (seed {sim.seed})", flush=True)
            if args.secret or configured:
                print(f"point quanyi at it: QUANYI_SUPPLIER_GENERIC_URL={sim.base_url}", flush=True)
            else:
                print(
                    f"point quanyi at it: QUANYI_SUPPLIER_GENERIC_URL={sim.base_url} "
                    f"QUANYI_SUPPLIER_GENERIC_SECRET={DEFAULT_SECRET}",
                    flush=True,
                )
            await stop.wait()
        print("supplier simulator stopped", flush=True)
        return 0

    return asyncio.run(run())


def add_parser(sub: Any) -> None:
    sim = sub.add_parser(
        "supplier-sim",
        help="run a recharge supplier simulator (generic signed JSON protocol) for the demo",
        description="Serves POST /orders and GET /orders/<number> as docs/suppliers.md specifies and posts "
        "signed callbacks to each order's callback_url. The secret is --secret, else "
        "QUANYI_SUPPLIER_GENERIC_SECRET, else a fixed demo secret. Stop it with Ctrl-C.",
    )
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8090)
    sim.add_argument("--secret", help="HMAC secret shared with quanyi")
    sim.add_argument("--fail-rate", type=float, default=0.0, help="share of orders that fail, 0 to 1 (e.g. 0.2)")
    sim.add_argument(
        "--timeout-rate", type=float, default=0.0, help="share of requests answered only after --hang-seconds"
    )
    sim.add_argument("--hang-seconds", type=float, default=60.0, help="how long a timed-out request hangs")
    sim.add_argument("--complete-after", type=float, default=1.0, help="seconds from accepting an order to its outcome")
    sim.add_argument("--callback-delay", type=float, default=0.0, help="seconds from the outcome to its callback")
    sim.add_argument("--duplicate-callbacks", action="store_true", help="send every final callback twice")
    sim.add_argument(
        "--out-of-order", action="store_true", help="after the final callback, send a stale processing one"
    )
    sim.add_argument("--no-callbacks", action="store_true", help="never call back (quanyi must query)")
    sim.add_argument("--seed", type=int, help="make the failures and timeouts repeatable")
    sim.set_defaults(fn=cmd_supplier_sim)
