#!/usr/bin/env bash
# Creates or reuses .venv and installs what imaginebot needs. Sourced by scripts/run.sh and scripts/test.sh;
# BOOTSTRAP_EXTRAS names the pyproject extra to install as well (test.sh: dev). Not "$1": a sourced script
# sees its caller's arguments when given none of its own.
#
# torch comes first, pinned, so that nothing later pulls the registry's newest build with several GB of
# CUDA packages: a local CPU wheel (pip's find-links) when the machine has one, else the CPU index on a
# machine without an NVIDIA GPU, else the regular (CUDA) build on a GPU box.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TORCH_VERSION="${IMAGINEBOT_TORCH_VERSION:-2.13.0}"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
EXTRAS="${BOOTSTRAP_EXTRAS:-}"

find_python() {
    for candidate in python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
    echo "imaginebot needs Python 3.11 or newer; none was found on PATH." >&2
    exit 1
}

if [ ! -x "$PY" ]; then
    echo "Creating the virtual environment in .venv ..."
    "$(find_python)" -m venv "$VENV"
fi
pip() { "$PY" -m pip --disable-pip-version-check "$@"; }

if ! "$PY" -c 'import torch' 2>/dev/null; then
    echo "Installing torch $TORCH_VERSION ..."
    if pip install -q --no-index --no-deps "torch==$TORCH_VERSION" 2>/dev/null; then
        pip install -q "torch==$TORCH_VERSION"  # the local wheel is in; this adds its dependencies
    elif ! command -v nvidia-smi >/dev/null &&
        pip install -q "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu 2>/dev/null; then
        :
    else
        pip install -q "torch==$TORCH_VERSION"
    fi
fi

# Reinstall the project only when its dependencies changed since the last install (an install with the
# dev extra also serves a plain run).
STAMP="$VENV/.imaginebot-installed"
HASH="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if ! grep -q "^$HASH ${EXTRAS}" "$STAMP" 2>/dev/null; then
    echo "Installing imaginebot${EXTRAS:+ [$EXTRAS]} and its dependencies ..."
    pip install -q -e ".${EXTRAS:+[$EXTRAS]}"
    echo "$HASH $EXTRAS" >>"$STAMP"
fi
