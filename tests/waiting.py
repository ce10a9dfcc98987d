"""Waits that explain themselves: a time-out says what the test waited for and what it saw instead."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def until(
    check: Callable[[], bool],
    what: str,
    *,
    timeout: float,  # noqa: ASYNC109 - a failure message needs what was seen, not a bare TimeoutError
    seen: Callable[[], object],
    every: float = 0.1,
) -> None:
    """Poll ``check`` until it holds; a time-out fails naming ``what`` and showing ``seen()``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}; saw: {seen()}")
        await asyncio.sleep(every)


async def within(
    awaitable: Awaitable[T],
    what: str,
    *,
    timeout: float,  # noqa: ASYNC109 - as until's
    seen: Callable[[], object],
) -> T:
    """``awaitable``'s result; a time-out fails naming ``what`` and showing ``seen()``."""
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except TimeoutError:
        raise AssertionError(f"waited {timeout:g} s for {what}; saw: {seen()}") from None


def workers_seen(workers: Any) -> list[dict[str, object]]:
    """Ray workers as the bot sees them: placed, answering (and with what), or gone."""
    return [
        {"name": w.name, "up": w.accepting, "gone": w.gone, "capacity": w.capacity, "models": w.models}
        for w in workers.placed
    ]
