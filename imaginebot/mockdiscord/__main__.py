"""``python -m imaginebot.mockdiscord [--host 127.0.0.1] [--port 8765] [--no-rate-limits]``: serve the
local Discord alone, for a bot started separately with ``--discord-url`` and the printed token."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from .server import run_mock_discord


async def serve(host: str, port: int, rate_limits: bool) -> None:
    async with run_mock_discord(host=host, port=port, rate_limits=rate_limits) as server:
        print(f"local Discord at {server.url}  (page: {server.page_url})", flush=True)
        print(f"bot token: {server.bot_token}", flush=True)
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m imaginebot.mockdiscord", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1 only)")
    parser.add_argument("--port", type=int, default=8765, help="port (0: any free port)")
    parser.add_argument("--no-rate-limits", action="store_true", help="answer every request, never 429")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, not args.no_rate_limits))


if __name__ == "__main__":
    main()
