"""`ReconnectPlan`: how a hub tries to get its connection back, for both flavours."""

from __future__ import annotations

import logging
import random
from typing import Callable, Iterator, Tuple

from .errors import AuthenticationError, ConnectionClosed, TimeoutError

log = logging.getLogger("mphub")


class ReconnectPlan:
    """The attempts of one outage: waits doubling from `wait_range[0]` up to `wait_range[1]`,
    each times a random 0.5-1.5 (so that many clients do not come back at once), at most
    `max_attempts` (-1: no limit). `give_up(error)` ends the hub's hopes (`Core.give_up`);
    `closing()` says whether the hub is closing. A driver runs it as

        plan = core.reconnect_plan()
        for delay in plan:            # ends, having given up, when there is no attempt left
            wait `delay`; if the hub closed meanwhile: continue (the plan then gives up)
            connect; if that raised: plan.failed(error); continue
            write what `core.on_connect()` gives; done
    """

    def __init__(
        self,
        address: object,
        max_attempts: int,
        wait_range: Tuple[float, float],
        give_up: Callable[[BaseException], None],
        closing: Callable[[], bool],
    ) -> None:
        self.attempt = 0
        self._address = address
        self._max_attempts = max_attempts
        self._wait, self._most = wait_range
        self._give_up = give_up
        self._closing = closing
        self._stopped = False

    def __iter__(self) -> Iterator[float]:
        while not self._stopped:
            if self._closing() or 0 <= self._max_attempts <= self.attempt:
                self._give_up(
                    ConnectionClosed(f"gave up reconnecting to {self._address} after {self.attempt} attempts")
                )
                return
            wait = self._wait * (0.5 + random.random())
            self._wait = min(self._wait * 2, self._most)
            self.attempt += 1
            yield wait

    def failed(self, error: BaseException) -> None:
        """An attempt raised `error`. A refused authkey ends the plan, having given up: trying
        again would not change the broker's mind. A handshake that timed out does not: the
        broker may be stopped and coming back."""
        if isinstance(error, AuthenticationError) and not isinstance(error, TimeoutError):
            self._stopped = True
            self._give_up(error)
        else:
            log.info("mphub: reconnect attempt %d to %s failed: %s", self.attempt, self._address, error)
