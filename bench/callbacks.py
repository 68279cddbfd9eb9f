"""Callback latency under load: EPay notifies against a running `quanyi serve`.

Places N EPay orders, then C concurrent clients post their signed notifies (each one
twice: the gateway's retry) to the real HTTP server, and prints the latency
distribution beside the same server's GET /healthz under the same concurrency (the
ceiling of the HTTP stack). The contract is that a callback answers within 2 seconds
under load; the delivery work happens after commit, through the outbox.

    .venv/bin/python bench/callbacks.py [--orders 1000] [--clients 32] [--backend sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import secrets
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from quanyi.core.catalog.products import add_product  # noqa: E402
from quanyi.core.money import Money  # noqa: E402
from quanyi.core.platform.config import Settings  # noqa: E402
from quanyi.core.platform.db import Database  # noqa: E402
from quanyi.core.platform.keycheck import init_keys  # noqa: E402
from quanyi.core.platform.migrate import upgrade  # noqa: E402
from quanyi.core.sales.orders import Buyer, OrderRequest, checkout  # noqa: E402
from quanyi.core.services import build_core  # noqa: E402
from quanyi.core.stock.items import import_stock  # noqa: E402

KEY = "bench-" + secrets.token_hex(16)
PG_URL = os.environ.get("QUANYI_TEST_DATABASE_URL", "postgresql+asyncpg://root@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def notify(number: str, n: int) -> dict[str, str]:
    params = {
        "pid": "1001",
        "trade_no": f"BENCH{n:08d}",
        "out_trade_no": number,
        "type": "alipay",
        "name": "bench",
        "money": "1.00",
        "trade_status": "TRADE_SUCCESS",
    }
    text = "&".join(f"{k}={v}" for k, v in sorted(params.items())) + KEY
    return params | {"sign": hashlib.md5(text.encode()).hexdigest(), "sign_type": "MD5"}


async def load(url: str, requests: list[dict[str, str] | None], clients: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    queue = list(reversed(requests))

    async def client(session: aiohttp.ClientSession) -> None:
        while queue:
            form = queue.pop()
            started = time.perf_counter()
            if form is None:
                async with session.get(url) as response:
                    await response.read()
            else:
                async with session.post(url, data=form) as response:
                    body = await response.text()
                    assert body == "success", body
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return latencies, time.perf_counter() - started


def summary(name: str, latencies: list[float], elapsed: float) -> str:
    ordered = sorted(latencies)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return (
        f"{name:<22} {len(ordered) / elapsed:>8,.0f}/s  p50 {pick(0.5):6.1f} ms  p95 {pick(0.95):6.1f} ms  "
        f"p99 {pick(0.99):6.1f} ms  max {ordered[-1] * 1000:6.1f} ms"
    )


async def run(args: argparse.Namespace, tmp: Path) -> None:
    from quanyi.app import serve

    port = free_port()
    if args.backend == "postgresql":
        import asyncpg

        name = "bench_cb_" + uuid.uuid4().hex[:8]
        admin = await asyncpg.connect(PG_URL.replace("postgresql+asyncpg://", "postgresql://"))
        await admin.execute(f'CREATE DATABASE "{name}"')
        database_url = PG_URL.rpartition("/")[0] + "/" + name
    else:
        database_url = f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        data_dir=tmp,
        database_url=database_url,
        http_port=port,
        epay_gateway="http://127.0.0.1:9",
        epay_pid="1001",
        epay_key=KEY,
        log_level="WARNING",
    )
    try:
        db = Database(database_url)
        await upgrade(db.engine)
        await init_keys(settings, db)  # as `quanyi db upgrade` does for a new database
        await db.dispose()
        core = build_core(settings)
        async with core.db.transaction() as session:
            await add_product(session, sku="BENCH", name="bench", kind="card_key", price=Money.parse("1.00", "CNY"))
        stock = tmp / "stock.txt"
        stock.write_text("".join(f"CB-{n:08d}-{secrets.token_hex(6)}\n" for n in range(args.orders)))
        await import_stock(core.db, core.keyring, "BENCH", stock)
        numbers = []
        for n in range(args.orders):
            placed = await checkout(
                core.db,
                core.payments,
                OrderRequest(
                    buyer=Buyer(n + 1, n + 1, "zh"),
                    sku="BENCH",
                    quantity=1,
                    method="epay",
                    reservation=core.reservation,
                    max_quantity=1,
                ),
            )
            numbers.append(placed.order.number)
        await core.close()

        stop = asyncio.Event()
        server = asyncio.create_task(serve(settings, stop=stop))
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(f"{base}/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        ceiling, ceiling_time = await load(f"{base}/healthz", [None] * (2 * args.orders), args.clients)
        forms = [notify(number, n) for n, number in enumerate(numbers)]
        latencies, elapsed = await load(f"{base}/pay/epay/notify", forms + forms, args.clients)
        stop.set()
        await server
        print(
            f"callbacks: {args.orders} orders, each notified twice, {args.clients} concurrent clients, {args.backend}\n"
        )
        print(summary("GET /healthz (ceiling)", ceiling, ceiling_time))
        print(summary("POST /pay/epay/notify", latencies, elapsed))
        print(
            f"\nthroughput ratio {len(latencies) / elapsed / (len(ceiling) / ceiling_time):.1%}; "
            f"slowest callback {max(latencies):.2f} s (limit 2 s)"
        )
    finally:
        if args.backend == "postgresql":
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
