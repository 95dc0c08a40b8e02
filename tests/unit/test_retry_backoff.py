"""`Backoff`: exponential delays, the cap, jitter bounds, and configuration errors."""

from __future__ import annotations

import random

import pytest

from conveyor import Backoff, ConfigurationError


def test_delay_grows_exponentially_without_jitter() -> None:
    # Given a backoff of 0.5 s doubling, no jitter
    b = Backoff(initial=0.5, factor=2, max=300, jitter=0)
    # Then attempt n waits 0.5 * 2 ** (n - 1)
    assert [b.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_factor_one_is_a_constant_delay() -> None:
    b = Backoff(initial=3, factor=1, jitter=0)
    assert {b.delay(n) for n in range(1, 20)} == {3.0}


def test_delay_is_capped_at_max() -> None:
    # Given a backoff capped at 10 s
    b = Backoff(initial=1, factor=3, max=10, jitter=0)
    # Then late attempts wait exactly the cap, even for huge attempt numbers
    assert b.delay(3) == 9.0
    assert b.delay(4) == 10.0
    assert b.delay(1000) == 10.0


def test_attempt_zero_or_below_waits_the_initial_delay() -> None:
    b = Backoff(initial=2, factor=2, jitter=0)
    assert b.delay(0) == 2.0
    assert b.delay(-5) == 2.0


def test_zero_initial_means_immediate_retries() -> None:
    b = Backoff(initial=0, factor=2, max=0, jitter=0.5)
    assert b.delay(5) == 0.0


def test_jitter_stays_within_its_fraction_and_spreads_retries() -> None:
    # Given 10% jitter around 10 s
    b = Backoff(initial=10, factor=1, max=100, jitter=0.1)
    rng = random.Random(42)
    # When many delays are drawn
    delays = [b.delay(1, rng) for _ in range(2000)]
    # Then each is within +/-10% and they are spread over that range
    assert all(9.0 <= d <= 11.0 for d in delays)
    assert min(delays) < 9.2 and max(delays) > 10.8
    assert len(set(delays)) > 1900


def test_jitter_applies_to_the_capped_delay() -> None:
    b = Backoff(initial=1, factor=2, max=4, jitter=0.5)
    rng = random.Random(1)
    assert all(2.0 <= b.delay(30, rng) <= 6.0 for _ in range(500))


def test_full_jitter_never_goes_negative() -> None:
    b = Backoff(initial=1, factor=1, jitter=1.0)
    rng = random.Random(7)
    assert all(0.0 <= b.delay(1, rng) <= 2.0 for _ in range(500))


def test_same_seed_same_delays() -> None:
    b = Backoff(initial=1, factor=2, jitter=0.3)
    assert [b.delay(n, random.Random(3)) for n in range(1, 5)] == [
        b.delay(n, random.Random(3)) for n in range(1, 5)
    ]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"initial": -1}, "initial"),
        ({"factor": 0.5}, "factor"),
        ({"initial": 10, "max": 5}, "max"),
        ({"jitter": -0.1}, "jitter"),
        ({"jitter": 1.5}, "jitter"),
    ],
)
def test_impossible_settings_are_configuration_errors(kwargs: dict[str, float], words: str) -> None:
    # Then a backoff that cannot work is refused at definition, naming the setting
    with pytest.raises(ConfigurationError, match=words):
        Backoff(**kwargs)
