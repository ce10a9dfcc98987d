"""What a plain install (no dev extra) imports must work without the test tools."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# sys.modules[name] = None makes ``import name`` raise ImportError, as if it were not installed.
IMPORT_EVERYTHING = """
import importlib, pkgutil, sys
for name in ("pytest", "pytest_asyncio", "hypothesis", "playwright"):
    sys.modules[name] = None
import imaginebot, cogs
for package in (imaginebot, cogs):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(module.name)
import bot
print("ok")
"""


def test_every_module_imports_without_the_test_tools() -> None:
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
