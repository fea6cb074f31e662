#!/usr/bin/env bash
# Chromium for the browser tests (web UI, docs site, JupyterLab chat), which Playwright drives:
# pip cannot install it and Playwright cannot download it here, so this takes Debian's package.
#
#   bash tools/install_browser.sh     # or: make browser (`make test` runs it first)
#
# Chromium at $CHROMIUM (default /usr/bin/chromium): nothing to do.
# Missing, as root with apt-get: installs Debian's `chromium`.
# Missing otherwise: stops with the exact command to run (or set CHROMIUM to another build).
set -euo pipefail
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
INSTALL="apt-get update && apt-get install -y chromium"

if [ -x "$CHROMIUM" ]; then
  echo "[browser] Chromium found: $CHROMIUM"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "[browser] no Chromium at $CHROMIUM, and the browser tests need it. Install it as root, then run this again:" >&2
  echo "    sudo sh -c '$INSTALL'" >&2
  echo "  or point CHROMIUM at another Chromium build: CHROMIUM=/path/to/chromium make test" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "[browser] no Chromium at $CHROMIUM and no apt-get: install Chromium with this system's package manager and set CHROMIUM to its path" >&2
  exit 1
fi
echo "[browser] no Chromium at $CHROMIUM: installing Debian's chromium ($INSTALL)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
if [ ! -x "$CHROMIUM" ]; then
  echo "[browser] apt-get installed chromium, but there is still nothing at $CHROMIUM: set CHROMIUM to its path" >&2
  exit 1
fi
echo "[browser] installed $("$CHROMIUM" --version 2>/dev/null || echo chromium)"
