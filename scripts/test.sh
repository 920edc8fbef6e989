#!/usr/bin/env bash
# Set everything up, lint, and run the whole test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test,dask,spark,modin
.venv/bin/ruff check src integrations tests examples benchmarks
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
