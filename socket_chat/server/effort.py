"""How much proof of work a busy server asks of a new connection: the
effort controller (PROTOCOL.md section 2, "Proof of work").

As Tor's onion-service proof of work (hs_pow) does, the effort follows the
load: it is looked at once a ``period``; a period in which the handshakes
in flight were over the threshold (``--max-startups``' START) raises it one
bit (twice the work), and a period without raises it no more and lowers it
a bit, down to the lowest. Below the threshold nobody is asked anything at
all: an idle server costs a client no puzzle and no round trip.

Pure: a clock is injected, so a test steps through the periods without
waiting. Not thread-safe by itself: ``admission.Admission`` calls it under
its lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from socket_chat.chat.limits import Limits
from socket_chat.protocol.handshake import MAX_EFFORT, MIN_EFFORT

__all__ = ["EffortController", "DEFAULT_MAX_EFFORT", "PERIOD"]

#: The highest effort asked by default (``--max-work``): 65,536 hashes,
#: about 50 ms of a person's CPU in Python, 16 times what the lowest costs
#: (and what an RSA decryption costs the server); a person still connects
#: well within a second at the slow end of the luck (the p99 of a geometric
#: number of tries is about 4.6 times the mean).
DEFAULT_MAX_EFFORT = Limits().max_work
PERIOD = 1.0  # seconds between two looks at the load


class EffortController:
    """The effort to ask, from the load seen (see the module's docstring).

    Args:
        highest: the effort it rises to at most (MIN_EFFORT..MAX_EFFORT).
        period: seconds between two adjustments.
        clock: the monotonic clock, for tests to pin.

    Raises:
        ValueError: ``highest`` out of range, or a period not above 0.
    """

    def __init__(
        self, highest: int = DEFAULT_MAX_EFFORT, period: float = PERIOD, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not MIN_EFFORT <= highest <= MAX_EFFORT:
            raise ValueError(f"the highest effort must be between {MIN_EFFORT} and {MAX_EFFORT}")
        if not period > 0:
            raise ValueError("the period must be above 0")
        self.highest, self.period, self._clock = highest, period, clock
        self.level = MIN_EFFORT  # what a busy server asks now
        self._period_began = clock()
        self._busy = False  # over the threshold at some point in this period

    def effort(self, busy: bool) -> int:
        """The effort to ask of a new connection, ``busy`` saying whether
        the handshakes in flight are over the threshold now: 0 (nothing to
        ask) if not, else the level the load has brought."""
        self._settle()
        if not busy:
            return 0
        self._busy = True
        return self.level

    def _settle(self) -> None:
        """Apply the periods gone by: the first raises the level if it was
        busy; each other, and a first that was not, lowers it."""
        now = self._clock()
        periods = int((now - self._period_began) // self.period)
        if periods <= 0:
            return
        self._period_began += periods * self.period
        idle = periods
        if self._busy:
            self.level = min(self.highest, self.level + 1)
            idle -= 1  # nothing was seen after the busy one: the others were idle
        self.level = max(MIN_EFFORT, self.level - idle)
        self._busy = False
