#!/usr/bin/env bash
# The tests: set up, then run pytest (extra arguments go to pytest; slow tests: -m slow).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest "$@"
