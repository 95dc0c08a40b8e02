"""Pure parsing of job options: priorities and delays."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest

from conveyor import ValidationError
from conveyor.job import DEFAULT_PRIORITY, PRIORITY_NAMES, parse_delay, parse_priority

NOW = 1_700_000_000.0


class TestParsePriority:
    def test_none_is_the_default(self) -> None:
        assert parse_priority(None) == DEFAULT_PRIORITY == 5

    @pytest.mark.parametrize(
        ("name", "value"),
        [("critical", 20), ("urgent", 20), ("high", 10), ("normal", 5), ("low", 1),
         ("HIGH", 10), ("Urgent", 20)],
    )  # fmt: skip
    def test_names_and_aliases_case_insensitively(self, name: str, value: int) -> None:
        assert parse_priority(name) == value

    def test_the_documented_names(self) -> None:
        assert PRIORITY_NAMES == {"critical": 20, "urgent": 20, "high": 10, "normal": 5, "low": 1}

    @pytest.mark.parametrize("value", [0, 1, 50, 99, 100])
    def test_integers_0_to_100(self, value: int) -> None:
        assert parse_priority(value) == value

    @pytest.mark.parametrize("value", [-1, 101, 10**9])
    def test_out_of_range_integers(self, value: int) -> None:
        with pytest.raises(ValidationError, match="out of range") as err:
            parse_priority(value)
        assert err.value.field == "priority"

    @pytest.mark.parametrize("value", [True, False, 5.0, "5", "", b"high", [1]])
    def test_wrong_types_and_unknown_names(self, value: object) -> None:
        with pytest.raises(ValidationError) as err:
            parse_priority(value)  # type: ignore[arg-type]
        assert err.value.field == "priority"

    def test_unknown_name_lists_the_known_ones(self) -> None:
        with pytest.raises(ValidationError, match=r"critical.*low"):
            parse_priority("asap")

    def test_field_name_is_configurable(self) -> None:
        with pytest.raises(ValidationError) as err:
            parse_priority(500, field_name="items[3].priority")
        assert err.value.field == "items[3].priority"


class TestParseDelay:
    def test_none_and_zero_mean_now(self) -> None:
        assert parse_delay(None, NOW) is None
        assert parse_delay(0, NOW) is None
        assert parse_delay(0.0, NOW) is None
        assert parse_delay(timedelta(0), NOW) is None

    def test_seconds_int_and_float(self) -> None:
        assert parse_delay(10, NOW) == NOW + 10
        assert parse_delay(0.25, NOW) == NOW + 0.25

    def test_timedelta(self) -> None:
        assert parse_delay(timedelta(minutes=2, milliseconds=500), NOW) == NOW + 120.5

    def test_aware_datetime_is_an_absolute_due_time(self) -> None:
        due = datetime.fromtimestamp(NOW + 30, tz=UTC)
        assert parse_delay(due, NOW) == pytest.approx(NOW + 30)
        other_zone = due.astimezone(timezone(timedelta(hours=-7)))
        assert parse_delay(other_zone, NOW) == pytest.approx(NOW + 30)

    def test_naive_datetime_is_local_time(self) -> None:
        due = datetime.fromtimestamp(NOW + 60)  # naive, local
        assert parse_delay(due, NOW) == pytest.approx(NOW + 60)

    def test_past_or_present_datetime_means_now(self) -> None:
        assert parse_delay(datetime.fromtimestamp(NOW - 5, tz=UTC), NOW) is None
        assert parse_delay(datetime.fromtimestamp(NOW, tz=UTC), NOW) is None

    @pytest.mark.parametrize("value", [-1, -0.001, timedelta(seconds=-1)])
    def test_negative_delays(self, value: object) -> None:
        with pytest.raises(ValidationError, match=">= 0") as err:
            parse_delay(value, NOW)  # type: ignore[arg-type]
        assert err.value.field == "delay"

    @pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
    def test_non_finite_delays(self, value: float) -> None:
        with pytest.raises(ValidationError, match="finite") as err:
            parse_delay(value, NOW)
        assert err.value.field == "delay"

    @pytest.mark.parametrize("value", [True, "10", [1], {"seconds": 1}])
    def test_wrong_types(self, value: object) -> None:
        with pytest.raises(ValidationError) as err:
            parse_delay(value, NOW)  # type: ignore[arg-type]
        assert err.value.field == "delay"
