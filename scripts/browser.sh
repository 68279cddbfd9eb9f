#!/usr/bin/env bash
# Debian's Chromium for the web console's browser tests (Playwright drives /usr/bin/chromium; it
# never downloads a browser of its own). Installed with apt-get when missing.
set -euo pipefail
[ -x /usr/bin/chromium ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing Debian's chromium for the browser tests" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q chromium >/dev/null || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q chromium >/dev/null; }
[ -x /usr/bin/chromium ] || { echo "chromium could not be installed: the browser tests need /usr/bin/chromium" >&2; exit 1; }
