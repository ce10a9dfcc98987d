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
set +e
"$PY" -m pytest "$@"
status=$?
set -e
if [ "$status" = 5 ]; then
    echo "pytest collected no tests: that is a failure here." >&2
fi
exit "$status"
