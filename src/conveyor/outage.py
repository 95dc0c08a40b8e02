"""`Outage`: one log line when a loop loses its backend, one when it is back.

A worker's loops (the pump, lease heartbeat, registry, maintenance) and a Redis wake-up
listener retry failed backend calls by themselves. Logged one traceback per failure, a
two-second Redis restart wrote some 120 lines. Instead each family of loops reports to one
`Outage`, which logs the state changes only: "lost connection ...; retrying" once, and
"reconnected ... after N s" once. Errors that are not about the connection (a bug, a refused
statement) are still logged in full, every time.
"""

from __future__ import annotations

import logging
import time

from .errors import BackendUnavailable

#: What a backend's caller sees when the connection is the trouble (a backend translates its
#: driver's errors to `BackendUnavailable`; a timeout or socket error may reach us as it is).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (BackendUnavailable, OSError)


class Outage:
    """The connection state of one family of loops, logged when it changes.

    Args:
        log: where to log.
        who: the subject of each line (``worker <id>``).
        target: what is lost (``the backend``, ``Redis``).
        connection_errors: the exceptions that mean the connection is lost.
    """

    def __init__(
        self,
        log: logging.Logger,
        who: str,
        target: str = "the backend",
        connection_errors: tuple[type[BaseException], ...] = CONNECTION_ERRORS,
    ) -> None:
        self._log = log
        self._who = who
        self._target = target
        self._errors = connection_errors
        self._since: float | None = None

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, exc: BaseException, doing: str) -> None:
        """A backend call failed: a lost connection is logged once per outage, any other
        error in full."""
        if isinstance(exc, self._errors):
            self.lost(exc)
        else:
            self._log.error("%s: %s failed", self._who, doing, exc_info=exc)

    def lost(self, exc: BaseException) -> None:
        if self._since is None:
            self._since = time.monotonic()
            self._log.warning(
                "%s: lost connection to %s (%s); retrying", self._who, self._target, _brief(exc)
            )

    def back(self) -> None:
        """A backend call succeeded."""
        if self._since is not None:
            secs = time.monotonic() - self._since
            self._since = None
            self._log.warning("%s: reconnected to %s after %.1fs", self._who, self._target, secs)


def _brief(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"
