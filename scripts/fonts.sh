#!/usr/bin/env bash
# A font that draws Chinese, for the operators' charts (/report's PNGs): Debian's
# fonts-wqy-microhei (4 MB) when no Chinese font is installed and apt-get can run. Without one
# the charts are labelled in English and quanyi logs why; nothing else needs it.
if command -v fc-list >/dev/null && [ -n "$(fc-list :lang=zh 2>/dev/null | head -n1)" ]; then
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
if command -v apt-get >/dev/null; then
  if ! { $SUDO apt-get install -y -q --no-install-recommends fonts-wqy-microhei >/dev/null 2>&1 \
      || { $SUDO apt-get update -q >/dev/null 2>&1 \
        && $SUDO apt-get install -y -q --no-install-recommends fonts-wqy-microhei >/dev/null 2>&1; }; }; then
    echo "note: could not install fonts-wqy-microhei; charts will be labelled in English" >&2
  fi
else
  echo "note: no Chinese font found; install one (e.g. Noto Sans CJK) for Chinese chart labels" >&2
fi
exit 0
