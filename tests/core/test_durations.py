"""The one rule for showing how long a job waited or ran (core/templatetags/durations.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.template import Context, Template

from core.templatetags.durations import duration


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "0 s"),
        (0.0, "0 s"),
        (0.04, "< 0.1 s"),
        (0.05, "0.1 s"),
        (0.3, "0.3 s"),
        (0.25, "0.3 s"),  # half up, not to even
        (9.96, "10 s"),
        (42, "42 s"),
        (42.45, "42.5 s"),
        (59.9, "59.9 s"),
        (59.94, "59.9 s"),
        (59.95, "1 min"),  # would round to 60.0 s: a minute, never "60 s"
        (60, "1 min"),
        (60.4, "1 min"),
        (61, "1 min 1 s"),
        (185, "3 min 5 s"),
        (3599.4, "59 min 59 s"),
        (3599.5, "1 h"),
        (3600, "1 h"),
        (3629, "1 h"),
        (3630, "1 h 1 min"),
        (7384, "2 h 3 min"),
        (7199, "2 h"),
        (30 * 3600 + 60, "30 h 1 min"),
        (-0.2, "0 s"),  # two hosts' clocks a little apart: never a negative time
    ],
)
def test_a_duration_reads_in_the_largest_sensible_units(seconds, shown):
    assert duration(seconds) == shown


def test_a_timedelta_and_a_decimal_read_like_seconds():
    assert duration(timedelta(minutes=3, seconds=5)) == "3 min 5 s"
    assert duration(Decimal("0.3")) == "0.3 s"


def test_with_an_argument_it_measures_from_that_time_to_the_value():
    start = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    assert duration(start + timedelta(milliseconds=300), start) == "0.3 s"
    assert duration(start + timedelta(hours=1, minutes=2), start) == "1 h 2 min"


@pytest.mark.parametrize("value", [None, "", "soon", True, float("nan"), float("inf")])
def test_nothing_to_measure_is_empty_so_a_default_applies(value):
    assert duration(value) == ""


def test_a_missing_end_or_start_is_empty_too():
    now = datetime(2026, 1, 1, tzinfo=UTC)

    assert duration(None, now) == ""
    assert duration(now, None) == duration(now) == ""


def test_templates_load_it_as_the_duration_filter():
    template = Template('{% load durations %}{{ seconds|duration }} / {{ end|duration:start|default:"—" }}')

    assert template.render(Context({"seconds": 0.3, "end": None, "start": None})) == "0.3 s / —"
