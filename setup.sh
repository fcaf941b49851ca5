#!/usr/bin/env bash
# Create ./.venv with everything fairsynth needs; a second run only checks (a few seconds).
# torch is pinned to the CPU build 2.13.0 and resolved together with the rest, so that no
# package pulls a CUDA build.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0" -e ".[test]"
