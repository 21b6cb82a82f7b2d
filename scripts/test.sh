#!/usr/bin/env bash
# The tests: set up (.venv, and Chromium for the report's browser test), then run pytest
# (extra arguments go to pytest; slow tests: -m slow).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
if ! command -v chromium >/dev/null 2>&1; then
  echo "scripts/test.sh: installing Chromium (Debian's package 'chromium') for tests/test_report.py's browser test"
  if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo -n); fi
  if ! { "${sudo[@]}" apt-get update -q && \
         "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } >/tmp/pyrovae-chromium.log 2>&1; then
    echo "scripts/test.sh: could not install Chromium (see /tmp/pyrovae-chromium.log); the browser test will fail"
  fi
fi
.venv/bin/python -m pytest "$@"
