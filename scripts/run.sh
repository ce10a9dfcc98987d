#!/usr/bin/env bash
# The run command: sets up .venv, then starts the bot. With no arguments it runs on the local Discord
# with the embedded model (`bot.py --mock`) and prints the page's URL; arguments go to bot.py, e.g.
# `scripts/run.sh --discord` for real Discord with the settings in .env.
set -euo pipefail
BOOTSTRAP_EXTRAS=""
# Workers on a Ray cluster (IMAGINEBOT_RAY_ADDRESS, in the environment or .env) need the [ray] extra.
ENV_FILE="$(dirname "${BASH_SOURCE[0]}")/../.env"
if [ -n "${IMAGINEBOT_RAY_ADDRESS:-}" ] ||
    { [ -f "$ENV_FILE" ] && grep -qE '^[[:space:]]*IMAGINEBOT_RAY_ADDRESS=[^[:space:]]' "$ENV_FILE"; }; then
    BOOTSTRAP_EXTRAS="ray"
fi
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
if [ "$#" = 0 ]; then
    set -- --mock
fi
exec "$PY" "$ROOT/bot.py" "$@"
