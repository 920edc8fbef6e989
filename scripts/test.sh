#!/usr/bin/env bash
# Set everything up, lint, check imports and types, and run the whole test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test,dask,spark,modin,ml,dashboard,browser,autoscaler
bash scripts/setup-system.sh       # Chromium, chromedriver, sshd, ssh, rsync (browser and ssh tests)
.venv/bin/ruff check src integrations tests examples benchmarks
.venv/bin/lint-imports            # the import contracts in pyproject.toml
.venv/bin/mypy                    # strict for the core, normal elsewhere (pyproject.toml)
# Let Python cache compiled modules: with PYTHONDONTWRITEBYTECODE (set on some CI images)
# every node manager, worker pool and CLI the tests start recompiles fedexec first.
unset PYTHONDONTWRITEBYTECODE
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=30 "$@"
