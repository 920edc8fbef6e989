#!/usr/bin/env bash
# Install the Debian packages some tests drive, if any is missing: headless Chromium
# and its WebDriver (the dashboard's browser tests, tests/dashboard/test_dashboard_browser.py),
# OpenSSH server and client and rsync (the autoscaler's ssh provider tests run a real
# sshd on 127.0.0.1). Needs root (CI runs as root); elsewhere it says what to run and
# those tests skip.
set -euo pipefail
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh >/dev/null || missing+=(openssh-client)
command -v rsync >/dev/null || missing+=(rsync)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "setup-system: not root; for the browser and ssh tests run: sudo apt-get install ${missing[*]}" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
