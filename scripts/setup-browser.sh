#!/usr/bin/env bash
# Install what the dashboard's browser tests drive: Debian's headless Chromium and
# its WebDriver (tests/dashboard/test_browser.py). Needs root (CI runs as root);
# elsewhere it says what to run and those tests skip.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "setup-browser: not root; for the browser tests run: sudo apt-get install chromium chromium-driver" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
