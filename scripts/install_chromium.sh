#!/usr/bin/env bash
# Install headless Chromium from Debian's packages, for the opt-in dashboard screenshot check:
#   scripts/install_chromium.sh && ./headroom test -m browser
# Needs root (or sudo). Does nothing when a chromium binary is already on PATH.
set -euo pipefail
for c in chromium chromium-browser; do
  if command -v "$c" >/dev/null 2>&1; then
    echo "chromium already installed: $(command -v "$c")"
    exit 0
  fi
done
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core
command -v chromium
