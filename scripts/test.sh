#!/usr/bin/env bash
# The test command: sets up .venv (and Debian's chromium for the browser test), then runs ruff, mypy
# and pytest. Extra arguments go to pytest, e.g. `scripts/test.sh tests/test_params.py -x`.
set -euo pipefail
BOOTSTRAP_EXTRAS=dev
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"

if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "Installing Debian's chromium for the browser test ..."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

export PYTHONDONTWRITEBYTECODE=1
# torch's idle OpenMP threads spin by default; on 2 cores that starves the event loop of the tests' bots.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
echo "== ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
echo "== mypy (strict on imaginebot/)"
"$VENV/bin/mypy"
echo "== pytest"
# Two processes share the tests (pytest-xdist; a module's tests stay together, with its fixtures): much of
# the suite waits on bots, Ray workers and browsers rather than computes, and CI has two cores.
# IMAGINEBOT_TEST_WORKERS=0 runs them in this process, one after the other; "auto" uses every core.
WORKERS="${IMAGINEBOT_TEST_WORKERS:-2}"
XDIST=()
if [ "$WORKERS" != 0 ]; then
    XDIST=(-n "$WORKERS" --dist loadscope)
fi
set +e
"$PY" -m pytest "${XDIST[@]}" "$@"
status=$?
set -e
if [ "$status" = 5 ]; then
    echo "pytest collected no tests: that is a failure here." >&2
fi
exit "$status"
