"""The Jinja2 environment of the list fragments (see ``TEMPLATES``): the same display helpers
as the Django templates' ``scrm`` library, so both engines show a value the same way."""

from typing import Any

from django.templatetags.static import static
from django.urls import reverse
from django.utils import timezone
from jinja2 import Environment, StrictUndefined

from conversations.templatetags import scrm


def url(name: str, *args: Any) -> str:
    return reverse(name, args=args)


def url_format(name: str) -> str:
    """The URL of a route that takes one number, with ``{}`` where the number goes: a list
    formats each row's link from it instead of reversing the route a hundred times."""
    return reverse(name, args=[_SLOT]).replace(str(_SLOT), "{}")


_SLOT = 9876543210


def pluralize(count: int, suffix: str = "s") -> str:
    return "" if count == 1 else suffix


def environment(**options: Any) -> Environment:
    # A misspelt name fails loudly instead of rendering as nothing.
    env = Environment(**{"undefined": StrictUndefined, **options})
    env.globals.update(
        url=url,
        url_format=url_format,
        now=timezone.now,
        current_zone=timezone.get_current_timezone,
        static=static,
        platform_icon=scrm.platform_icon,
        sla_badge=scrm.sla_badge,
    )
    env.filters.update(
        since=scrm.since,
        local_minute=scrm.local_minute,
        pluralize=pluralize,
    )
    return env
