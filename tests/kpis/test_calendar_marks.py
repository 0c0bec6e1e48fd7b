"""A change of the business calendars marks the conversations whose business time it changes
(``kpis/migrations/0019_calendar_marks.py``), so a refresh gives what a rebuild gives."""

from datetime import date
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection

from conversations import services
from conversations.models import BusinessCalendar, Conversation, Holiday, SlaPolicy
from conversations.settings_forms import CalendarForm
from kpis import facts
from kpis.models import ConversationFact, ResponseFact, StaleConversation
from tests.kpis.conftest import utc

pytestmark = pytest.mark.django_db


def marked() -> set[int]:
    return set(StaleConversation.objects.values_list("conversation_id", flat=True))


def answered(history) -> set[int]:
    """A and B have responses and resolutions, so business time; C and D have neither."""
    return {history["a"].pk, history["b"].pk}


def stored() -> tuple[list[Any], list[tuple[Any, ...]]]:
    return (
        list(ConversationFact.objects.order_by("pk").values()),
        sorted(
            ResponseFact.objects.values_list("conversation_id", "at", "seconds", "business_seconds")
        ),
    )


def assert_refresh_gives_the_rebuild() -> None:
    facts.facts_refresh()
    assert marked() == set()
    refreshed = stored()
    facts.facts_rebuild()
    assert stored() == refreshed


@pytest.fixture
def calendar(history) -> BusinessCalendar:
    StaleConversation.objects.all().delete()
    return BusinessCalendar.objects.get(name="Berlin office")


def a_facts(history) -> ConversationFact:
    return ConversationFact.objects.get(conversation=history["a"])


def test_a_holiday_within_a_conversations_span_marks_it(history, calendar):
    # A ran from Friday 9 January to Monday 12 January; Monday 09:00-10:00 Berlin was open.
    before = a_facts(history).resolution_business_seconds
    Holiday.objects.create(calendar=calendar, date=date(2026, 1, 12), name="Closed")
    assert history["a"].pk in marked()
    assert marked() <= answered(history)
    assert_refresh_gives_the_rebuild()
    assert a_facts(history).resolution_business_seconds == before - 3600


def test_a_holiday_within_an_open_conversations_wait_marks_it(history, calendar):
    # C came in on Wednesday 14 January 10:00 UTC; Alice answers on Friday 16th, C stays open.
    c = Conversation.objects.get(messages__external_id="c1")
    services.conversation_reply_create(
        conversation=c, author=history["alice"], body="Here", at=utc(16, 9), delivery_status="sent"
    )
    facts.facts_refresh()
    before = ConversationFact.objects.get(conversation=c).first_response_business_seconds
    Holiday.objects.create(calendar=calendar, date=date(2026, 1, 20))  # after the reply
    assert c.pk not in marked()
    Holiday.objects.create(calendar=calendar, date=date(2026, 1, 15))  # while C waited
    assert c.pk in marked()
    assert_refresh_gives_the_rebuild()
    after = ConversationFact.objects.get(conversation=c).first_response_business_seconds
    assert after == before - 8 * 3600  # Thursday's 09:00-17:00 no longer counts


def test_a_holiday_away_from_every_span_marks_nothing(history, calendar):
    Holiday.objects.create(calendar=calendar, date=date(2026, 1, 25))
    Holiday.objects.create(calendar=calendar, date=date(2025, 12, 25))
    assert marked() == set()


def test_a_holiday_removed_or_moved_marks_around_both_days(history, calendar):
    holiday = Holiday.objects.create(calendar=calendar, date=date(2026, 1, 25))
    Holiday.objects.filter(pk=holiday.pk).update(date=date(2026, 1, 12))
    assert marked() == answered(history)
    facts.facts_refresh()
    Holiday.objects.filter(pk=holiday.pk).update(name="Renamed")
    assert marked() == set()
    Holiday.objects.filter(pk=holiday.pk).delete()
    assert marked() == answered(history)
    assert_refresh_gives_the_rebuild()


def test_other_hours_or_time_zone_mark_every_conversation_with_business_time(history, calendar):
    calendar.weekly_hours = {str(day): [["08:00", "18:00"]] for day in range(5)}
    calendar.save()
    assert marked() == answered(history)
    assert_refresh_gives_the_rebuild()
    BusinessCalendar.objects.filter(pk=calendar.pk).update(time_zone="America/New_York")
    assert marked() == answered(history)
    assert_refresh_gives_the_rebuild()


def test_a_calendar_saved_unchanged_marks_nothing(history, calendar):
    calendar.name = "Berlin"
    calendar.save()  # every column written, hours and zone unchanged
    assert marked() == set()


def test_the_form_writes_only_the_holidays_that_changed(history, calendar):
    Holiday.objects.create(calendar=calendar, date=date(2026, 1, 12), name="Closed")
    Holiday.objects.create(calendar=calendar, date=date(2026, 2, 2), name="Later")
    facts.facts_refresh()
    data = {"name": calendar.name, "time_zone": calendar.time_zone}
    for day in range(5):
        data[f"d{day}_0_opens"], data[f"d{day}_0_closes"] = "09:00", "17:00"
    data.update(
        {
            "holidays-0-date": "2026-01-12",
            "holidays-0-name": "Closed all day",
            "holidays-1-date": "2026-03-03",
            "holidays-1-name": "New",
        }
    )
    form = CalendarForm(data, instance=calendar)
    assert form.is_valid(), form.errors
    form.save()
    assert sorted(calendar.holidays.values_list("date", "name")) == [
        (date(2026, 1, 12), "Closed all day"),
        (date(2026, 3, 3), "New"),
    ]
    # The day the conversations spanned stayed a holiday; the others are away from them.
    assert marked() == set()


def test_another_default_calendar_marks_the_conversations_on_the_default(history, calendar):
    SlaPolicy.objects.update(calendar=None)  # the policy's conversations now on the default
    assert marked() == answered(history)
    assert_refresh_gives_the_rebuild()
    before = a_facts(history).resolution_business_seconds
    BusinessCalendar.objects.update(is_default=False)
    assert marked() == answered(history)
    facts.facts_refresh()
    assert a_facts(history).resolution_business_seconds is None  # no calendar at all
    BusinessCalendar.objects.create(
        name="Around the clock",
        weekly_hours={str(day): [["00:00", "24:00"]] for day in range(7)},
        is_default=True,
    )
    assert marked() == answered(history)
    assert_refresh_gives_the_rebuild()
    assert a_facts(history).resolution_business_seconds == a_facts(history).resolution_seconds
    assert a_facts(history).resolution_business_seconds != before
    BusinessCalendar.objects.filter(name="Around the clock").delete()
    assert marked() == answered(history)
    assert_refresh_gives_the_rebuild()


def test_a_calendar_that_is_not_the_conversations_marks_nothing(history, calendar):
    other = BusinessCalendar.objects.create(name="Elsewhere", time_zone="Asia/Tokyo")
    Holiday.objects.create(calendar=other, date=date(2026, 1, 12))
    other.weekly_hours = {"0": [["10:00", "12:00"]]}
    other.save()
    assert marked() == set()


def test_a_policy_on_another_calendar_marks_its_conversations(history, calendar):
    other = BusinessCalendar.objects.create(name="Weekends too", time_zone="Europe/Berlin")
    SlaPolicy.objects.update(at_risk_minutes=5)
    assert marked() == set()
    SlaPolicy.objects.update(calendar=other)
    assert marked() == answered(history)
    assert_refresh_gives_the_rebuild()


@pytest.mark.django_db(transaction=True)
def test_the_calendar_marks_migration_applies_and_reverses():
    def present() -> set[str]:
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("SELECT tgname FROM pg_trigger WHERE tgname LIKE 'kpis_calendar%'")
            else:
                cursor.execute(
                    "SELECT name FROM sqlite_master WHERE name LIKE 'kpis_calendar_marks%'"
                )
            return {row[0] for row in cursor.fetchall()}

    expected = 7 if connection.vendor == "postgresql" else 8
    assert len(present()) == expected
    try:
        call_command("migrate", "kpis", "0018", verbosity=0)
        assert present() == set()
    finally:
        call_command("migrate", "kpis", verbosity=0)
    assert len(present()) == expected
