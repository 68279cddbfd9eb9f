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


def cli_import(data: Path, sku: str, path: Path) -> tuple[float, int]:
    """``quanyi stock import`` in a child process: seconds taken and the child's own peak RSS (KB)."""
    env = {**os.environ, "QUANYI_DATA_DIR": str(data)}
    env.pop("QUANYI_DATABASE_URL", None)
    started = time.perf_counter()
    child = subprocess.Popen(
        [QUANYI, "stock", "import", sku, str(path)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"quanyi stock import {sku} exited {child.returncode}")
    return time.perf_counter() - started, usage.ru_maxrss


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
        # A small warm-up file, a fifth of the file, and the file: the peak grows by the same for
        # the fifth and for the whole when memory does not follow the file's size.
        files = {}
        for name, lines in (("WARM", 6000), ("FIFTH", args.lines // 5), ("BENCH", args.lines)):
            files[name] = tmp / f"{name.lower()}.{args.format}"
            write_file(files[name], lines, args.format)
        size_mb = files["BENCH"].stat().st_size / 2**20
        fifth_mb = files["FIFTH"].stat().st_size / 2**20

        for data in (tmp / "cli", tmp / "web"):
            env = {**os.environ, "QUANYI_DATA_DIR": str(data)}
            env.pop("QUANYI_DATABASE_URL", None)
            subprocess.run([QUANYI, "db", "upgrade"], env=env, check=True, capture_output=True)
            for sku in files:
                subprocess.run(
                    [QUANYI, "product", "add", "--sku", sku, "--name", sku, "--kind", "card_key", "--price", "1.00"],
                    env=env,
                    check=True,
                    capture_output=True,
                )

        # The command line: each import its own process; growth = its peak over the warm-up's.
        cli: dict[str, tuple[float, int]] = {name: cli_import(tmp / "cli", name, path) for name, path in files.items()}

        # The console: one server process, the same three files one after the other.
        web: dict[str, tuple[float, int]] = {}
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
            for name, path in files.items():
                started = time.perf_counter()
                seen, report, _ = upload(port, signed, name, path)
                web[name] = (time.perf_counter() - started, server_peak(port))
        finally:
            server.terminate()
            server.wait(10)

        imported = re.search(rb"data-testid=\"imported\">([^<]+)<", report)
        print(f"console import bench: {args.lines:,} lines, {size_mb:.1f} MB {args.format}, a fifth {fifth_mb:.1f} MB")
        print(f"  console report: {imported.group(1).decode() if imported else report[-300:]!r}")
        print(f"  progress lines streamed back for the big file: {seen}")
        print(f"{'':<34} {'lines/s':>9} {'seconds':>8}   peak RSS growth over a 6,000-line import")
        print(f"{'':<34} {'':>9} {'':>8}   {'a fifth':>10} {'the file':>10}")
        for label, runs in (("quanyi stock import (CLI)", cli), ("console upload (HTTP, streamed)", web)):
            seconds, _ = runs["BENCH"]
            base = runs["WARM"][1]
            grow = [(runs[name][1] - base) / 1024 for name in ("FIFTH", "BENCH")]
            print(f"{label:<34} {args.lines / seconds:>9,.0f} {seconds:>8.1f}   {grow[0]:>7.1f} MB {grow[1]:>7.1f} MB")
        print(f"  the file is {size_mb / fifth_mb:.0f}x the fifth; memory that followed it would grow {size_mb:.0f} MB")


if __name__ == "__main__":
    main()
