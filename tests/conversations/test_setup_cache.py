"""Rules, SLA policies and calendars are built once and reused until their rows change."""

from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from conversations import setup_cache
from conversations.models import BusinessCalendar, Holiday, RoutingRule, SlaPolicy
from conversations.routing import RuleBook
from conversations.rules import Facts
from conversations.sla import SlaSetup
from tests.factories import TagFactory, TeamFactory, UserFactory

pytestmark = pytest.mark.django_db

SATURDAY_NOON = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


def facts(text="hello", at=SATURDAY_NOON) -> Facts:
    return Facts(
        event="message_received",
        platform="demo",
        channel_id=1,
        kind="post",
        text=text,
        sentiment=None,
        language="en",
        is_vip=False,
        followers=None,
        has_open_escalation=False,
        tag_ids=frozenset(),
        priority=2,
        at=at,
    )


def rule(**fields) -> RoutingRule:
    return RoutingRule.objects.create(
        name=fields.pop("name", "Rule"),
        events=["message_received"],
        conditions=fields.pop("conditions", []),
        actions=fields.pop("actions", [{"type": "set_priority", "value": 4}]),
        position=RoutingRule.objects.count(),
        **fields,
    )


def matched(book: RuleBook, **kwargs) -> list[str]:
    return [m.rule.name for _, m in book.evaluate(facts(**kwargs), ["message_received"])]


def test_an_unchanged_rule_set_is_compiled_once_and_read_in_two_plain_queries():
    tag = TagFactory()
    rule(
        conditions=[{"field": "text", "op": "contains_any", "value": ["refund"]}],
        actions=[{"type": "add_tags", "value": [tag.pk]}],
    )
    first = RuleBook.load()
    with CaptureQueriesContext(connection) as queries:
        second = RuleBook.load()
    assert second.rules is first.rules
    # The rules' rows, then whether the tag they name still exists.
    assert len(queries) == 2
    assert all(q["sql"].lstrip().upper().startswith("SELECT") for q in queries)


def test_a_rule_changed_without_the_orm_save_is_seen_by_the_next_load():
    stored = rule(
        name="Refunds", conditions=[{"field": "text", "op": "contains_any", "value": ["refund"]}]
    )
    assert matched(RuleBook.load(), text="a refund please") == ["Refunds"]

    # A bulk update sends no signal: the rows themselves are the key.
    RoutingRule.objects.filter(pk=stored.pk).update(
        conditions=[{"field": "text", "op": "contains_any", "value": ["invoice"]}]
    )
    book = RuleBook.load()
    assert matched(book, text="a refund please") == []
    assert matched(book, text="my invoice") == ["Refunds"]

    RoutingRule.objects.filter(pk=stored.pk).update(is_active=False)
    assert RuleBook.load().rules == []


def test_a_deleted_team_or_tag_is_noticed_even_though_the_rule_is_unchanged():
    team, tag = TeamFactory(), TagFactory()
    rule(actions=[{"type": "set_team", "value": team.pk}, {"type": "add_tags", "value": [tag.pk]}])
    assert [a.type for a in RuleBook.load().rules[0].actions] == ["set_team", "add_tags"]

    tag.delete()
    assert [a.type for a in RuleBook.load().rules[0].actions] == ["set_team"]
    team.delete()
    assert RuleBook.load().rules[0].actions == ()


def test_a_deactivated_user_is_no_longer_assigned_by_a_cached_rule():
    agent = UserFactory()
    rule(actions=[{"type": "assign", "value": agent.pk}])
    assert RuleBook.load().rules[0].actions[0].value == agent.pk

    type(agent).objects.filter(pk=agent.pk).update(is_active=False)
    assert RuleBook.load().rules[0].actions == ()


def test_business_hours_changes_reach_the_rules_and_the_sla_clocks():
    calendar = BusinessCalendar.objects.create(
        name="Weekdays", time_zone="UTC", weekly_hours={"0": [["09:00", "17:00"]]}, is_default=True
    )
    policy = SlaPolicy.objects.create(name="Standard", first_response_minutes=60, calendar=calendar)
    rule(
        name="After hours", conditions=[{"field": "business_hours", "op": "outside", "value": None}]
    )
    assert matched(RuleBook.load()) == ["After hours"]  # Saturday: closed
    monday_nine = datetime(2026, 1, 12, 9, 0, tzinfo=UTC)
    assert SlaSetup.load().add(policy, SATURDAY_NOON, 60) == monday_nine + timedelta(hours=1)

    BusinessCalendar.objects.filter(pk=calendar.pk).update(
        weekly_hours={str(day): [["00:00", "24:00"]] for day in range(7)}
    )
    assert matched(RuleBook.load()) == []
    assert SlaSetup.load().add(policy, SATURDAY_NOON, 60) == SATURDAY_NOON + timedelta(hours=1)

    Holiday.objects.create(calendar=calendar, date=date(2026, 1, 10))
    assert matched(RuleBook.load()) == ["After hours"]
    assert SlaSetup.load().add(policy, SATURDAY_NOON, 60) == datetime(2026, 1, 11, 1, tzinfo=UTC)


def test_sla_policies_are_reused_until_one_changes():
    SlaPolicy.objects.create(name="Standard", first_response_minutes=60)
    first = SlaSetup.load()
    assert SlaSetup.load().policies is first.policies

    SlaPolicy.objects.update(first_response_minutes=30)
    (policy,) = SlaSetup.load().policies
    assert policy.first_response_minutes == 30

    SlaPolicy.objects.update(is_active=False)
    assert SlaSetup.load().policies == []


def test_a_calendar_that_cannot_be_read_is_left_out_and_logged(caplog):
    BusinessCalendar.objects.create(name="Broken", time_zone="Mars/Olympus", is_default=True)
    assert setup_cache.business_calendars().get(None) is None
    assert "cannot be read" in caplog.text


def test_calendars_and_their_holidays_are_read_in_one_query():
    weekdays = BusinessCalendar.objects.create(
        name="Weekdays", time_zone="UTC", weekly_hours={"5": [["09:00", "17:00"]]}, is_default=True
    )
    always = BusinessCalendar.objects.create(
        name="Always", time_zone="Europe/Berlin", weekly_hours={"5": [["00:00", "24:00"]]}
    )
    Holiday.objects.create(calendar=weekdays, date=date(2026, 1, 10))
    Holiday.objects.create(calendar=weekdays, date=date(2026, 1, 17))
    setup_cache.clear()
    with CaptureQueriesContext(connection) as captured:
        calendars = setup_cache.business_calendars()
    assert len(captured) == 1
    assert set(calendars.by_id) == {weekdays.pk, always.pk}
    assert calendars.default_id == weekdays.pk
    # Saturdays: both holidays close the default calendar; the other has none.
    assert not calendars.get(None).is_open(SATURDAY_NOON)
    assert not calendars.get(None).is_open(SATURDAY_NOON + timedelta(days=7))
    assert calendars.get(None).is_open(SATURDAY_NOON + timedelta(days=14))
    assert calendars.get(always.pk).is_open(SATURDAY_NOON)

    Holiday.objects.filter(date=date(2026, 1, 17)).delete()
    assert setup_cache.business_calendars().get(None).is_open(SATURDAY_NOON + timedelta(days=7))
