#!/bin/sh
# Make sure a headless Chromium is present for the report's browser test: Debian's `chromium`,
# installed with apt when it is missing and apt is usable. $ROBUSTLENS_CHROMIUM names another binary.
set -u
if [ -n "${ROBUSTLENS_CHROMIUM:-}" ]; then
    exit 0
fi
command -v chromium >/dev/null 2>&1 && exit 0
if command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi
    if [ "$SUDO" != none ]; then
        echo "Installing Debian's chromium (headless browser for the report test, about 300 MB)..."
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium >/dev/null 2>&1 \
            || { $SUDO apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium >/dev/null; }
        command -v chromium >/dev/null 2>&1 && exit 0
    fi
fi
cat >&2 <<MSG
chromium is missing, so the report's browser test will be skipped. Do one of:
  sudo apt-get install chromium                     (Debian/Ubuntu)
  export ROBUSTLENS_CHROMIUM=/path/to/chrome        (any Chromium or Chrome binary)
MSG
exit 0
