"""Tick arithmetic of schedules (`conveyor.schedule`): cron ticks across daylight saving time in
Europe/Paris, periodic ticks, the catch-up policies of `plan`, and the configuration errors
``@app.cron`` / ``@app.periodic`` raise at decoration time."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from conveyor import ConfigurationError, Conveyor
from conveyor.schedule import Plan, Schedule, idempotency_key, plan

PARIS = ZoneInfo("Europe/Paris")


def _ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=PARIS).timestamp() * 1000)  # type: ignore[misc]


def _paris(ticks: list[int]) -> list[str]:
    return [datetime.fromtimestamp(t / 1000, PARIS).isoformat() for t in ticks]


def test_a_daily_cron_fires_at_the_first_valid_time_on_the_spring_forward_night() -> None:
    # Given 02:30 every day in Paris, where 02:00-03:00 does not exist on 2024-03-31
    s = Schedule.cron("n", "t", "30 2 * * *", tz="Europe/Paris")
    # When its ticks over three days are computed
    ticks = s.ticks(_ms(2024, 3, 30, 12), _ms(2024, 4, 2, 12))
    # Then the missing 02:30 fires at 03:00 (CEST), and the next days at 02:30 CEST
    assert _paris(ticks) == [
        "2024-03-31T03:00:00+02:00", "2024-04-01T02:30:00+02:00", "2024-04-02T02:30:00+02:00",
    ]  # fmt: skip


def test_a_daily_cron_fires_once_on_the_fall_back_night() -> None:
    # Given 02:30 every day in Paris, a wall time that occurs twice on 2024-10-27
    s = Schedule.cron("n", "t", "30 2 * * *", tz="Europe/Paris")
    # When its ticks over three days are computed
    ticks = s.ticks(_ms(2024, 10, 26, 12), _ms(2024, 10, 29, 12))
    # Then 2024-10-27 has one tick (the first 02:30, CEST), and the days after are CET
    assert _paris(ticks) == [
        "2024-10-27T02:30:00+02:00", "2024-10-28T02:30:00+01:00", "2024-10-29T02:30:00+01:00",
    ]  # fmt: skip
    # And the tick before a moment in the repeated hour is that first 02:30
    repeated = _ms(2024, 10, 27, 2, 45) + 3600_000  # 02:45 CET
    assert s.latest_at_or_before(repeated) == ticks[0]
    assert s.next_after(ticks[0]) == ticks[1]


def test_a_cron_with_any_hour_fires_at_each_real_time_of_the_repeated_hour() -> None:
    # Given every 30 minutes in Paris
    s = Schedule.cron("n", "t", "*/30 * * * *", tz="Europe/Paris")
    # When its ticks through the fall-back hour are computed
    ticks = s.ticks(_ms(2024, 10, 27, 1, 50), _ms(2024, 10, 27, 1, 50) + 3 * 3600_000)
    # Then it fires every 30 real minutes, 02:00 and 02:30 twice (CEST then CET)
    assert _paris(ticks) == [
        "2024-10-27T02:00:00+02:00", "2024-10-27T02:30:00+02:00", "2024-10-27T02:00:00+01:00",
        "2024-10-27T02:30:00+01:00", "2024-10-27T03:00:00+01:00", "2024-10-27T03:30:00+01:00",
    ]  # fmt: skip
    assert all(b - a == 1800_000 for a, b in itertools.pairwise(ticks))


def test_periodic_ticks_are_multiples_of_the_period_since_the_epoch() -> None:
    # Given a schedule every 0.3 s
    s = Schedule.periodic("p", "t", timedelta(milliseconds=300))
    # Then its ticks are the multiples of 300 ms, whatever the start
    assert s.ticks(1000, 2000) == [1200, 1500, 1800]
    assert (s.latest_at_or_before(1799), s.latest_at_or_before(1800), s.next_after(1800)) == (
        1500, 1800, 2100,
    )  # fmt: skip
    assert s.describe() == "every 0.3s"
    # And each tick's idempotency key names the schedule and the tick in epoch seconds
    assert idempotency_key("p", 1800) == "cron:p:1.800"
    assert idempotency_key("nightly", 1_700_000_000_000) == "cron:nightly:1700000000"


@pytest.mark.parametrize(
    ("catch_up", "expected"),
    [
        # down since the tick at 10 s; at 14.05 s ticks 11, 12, 13, 14 are due, 14 on time
        ("skip", Plan((14000,))),
        ("latest", Plan((14000,))),
        ("all", Plan((11000, 12000, 13000, 14000))),
    ],
)
def test_catch_up_after_missed_ticks_with_an_on_time_tick(catch_up: str, expected: Plan) -> None:
    # Given a schedule every second whose last claimed tick is 10 s
    s = Schedule.periodic("p", "t", 1.0, catch_up=catch_up)
    # When a scheduler looks at 14.05 s (tick 14 is 50 ms late: on time, half a period allows)
    # Then the policy decides which of the four due ticks fire
    assert plan(s, 10_000, 14_050) == expected


@pytest.mark.parametrize(
    ("catch_up", "expected"),
    [
        # at 14.7 s: 11..14 due, 14 is 700 ms late (more than half a period): missed too
        ("skip", Plan(skip_to=14000)),
        ("latest", Plan((14000,))),
        ("all", Plan((11000, 12000, 13000, 14000))),
    ],
)
def test_catch_up_when_every_due_tick_was_missed(catch_up: str, expected: Plan) -> None:
    # Given a schedule every second whose last claimed tick is 10 s
    s = Schedule.periodic("p", "t", 1.0, catch_up=catch_up)
    # When a scheduler looks at 14.7 s
    # Then skip fires nothing (it claims up to 14 without a job), latest fires 14, all fires all
    assert plan(s, 10_000, 14_700) == expected


def test_the_window_bounds_how_old_a_missed_tick_may_be() -> None:
    # Given schedules every second with a 2.5 s window, last tick 10 s, looked at at 14.7 s
    every = Schedule.periodic("p", "t", 1.0, catch_up="all", window=2.5)
    latest = Schedule.periodic("p", "t", 1.0, catch_up="latest", window=timedelta(seconds=0.5))
    # Then "all" fires only the ticks at most 2.5 s old; "latest" none (14 is 0.7 s old)
    assert plan(every, 10_000, 14_700) == Plan((13000, 14000))
    assert plan(latest, 10_000, 14_700) == Plan(skip_to=14000)


def test_nothing_is_due_before_the_next_tick() -> None:
    s = Schedule.periodic("p", "t", 1.0, catch_up="all")
    assert plan(s, 10_000, 10_999) == Plan()
    assert plan(s, 10_000, 11_000) == Plan((11000,))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda a: a.cron("61 * * * *"), "invalid cron expression '61 * * * *'"),
        (lambda a: a.cron("0 3 * *"), "invalid cron expression"),
        (lambda a: a.cron("0 3 * * *", tz="Mars/Olympus"), "unknown time zone 'Mars/Olympus'"),
        (lambda a: a.periodic(0), "every must be positive"),
        (lambda a: a.periodic(timedelta(seconds=-5)), "every must be positive"),
        (lambda a: a.periodic("1m"), "every must be a timedelta or seconds"),
        (lambda a: a.periodic(1, catch_up="sometimes"), "catch_up must be one of 'skip'"),
        (lambda a: a.periodic(1, overlap="maybe"), "overlap must be one of 'allow', 'skip'"),
        (lambda a: a.periodic(1, window=0), "window must be positive"),
        (lambda a: a.periodic(1, payload={"n": "x"}), "invalid 'payload.n'"),
        (lambda a: a.periodic(1, queue="bad queue"), "queue name 'bad queue' is invalid"),
    ],
)
def test_bad_schedules_are_refused_at_decoration_naming_the_problem(
    make: object, message: str
) -> None:
    # Given an app and a task taking an int
    app = Conveyor("sqlite:///unused.db")

    @app.task
    async def job(n: int = 0) -> int:
        return n

    # When a schedule is declared on it with a bad field
    # Then ConfigurationError names the problem, and no schedule is registered
    with pytest.raises(ConfigurationError, match=message.replace("*", r"\*").replace("(", r"\(")):
        make(app)(job)  # type: ignore[operator]
    assert app.catalog.schedules == {}


def test_schedules_decorate_functions_and_tasks_and_need_distinct_names() -> None:
    # Given a function scheduled directly, and a task scheduled twice
    app = Conveyor("sqlite:///unused.db")

    @app.cron("0 3 * * *", tz="Europe/Paris", queue="nightly")
    async def cleanup() -> None: ...

    @app.periodic(60, name="sync-often", payload={"full": False})
    @app.cron("0 4 * * *", payload={"full": True})
    @app.task(queue="sync", retries=5)
    async def sync(full: bool) -> None: ...

    # Then the function became a task on its queue, and the task kept its options
    assert app.tasks["cleanup"].options.queue == "nightly"
    assert sync.options.retries == 5
    assert list(app.catalog.schedules) == ["cleanup", "sync", "sync-often"]
    assert app.catalog.schedules["sync-often"].payload == {"full": False}
    # And a second schedule under a taken name is refused
    with pytest.raises(ConfigurationError, match="schedule 'sync' is already registered"):
        app.periodic(10, payload={"full": True})(sync)
