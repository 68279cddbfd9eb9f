"""A stock file imported through the console's upload (``POST /admin/upload/stock/<sku>``) beside
``quanyi stock import`` of the same file, measured in the same run.

Both run on fresh SQLite databases in child processes. The console's server (the real Quart app
under Hypercorn, signed in as an owner) is warmed up with a small import first; then the big file
is streamed to it as the browser's script sends it (raw body, CSRF header) and its streamed
``progress DONE TOTAL`` lines are read as they come. Reported: lines per second of each, and the
peak resident memory each process grew by during the import, beside the file's size — the
upload is written to disk in chunks and the import streams the file, so the growth stays flat
however large the file.

    .venv/bin/python bench/console_import.py [--lines 1000000] [--format txt|csv]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import re
import resource
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUANYI = str(Path(sys.executable).with_name("quanyi"))
OWNER = 9000
PROGRESS = re.compile(rb"^progress (\d+) (\d+)$", re.MULTILINE)


def write_file(path: Path, lines: int, fmt: str) -> None:
    with path.open("w") as handle:
        if fmt == "csv":
            handle.write("serial,secret\n")
        for n in range(lines):
            serial, secret = f"S{n:09d}", secrets.token_hex(12)
            handle.write(f"{serial},{secret}\n" if fmt == "csv" else f"{serial} {secret}\n")


def peak_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# --- the server child ----------------------------------------------------------------------------


def serve(data_dir: str, port: int) -> None:
    """Run the console on ``port`` over ``data_dir``'s database; print how to sign in, then serve."""
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config
    from quart import jsonify

    from quanyi.core.platform.config import Settings
    from quanyi.core.services import build_core, open_checked
    from quanyi.webhooks import create_app

    async def run() -> None:
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None, data_dir=Path(data_dir), admin_ids=str(OWNER), public_url=f"http://127.0.0.1:{port}"
        )
        db, keyring = await open_checked(settings)
        core = build_core(settings, db=db, keyring=keyring)
        link = await core.staff.login_link(OWNER, actor="bench", front="cli")
        cookie, signed = await core.staff.sign_in(link.split("#t=", 1)[1], client="bench")
        app = create_app(core)

        @app.get("/bench/rss")
        async def rss() -> object:
            return jsonify({"peak_kb": peak_kb()})

        config = Config()
        config.bind = [f"127.0.0.1:{port}"]
        config.accesslog = None
        print(json.dumps({"cookie": cookie, "csrf": signed.csrf}), flush=True)
        await hypercorn_serve(app, config)  # type: ignore[arg-type]

    asyncio.run(run())


# --- the client ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def server_peak(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/bench/rss")
    return int(json.loads(conn.getresponse().read())["peak_kb"])


def upload(port: int, signed: dict[str, str], sku: str, path: Path) -> tuple[int, bytes, int]:
    """Stream ``path`` to the console; the number of progress lines read and the report."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3600)
    headers = {
        "Cookie": f"qy_console={signed['cookie']}",
        "X-CSRF-Token": signed["csrf"],
        "Content-Type": "application/octet-stream",
        "Accept-Language": "en",
        "Content-Length": str(path.stat().st_size),
    }
    with path.open("rb") as body:
        conn.request("POST", f"/admin/upload/stock/{sku}?filename={path.name}", body=body, headers=headers)
        answer = conn.getresponse()
        seen, tail = 0, b""
        while chunk := answer.read1(65536):
            tail = (tail + chunk)[-200_000:]
            seen += len(PROGRESS.findall(chunk))
    if answer.status != 200:
        raise SystemExit(f"upload answered {answer.status}: {tail[-500:]!r}")
    return seen, tail[tail.rfind(b"progress") :], answer.status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--format", choices=["txt", "csv"], default="txt")
    parser.add_argument("--serve", nargs=2, metavar=("DATA_DIR", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        stock = tmp / f"stock.{args.format}"
        write_file(stock, args.lines, args.format)
        warm = tmp / f"warm.{args.format}"
        write_file(warm, 6000, args.format)
        size_mb = stock.stat().st_size / 2**20

        def quanyi(data: Path, *cmd: str) -> subprocess.CompletedProcess[str]:
            env = {**os.environ, "QUANYI_DATA_DIR": str(data)}
            env.pop("QUANYI_DATABASE_URL", None)
            return subprocess.run([QUANYI, *cmd], env=env, check=True, capture_output=True, text=True)

        for data in (tmp / "cli", tmp / "web"):
            quanyi(data, "db", "upgrade")
            for sku in ("WARM", "BENCH"):
                quanyi(data, "product", "add", "--sku", sku, "--name", sku, "--kind", "card_key", "--price", "1.00")

        # The command line: a small import first sets the baseline peak, then the big one.
        quanyi(tmp / "cli", "stock", "import", "WARM", str(warm))
        cli_base = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        started = time.perf_counter()
        quanyi(tmp / "cli", "stock", "import", "BENCH", str(stock))
        cli_seconds = time.perf_counter() - started
        cli_growth = (resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss - cli_base) / 1024

        # The console: the same, through HTTP.
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(tmp / "web"), str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert server.stdout is not None
            signed = json.loads(server.stdout.readline())
            for _ in range(100):
                try:
                    server_peak(port)
                    break
                except OSError:
                    time.sleep(0.1)
            upload(port, signed, "WARM", warm)
            web_base = server_peak(port)
            started = time.perf_counter()
            seen, report, _ = upload(port, signed, "BENCH", stock)
            web_seconds = time.perf_counter() - started
            web_growth = (server_peak(port) - web_base) / 1024
        finally:
            server.terminate()
            server.wait(10)

        imported = re.search(rb"data-testid=\"imported\">([^<]+)<", report)
        print(f"console import bench: {args.lines:,} lines, {size_mb:.1f} MB {args.format}")
        print(f"  report: {imported.group(1).decode() if imported else report[-300:]!r}")
        print(f"  progress lines streamed to the browser: {seen}")
        print(f"{'':<34} {'lines/s':>10} {'seconds':>8} {'peak RSS growth':>16}")
        for name, seconds, growth in (
            ("quanyi stock import (CLI)", cli_seconds, cli_growth),
            ("console upload (HTTP, streamed)", web_seconds, web_growth),
        ):
            print(f"{name:<34} {args.lines / seconds:>10,.0f} {seconds:>8.1f} {growth:>13.1f} MB")
        print(
            f"  file size {size_mb:.1f} MB; growth / file size: CLI {cli_growth / size_mb:.1%}, "
            f"console {web_growth / size_mb:.1%}"
        )


if __name__ == "__main__":
    main()
