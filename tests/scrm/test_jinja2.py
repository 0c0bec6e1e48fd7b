from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from django.template.defaultfilters import date
from django.urls import reverse
from django.utils import timezone

from scrm.jinja2 import month_day_time, url_format


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 1, 5, 8, 3, tzinfo=UTC),
        datetime(2026, 3, 29, 0, 59, tzinfo=UTC),  # Berlin's clocks go forward at 01:00 UTC
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC),
        datetime(2026, 12, 31, 23, 30, tzinfo=UTC),
    ],
)
def test_list_times_read_as_the_django_pages_show_them(moment):
    zone = ZoneInfo("Europe/Berlin")
    with timezone.override(zone):
        # The template engine hands the filter the local time.
        assert month_day_time(moment, zone) == date(timezone.localtime(moment), "M j, H:i")


def test_a_url_format_gives_the_route_of_each_number():
    assert url_format("conversations:detail").format(42) == reverse(
        "conversations:detail", args=[42]
    )
    retry = url_format("conversations:message_retry", 7)
    assert retry.format(9) == reverse("conversations:message_retry", args=[7, 9])
