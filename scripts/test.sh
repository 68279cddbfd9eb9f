#!/usr/bin/env bash
# Install quanyi with its test and dev extras into .venv, check lint, format and types, and run the
# whole suite on SQLite and PostgreSQL (and the shared rate limits on Redis). PostgreSQL comes from
# QUANYI_TEST_DATABASE_URL (default: 127.0.0.1:5432, user root, database test); it is started here
# if it is installed but down, and the run fails, never skips, when it stays unreachable.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
bash scripts/fonts.sh  # Chinese chart labels: a font, when none is installed
bash scripts/browser.sh  # Debian's Chromium for the console's browser tests, when missing
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test,postgres,redis,dev]'

# The code's shape first (a minute): lint with the complexity limit, formatting, types.
.venv/bin/python -m ruff check quanyi tests bench
.venv/bin/python -m ruff format --check --quiet quanyi tests bench
.venv/bin/python -m mypy quanyi
.venv/bin/python -m mypy --strict quanyi/core  # the core is strictly typed

export QUANYI_TEST_DATABASE_URL=${QUANYI_TEST_DATABASE_URL:-postgresql+asyncpg://root@127.0.0.1:5432/test}
if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  fi
fi

# Redis (the shared rate limits' tests) likewise: started when installed but down; those tests
# fail, never skip, when it stays unreachable.
export QUANYI_TEST_REDIS_URL=${QUANYI_TEST_REDIS_URL:-redis://127.0.0.1:6379/15}
if command -v redis-cli >/dev/null && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  if command -v redis-server >/dev/null; then
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || true
    for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done
  fi
fi

# Tests run in parallel, one worker per core and one more (QUANYI_TEST_WORKERS=0 runs them in one
# process): much of a test's time is spent waiting on the fake Telegram, the database or a
# browser, so a third worker on two cores keeps them busy (12 min → 9 min here). Every test has
# its own SQLite file and its own PostgreSQL schema.
WORKERS=${QUANYI_TEST_WORKERS:-$(( $(nproc 2>/dev/null || echo 1) + 1 ))}
set +e
.venv/bin/python -m pytest -n "$WORKERS" "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$status"
