"""Staff-only pages. For everyone else they are a 404: their existence is not advertised."""

from __future__ import annotations

from functools import wraps

from django.http import Http404
from django.shortcuts import render

from core.charts import bar_chart
from staff.selectors import audit_events, business_numbers


def staff_only(view):
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not (request.user.is_authenticated and request.user.is_staff):
            raise Http404
        return view(request, *args, **kwargs)

    return wrapped


@staff_only
def business(request):
    numbers = business_numbers()
    query = request.GET.get("q", "")
    return render(
        request,
        "staff/business.html",
        {
            "n": numbers,
            "tokens_chart": bar_chart(numbers.tokens_per_day, []),
            "jobs_chart": bar_chart(numbers.jobs_per_day, []),
            "audit": audit_events(email_contains=query),
            "query": query,
        },
    )
