"""The Jinja2 environment of the list fragments (see ``TEMPLATES``): the same display helpers
as the Django templates' ``scrm`` library, so both engines show a value the same way."""

from datetime import datetime, tzinfo
from typing import Any

from django.http import HttpRequest
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe
from jinja2 import Environment, StrictUndefined

from conversations.templatetags import scrm


def url_format(name: str, *args: Any) -> str:
    """The URL of a route whose last argument is a number, with ``{}`` where that number goes:
    a list formats each row's link from it instead of reversing the route for every row."""
    return reverse(name, args=[*args, _SLOT]).replace(str(_SLOT), "{}")


_SLOT = 9876543210


def month_day_time(moment: datetime, zone: tzinfo) -> str:
    """Nov 2, 14:05 in ``zone`` (as Django's ``date:"M j, H:i"``); without strftime, which a
    list of hundreds of rows notices."""
    local = moment.astimezone(zone)
    return f"{_MONTHS[local.month]} {local.day}, {local.hour:02d}:{local.minute:02d}"


_MONTHS = ("", "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def pluralize(count: int, suffix: str = "s") -> str:
    return "" if count == 1 else suffix


def fragment(request: HttpRequest, name: str, context: dict[str, Any]) -> SafeString:
    """A list rendered by Jinja2 for a Django template to place: Jinja2 has escaped what it
    rendered, so the result goes into the page as it is."""
    return mark_safe(render_to_string(name, context, request=request, using="jinja2"))


def environment(**options: Any) -> Environment:
    # A misspelt name fails loudly instead of rendering as nothing.
    env = Environment(**{"undefined": StrictUndefined, **options})
    env.globals.update(
        url_format=url_format,
        now=timezone.now,
        current_zone=timezone.get_current_timezone,
        platform_icon=scrm.platform_icon,
        sla_badge=scrm.sla_badge,
    )
    env.filters.update(
        since=scrm.since,
        local_minute=scrm.local_minute,
        pluralize=pluralize,
        month_day_time=month_day_time,
    )
    return env
