"""Injected faults for the simulators' retry tests: one queue and one fault type for every server.

Each server owns a :class:`FaultQueue` and calls :meth:`FaultQueue.take` once per API call; the
queue counts the calls and the faulted ones (tests assert on both). How a fault is answered is
the server's business (its own error body); :meth:`Fault.headers` and :attr:`Fault.message` are
the parts they share.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass


@dataclass
class Fault:
    """Make the next ``count`` calls misbehave.

    ``status`` None means "answer normally" (use with ``delay_seconds`` to simulate slowness or,
    with a client timeout shorter than the delay, timeouts; only servers that can delay honour
    it). ``retry_after`` sets the Retry-After header (seconds, rounded up), typically with 429
    or 503.
    """

    status: int | None = 503
    count: int = 1
    retry_after: float | None = None
    delay_seconds: float = 0.0

    def headers(self) -> dict[str, str] | None:
        """The ``Retry-After`` header the fault asks for, if any."""
        if self.retry_after is None:
            return None
        return {"Retry-After": str(math.ceil(self.retry_after))}

    @property
    def message(self) -> str:
        return f"simulated fault (HTTP {self.status})"


@dataclass
class _Queued:
    fault: Fault
    remaining: int


class FaultQueue:
    """Faults waiting to be served, in order, each for its ``count`` calls; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[_Queued] = deque()
        self.calls = 0  # calls seen by take(), faulted or not
        self.faulted = 0  # calls that got a fault

    def add(self, fault: Fault) -> int:
        """Queue ``fault`` after those already waiting; returns the calls now pending a fault."""
        with self._lock:
            self._queue.append(_Queued(fault, fault.count))
            return self._pending()

    def take(self) -> Fault | None:
        """Count one call and return the fault it should get (None: answer normally)."""
        with self._lock:
            self.calls += 1
            if not self._queue:
                return None
            head = self._queue[0]
            head.remaining -= 1
            if head.remaining <= 0:
                self._queue.popleft()
            self.faulted += 1
            return head.fault

    def take_error(self) -> Fault | None:
        """Like :meth:`take`, for servers that cannot delay: only a fault with an error status."""
        fault = self.take()
        return fault if fault is not None and fault.status is not None else None

    def pending(self) -> int:
        """Calls that will still get a fault."""
        with self._lock:
            return self._pending()

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()

    def counts(self) -> tuple[int, int, int]:
        """(calls, faulted, pending), read together."""
        with self._lock:
            return self.calls, self.faulted, self._pending()

    def _pending(self) -> int:
        return sum(q.remaining for q in self._queue)


class FaultCounters:
    """Mixin for a server state holding ``faults: FaultQueue``: the counters tests read."""

    faults: FaultQueue

    @property
    def calls(self) -> int:
        """API calls received, faulted ones included."""
        return self.faults.calls

    @property
    def faulted(self) -> int:
        return self.faults.faulted
