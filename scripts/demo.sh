#!/usr/bin/env bash
# Install quanyi into .venv and start it on SQLite (./data) with the demo catalogue and
# the sandbox payment method. Set QUANYI_BOT_TOKEN (in the environment or .env) to
# also start the Telegram bot; without it the HTTP server and scheduler run alone.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
export QUANYI_SANDBOX_PAY=${QUANYI_SANDBOX_PAY:-1}
.venv/bin/quanyi db upgrade
.venv/bin/quanyi demo
.venv/bin/quanyi stock show
exec .venv/bin/quanyi serve
