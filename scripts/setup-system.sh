#!/usr/bin/env bash
# Install the system packages the tests use besides the browser: Debian's OpenSSH
# server and client and rsync (tests/autoscaler/test_autoscaler_ssh.py runs a real
# sshd on 127.0.0.1). Needs root (CI runs as root); elsewhere it says what to run
# and those tests skip.
set -euo pipefail
if [ -x /usr/sbin/sshd ] && command -v ssh >/dev/null && command -v rsync >/dev/null; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "setup-system: not root; for the ssh provider tests run: sudo apt-get install openssh-server openssh-client rsync" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends openssh-server openssh-client rsync >/dev/null
