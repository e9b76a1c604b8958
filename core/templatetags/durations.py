"""How long something took, for people: ``{{ seconds|duration }}`` or ``{{ end|duration:start }}``.

One rule for every page that shows how long a job waited or ran, so a 0.3 s job never reads
"0 minutes" (Django's ``timeuntil`` counts whole minutes) and a long one never reads "7384 s".
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from decimal import Decimal

from django import template

register = template.Library()


def duration_format(seconds: float) -> str:
    """Under a minute to a tenth of a second ("0.3 s", "42 s", "59.9 s"), under an hour in minutes and
    whole seconds ("3 min 5 s"), beyond in hours and minutes ("2 h 5 min"); a zero part is left out."""
    # Clocks of the web and worker hosts may disagree by a little: never show a negative time.
    seconds = max(0.0, seconds)
    # Half up, not Python's round-half-to-even, so 0.25 s reads 0.3 s like any calculator says.
    tenths = int(seconds * 10 + 0.5)
    if tenths == 0 and seconds > 0:
        # Something did take time: "0 s" would be the "0 minutes" confusion again, only smaller.
        return "< 0.1 s"
    if tenths < 600:
        return f"{tenths / 10:g} s"
    whole = int(seconds + 0.5)
    if whole < 3600:
        minutes, rest = divmod(whole, 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, minutes = divmod(int(seconds / 60 + 0.5), 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


@register.filter
def duration(value: float | Decimal | timedelta | datetime | None, start: datetime | None = None) -> str:
    """Seconds or a timedelta, or with an argument the time from ``start`` to ``value`` (two
    datetimes, as a job's timestamps); "" when there is nothing to measure, so ``|default`` applies."""
    if start is not None:
        if not isinstance(value, datetime) or not isinstance(start, datetime):
            return ""
        value = value - start
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal) or not math.isfinite(value):
        return ""
    return duration_format(float(value))
