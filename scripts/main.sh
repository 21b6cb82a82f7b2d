#!/usr/bin/env bash
# The main job: set up, then train a VAE on the built-in shapes dataset (extra arguments go to pyrovae train).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
.venv/bin/pyrovae train "$@"
