"""Results by seq, for the streams that tag each request with one (a Work
session's reports, an EnqueueStream's jobs): a request gets the next seq
and a future; the reader resolves the future of each result's seq; when
the stream ends, every future still waiting fails with the stream's error.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Dict, Generic, Tuple, TypeVar

T = TypeVar("T")


class Waiters(Generic[T]):
    """The requests of one stream still waiting for their result."""

    def __init__(self) -> None:
        self._seqs = itertools.count(1)
        self._pending: Dict[int, "asyncio.Future[T]"] = {}

    def add(self) -> Tuple[int, "asyncio.Future[T]"]:
        """The next seq, and the future its result will resolve."""
        seq = next(self._seqs)
        waiter: "asyncio.Future[T]" = asyncio.get_running_loop().create_future()
        self._pending[seq] = waiter
        return seq, waiter

    def resolve(self, seq: int, result: T) -> None:
        """The result of request ``seq`` came (an unknown seq is ignored)."""
        waiter = self._pending.pop(seq, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(result)

    def forget(self, seq: int) -> None:
        """Request ``seq`` waits no more (it was not sent, or gave up)."""
        self._pending.pop(seq, None)

    def fail_all(self, error: BaseException) -> None:
        """The stream ended: every request still waiting fails with ``error``."""
        for waiter in self._pending.values():
            if not waiter.done():
                waiter.set_exception(error)
        self._pending.clear()
