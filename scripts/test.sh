#!/usr/bin/env bash
# Runs the whole test suite against real agents and real sandboxes (as root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python -m pytest -q "$@"
