#!/usr/bin/env bash
# Set everything up, lint, check imports and types, and run the whole test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test,dask,spark,modin,ml,dashboard,browser,autoscaler
bash scripts/setup-browser.sh      # Chromium + chromedriver for the dashboard's browser tests
bash scripts/setup-system.sh       # sshd, ssh and rsync for the autoscaler's ssh provider tests
.venv/bin/ruff check src integrations tests examples benchmarks
.venv/bin/lint-imports            # the import contracts in pyproject.toml
.venv/bin/mypy                    # strict for the core, normal elsewhere (pyproject.toml)
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
