#!/usr/bin/env bash
# Create .venv (if needed) and install fedexec with the given extras (default: test).
# Usage: scripts/setup.sh [extras]      e.g. scripts/setup.sh test,dask
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-test}"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
case ",${extras}," in
    *,ml,*|*,train,*|*,all,*)  # torch first, pinned: the CPU build, never whatever "torch" resolves to
        .venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0" ;;
esac
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[${extras}]"
