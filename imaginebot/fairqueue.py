"""The queue that is fair across users, with relax as a priority class of it.

The next job is the oldest queued job of the user who was served least recently (users never served first,
in the order they arrived). With A's ten jobs queued, B's two run 2nd and 4th. Relax jobs come after every
fast job, and among themselves by the same rule; a user's turn is one turn whichever class their job is of.
Jobs put back after losing their worker go before everyone (their user's turn was taken when they first
started). ``order()`` simulates the rule, so position n is the job that starts n-th.

Not thread-safe: the executor calls it under its lock.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Key = tuple[bool, int]  # (relax, user id): one of the queue's inner queues


class FairQueue(Generic[Item]):
    """``key(item)``: (relax, user id) of a queued item."""

    def __init__(self, key: Callable[[Item], Key]) -> None:
        self._key = key
        self.front: deque[Item] = deque()  # put back after losing their worker: they start first
        self._queues: dict[Key, deque[Item]] = {}  # oldest first
        self._arrival: dict[Key, int] = {}  # when each inner queue last became non-empty
        self._last_served: dict[int, int] = {}  # user id -> dispatch number of their latest started job
        self._dispatches = 0
        self._arrivals = 0

    def __bool__(self) -> bool:
        return bool(self.front or self._queues)

    def push(self, item: Item) -> None:
        key = self._key(item)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
            self._arrivals += 1
            self._arrival[key] = self._arrivals
        queue.append(item)

    def waiting(self, user_id: int) -> int:
        """The user's queued jobs, of both classes (what the per-user cap bounds)."""
        return sum(len(queue) for (_, user), queue in self._queues.items() if user == user_id)

    def order(self) -> list[Item]:
        """Every queued item in the order they will be taken: the front, then the fast jobs, then the relax
        ones, each class by the fairness rule, simulated."""
        order, dispatches = list(self.front), self._dispatches
        served = dict(self._last_served)
        for relax in (False, True):
            keys = [key for key in self._queues if key[0] is relax]
            heap = [(served.get(key[1], -1), self._arrival[key], key) for key in keys]
            heapq.heapify(heap)
            taken = dict.fromkeys(keys, 0)
            while heap:
                _, arrival, key = heapq.heappop(heap)
                order.append(self._queues[key][taken[key]])
                taken[key] += 1
                dispatches += 1
                served[key[1]] = dispatches
                if taken[key] < len(self._queues[key]):
                    heapq.heappush(heap, (dispatches, arrival, key))
        return order

    def head(self) -> Item:
        """The first of ``order()``, without simulating the rest. The queue must not be empty."""
        if self.front:
            return self.front[0]
        relax = all(relax for relax, _ in self._queues)  # relax jobs only when no fast job waits
        key = min(
            (key for key in self._queues if key[0] is relax),
            key=lambda k: (self._last_served.get(k[1], -1), self._arrival[k]),
        )
        return self._queues[key][0]

    def pop(self, item: Item) -> Item:
        """Take ``item`` to start it: it leaves the queue and its user's turn is taken."""
        if item in self.front:
            self.front.remove(item)  # its user's turn was taken when it first started
            return item
        self.remove(item)
        self._dispatches += 1
        self._last_served[self._key(item)[1]] = self._dispatches
        return item

    def remove(self, item: Item) -> None:
        """Take ``item`` out without starting it (cancelled, or the executor stops)."""
        if item in self.front:
            self.front.remove(item)
            return
        key = self._key(item)
        self._queues[key].remove(item)
        if not self._queues[key]:
            del self._queues[key], self._arrival[key]
