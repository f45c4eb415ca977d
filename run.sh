#!/usr/bin/env bash
# Set up (once) and run pvae. Usage:
#   ./run.sh train [pvae train flags]     train the default VAE on MNIST (the main job)
#   ./run.sh test  [pytest args]          run the test suite
#   ./run.sh pvae  [any pvae command]     e.g. ./run.sh pvae evaluate runs/<run>
# Set-up: a private copy of uv in .tools/, then the exact packages of uv.lock in .venv/.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .tools/bin/uv ]; then
    python3 -m venv .tools
    .tools/bin/python -m pip install --quiet --disable-pip-version-check "uv==0.13.8"
fi
.tools/bin/uv sync --frozen --quiet
cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
    train) exec .venv/bin/pvae train "$@" ;;
    test) exec .venv/bin/python -m pytest "$@" ;;
    pvae) exec .venv/bin/pvae "$@" ;;
    *) echo "usage: ./run.sh train|test|pvae [args...]" >&2; exit 2 ;;
esac
