#!/usr/bin/env bash
# Set everything up and run the main demo on the default backend.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
exec .venv/bin/python examples/quickstart.py "$@"
