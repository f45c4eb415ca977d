#!/usr/bin/env bash
# Set up (once) and run pvae. Usage:
#   ./run.sh train [pvae train flags]     train the default VAE on MNIST (the main job)
#   ./run.sh test  [pytest args]          run the test suite
#   ./run.sh pvae  [any pvae command]     e.g. ./run.sh pvae evaluate runs/<run>
#   ./run.sh docs  [sphinx-build args]    build the documentation site into docs/_build/html, strictly:
#                                         any warning (a broken link, an unresolved reference, a docstring
#                                         that does not render) fails it. The notebooks in docs/tutorials/
#                                         are executed (they are committed without outputs), so they need
#                                         the data: export PVAE_DATA_DIR=<dir> on an offline machine (see
#                                         README.md). ./run.sh docs -D nb_execution_mode=off skips running them.
# Set-up: a private copy of uv in .tools/, the exact packages of uv.lock in .venv/, and Graphviz.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .tools/bin/uv ]; then
    python3 -m venv .tools
    .tools/bin/python -m pip install --quiet --disable-pip-version-check "uv==0.13.8"
fi
.tools/bin/uv sync --frozen --quiet
# Graphviz's dot renders `pvae graph`; without it pvae writes the DOT source and says how to render it.
if ! command -v dot >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "run.sh: installing Graphviz (Debian package graphviz) for pvae graph" >&2
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz; } >/dev/null 2>&1 \
            || echo "run.sh: could not install graphviz; pvae graph will write DOT source only" >&2
    else
        echo "run.sh: note: Graphviz is missing (sudo apt-get install graphviz); pvae graph will write DOT source only" >&2
    fi
fi
cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
    train) exec .venv/bin/pvae train "$@" ;;
    test) exec .venv/bin/python -m pytest "$@" ;;
    pvae) exec .venv/bin/pvae "$@" ;;
    docs) exec .venv/bin/python -m sphinx -E -W --keep-going -n -b html docs docs/_build/html "$@" ;;  # -E: fresh, so every build reports every warning
    *) echo "usage: ./run.sh train|test|pvae|docs [args...]" >&2; exit 2 ;;
esac
