"""What a client of the local Discord needs to use it well: bot options, and a browser for its page.

Used by the tests (tests/conftest.py), the benchmarks and scripts/screenshot.py; nothing here imports pytest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# on_ready fires guild_ready_timeout after the last GUILD_CREATE (default 2 s); the local Discord sends its
# one guild at once, so a short wait loses nothing.
FAST_BOT_OPTIONS: dict[str, Any] = {"guild_ready_timeout": 0.05}

# Debian's chromium (apt-get install chromium): Playwright's own browser download can't run on machines
# without internet access.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",  # a closed network refuses those connections
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
