#!/usr/bin/env bash
# Install quanyi into .venv and start it on SQLite (./data) with the demo catalogue and
# the sandbox payment method. Set QUANYI_BOT_TOKEN (in the environment or .env) to
# also start the Telegram bot; without it the HTTP server and scheduler run alone.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
bash scripts/fonts.sh  # Chinese chart labels: a font, when none is installed
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
export QUANYI_SANDBOX_PAY=${QUANYI_SANDBOX_PAY:-1}
# Direct recharges go to the bundled supplier simulator unless a real supplier is configured.
if [ -z "${QUANYI_SUPPLIER_GENERIC_URL:-}" ]; then
  SIM_PORT=${QUANYI_DEMO_SUPPLIER_PORT:-8099}
  export QUANYI_SUPPLIER_GENERIC_URL="http://127.0.0.1:${SIM_PORT}"
  export QUANYI_SUPPLIER_GENERIC_SECRET=${QUANYI_SUPPLIER_GENERIC_SECRET:-quanyi-demo-supplier-secret}
  .venv/bin/quanyi supplier-sim --port "$SIM_PORT" --secret "$QUANYI_SUPPLIER_GENERIC_SECRET" --fail-rate 0.1 &
  SIM_PID=$!
  trap 'kill $SIM_PID 2>/dev/null || true' EXIT
fi
.venv/bin/quanyi db upgrade
.venv/bin/quanyi demo
.venv/bin/quanyi stock show
# The web console (/admin): a one-time sign-in link for the first owner (QUANYI_ADMIN_IDS), or for
# a demo owner (Telegram id 100000) when none is set. Valid 5 minutes, one use.
OWNER=$(.venv/bin/quanyi admin list | awk 'NR > 2 && $3 == "owner" { print $1; exit }')
if [ -z "$OWNER" ]; then
  OWNER=100000
  .venv/bin/quanyi admin add "$OWNER" --role owner >/dev/null
fi
echo "web console sign-in: $(.venv/bin/quanyi admin login-link --user "$OWNER" | head -n1)"
echo "  (one use, 5 minutes; another: .venv/bin/quanyi admin login-link --user $OWNER)"
# Not exec: the trap above stops the supplier simulator when quanyi stops.
.venv/bin/quanyi serve
