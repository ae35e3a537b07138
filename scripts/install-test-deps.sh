#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh machine (Python 3.11 + pip):
# the Python packages of requirements-dev.txt and Debian's chromium + chromium-driver for the browser
# tests (Playwright drives /usr/bin/chromium; it never downloads a browser).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq || true
    $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "warning: apt-get not found; install chromium yourself or the browser tests will be skipped" >&2
  fi
fi

python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
