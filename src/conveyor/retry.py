"""Backoff policies: pure functions from attempt number to delay."""

from __future__ import annotations

import random
from dataclasses import dataclass

from .errors import ConfigurationError


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff: ``initial * factor ** (attempt - 1)``, capped at ``max``.

    ``jitter`` is the fraction of the delay drawn at random (0.1 = +/-10%), which spreads retries
    of jobs that failed together (e.g. when an API went down) instead of retrying them in lockstep.
    """

    initial: float = 1.0
    factor: float = 2.0
    max: float = 300.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.initial < 0:
            raise ConfigurationError(f"backoff initial must be >= 0, got {self.initial}")
        if self.factor < 1:
            raise ConfigurationError(f"backoff factor must be >= 1, got {self.factor}")
        if self.max < self.initial:
            raise ConfigurationError(
                f"backoff max ({self.max}) must be >= initial ({self.initial})"
            )
        if not 0 <= self.jitter <= 1:
            raise ConfigurationError(f"backoff jitter must be within 0..1, got {self.jitter}")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay before the retry that follows failed attempt number ``attempt`` (1-based)."""
        base = min(self.max, self.initial * self.factor ** max(0, attempt - 1))
        if self.jitter:
            spread = base * self.jitter
            base += (rng or random).uniform(-spread, spread)
        return max(0.0, base)
