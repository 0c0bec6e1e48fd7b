"""Every KPI against figures worked out by hand, on a known history built through the real
services: business hours in Berlin, a conversation that starts after midnight Berlin time but
before it in UTC, a breach, a reopening, an escalation that is abandoned, a returning
customer, a listen-only mention. Runs on SQLite and on PostgreSQL (percentiles in the database).
"""

from datetime import date, timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db.models import Sum

from channels_ingest.pipeline import ingest
from conversations import services
from conversations.models import (
    Conversation,
    Status,
)
from conversations.sla import sla_check
from governance.models import ChannelAccess, Role, TeamMembership
from kpis.facts import facts_rebuild, facts_refresh
from kpis.metrics import (
    DateRange,
    Filters,
    agents,
    backlog_by_age,
    interpolated,
    metric_value,
    response_distribution,
    series,
    summary,
)
from kpis.models import ConversationFact, DayCounts, Metric, ResponseFact, StaleConversation
from tests.factories import TagFactory, TeamFactory, UserFactory, post
from tests.kpis.conftest import NOW, WEEK, utc

pytestmark = pytest.mark.django_db


def test_facts_of_each_conversation(history):
    a = ConversationFact.objects.get(conversation=history["a"])
    assert a.day == date(2026, 1, 9)
    assert a.first_response_seconds == 1200
    assert a.first_response_business_seconds == 1200
    assert a.first_response_met is True
    # Friday 15:30 UTC to Monday 09:00 UTC; in business hours Friday 16:30-17:00 and Monday
    # 09:00-10:00 Berlin.
    assert a.resolution_seconds == (2 * 24 + 17.5) * 3600
    assert a.resolution_business_seconds == 90 * 60
    assert a.resolution_met is True
    assert a.resolved_day == date(2026, 1, 12)
    assert a.resolved_by_id == history["alice"].pk
    assert (a.inbound, a.outbound, a.reopens, a.escalations) == (2, 2, 0, 0)
    assert a.new_contact is True

    b = ConversationFact.objects.get(conversation=history["b"])
    assert b.day == date(2026, 1, 13)  # Berlin's day, not UTC's
    assert b.first_response_seconds == 10 * 3600
    assert b.first_response_business_seconds == 90 * 60
    assert b.first_response_met is False
    assert b.breaches == 1
    assert b.reopens == 1
    assert b.escalations == 1
    assert b.escalation_outcome == "abandoned"
    # Monday 23:30 UTC to Wednesday 12:00 UTC; business hours all of Tuesday and Wednesday
    # 09:00-13:00 Berlin.
    assert b.resolution_seconds == 36.5 * 3600
    assert b.resolution_business_seconds == 12 * 3600
    assert b.resolved_day == date(2026, 1, 14)

    nexts = sorted(
        ResponseFact.objects.filter(is_first=False).values_list("seconds", "business_seconds")
    )
    # B's answer after the reopening: 20 minutes, Wednesday 09:00-09:20 Berlin in business
    # time; A's Monday answer to Saturday's message: 46.5 hours, 30 minutes in business time.
    assert nexts == [(1200, 1200), (46.5 * 3600, 1800)]


def test_the_week_in_figures(history):
    s = summary(user=history["manager"], range_=WEEK)
    assert (s.inbound, s.outbound) == (6, 4)
    assert s.new_conversations == 4
    assert s.new_contacts == 3  # Ann, Ben, Cat; Ann's second conversation is not new
    speed = s.speed
    assert speed.first_response.n == 2
    assert speed.first_response.median == pytest.approx((1200 + 36000) / 2)
    assert speed.first_response.p90 == pytest.approx(1200 + 0.9 * (36000 - 1200))
    assert speed.first_response.mean == pytest.approx(18600)
    assert speed.first_response_business.median == pytest.approx((1200 + 5400) / 2)
    assert speed.next_response.median == pytest.approx((1200 + 167400) / 2)
    assert speed.next_response_business.median == pytest.approx(1500)
    assert speed.resolution.median == pytest.approx((235800 + 131400) / 2)
    assert speed.resolution_business.median == pytest.approx((5400 + 43200) / 2)
    assert speed.resolution_business.p90 == pytest.approx(5400 + 0.9 * (43200 - 5400))
    assert (s.first_response_met, s.first_response_missed) == (1, 1)
    assert s.first_response_sla == 50
    # A within its 8 business hours (due Monday 16:30 Berlin); B's last resolution within the
    # clock its reopening started (Wednesday 09:00-17:00 Berlin).
    assert (s.resolution_met, s.resolution_missed) == (2, 0)
    assert s.breaches == 1
    o = s.outcomes
    assert (o.resolved, o.in_channel, o.escalated) == (2, 1, 1)
    # A and B were first resolved in the week, and B reopened since.
    assert (o.first_resolved, o.reopened) == (2, 1)
    assert (o.in_channel_rate, o.escalation_rate, o.reopen_rate) == (50, 50, 50)
    assert o.by_outcome == [("Abandoned", 1)]
    assert o.by_department == [("Billing", 1)]
    assert s.backlog == 2
    assert s.unassigned == 2
    loyalty = s.loyalty
    assert loyalty.contacts == 3
    assert loyalty.repeat_contacts == 1  # Ann
    assert loyalty.returning_30 == 1
    assert loyalty.returning_30_share == 25
    assert s.value(Metric.FIRST_RESPONSE_MEDIAN) == pytest.approx(18600 / 60)
    assert s.value(Metric.IN_CHANNEL_RESOLUTION) == 50


@pytest.mark.parametrize("metric", Metric.values)
def test_a_single_metric_equals_the_summarys(history, metric):
    """Targets read one metric at a time; it must be the figure the dashboard shows."""
    manager = history["manager"]
    x = history["a"].channel_id
    for range_, filters in (
        (WEEK, Filters()),
        (WEEK, Filters(channel=x)),
        (DateRange(WEEK.start, WEEK.start), Filters()),
    ):
        expected = summary(user=manager, range_=range_, filters=filters).value(metric)
        value = metric_value(user=manager, range_=range_, filters=filters, metric=metric)
        assert value == pytest.approx(expected), (range_, filters)
    if metric in (Metric.FIRST_RESPONSE_MEDIAN, Metric.BREACHES, Metric.REOPEN_RATE):
        assert metric_value(user=manager, range_=WEEK, metric=metric) == pytest.approx(
            {"first_response_median": 310, "breaches": 1, "reopen_rate": 50}[metric]
        )


def test_ranges_follow_the_organisations_days(history):
    # Monday 12 January (Berlin) holds A's resolution but not B's start (Tuesday in Berlin).
    monday = summary(
        user=history["manager"], range_=DateRange(date(2026, 1, 12), date(2026, 1, 12))
    )
    assert monday.new_conversations == 0
    assert monday.outcomes.resolved == 1
    assert monday.speed.next_response.median == pytest.approx(167400)
    days = series(user=history["manager"], range_=WEEK, grain="day")
    assert [p.new_conversations for p in days] == [1, 0, 0, 0, 1, 2, 0]
    assert [p.inbound for p in days] == [1, 1, 0, 0, 1, 3, 0]
    weeks = series(user=history["manager"], range_=WEEK, grain="week")
    assert [(p.start, p.new_conversations, p.resolved) for p in weeks] == [
        (date(2026, 1, 5), 1, 0),
        (date(2026, 1, 12), 3, 2),
    ]


def test_filters_and_agents(history):
    on_x = summary(user=history["manager"], range_=WEEK, filters=Filters(channel=history["x"].pk))
    assert on_x.new_conversations == 3
    assert on_x.speed.first_response.median == 1200
    bobs = summary(user=history["manager"], range_=WEEK, filters=Filters(agent=history["bob"].pk))
    assert bobs.speed.first_response.median == 36000
    assert (
        summary(user=history["manager"], range_=WEEK, filters=Filters(platform="facebook")).inbound
        == 2
    )
    rows = {r.name: r for r in agents(user=history["manager"], range_=WEEK)}
    assert rows["Alice"].handled == 1
    assert rows["Alice"].responses == 2
    assert rows["Alice"].first_response_median == 1200
    assert rows["Bob"].responses == 2
    assert rows["Bob"].resolution_median == 131400
    # Bob: first response missed, the next response had no target, the resolution was met.
    assert (rows["Bob"].sla_met, rows["Bob"].sla_missed) == (1, 1)


def test_distribution_and_backlog(history):
    distribution = {
        label: (first, following)
        for label, first, following in response_distribution(user=history["manager"], range_=WEEK)
    }
    assert distribution["15-60 min"] == (1, 1)
    assert distribution["4-24 h"] == (1, 0)
    assert distribution["over 24 h"] == (0, 1)
    backlog = {
        label: (open_, unassigned)
        for label, open_, unassigned in backlog_by_age(user=history["manager"], now=NOW)
    }
    assert backlog["1-3 days"] == (2, 2)


def test_a_conversation_started_within_the_minute_is_in_the_youngest_backlog_bucket(history):
    ingest(channel=history["x"], posts=[post("e1", author="eve", at=NOW + timedelta(seconds=20))])
    facts_refresh()
    later = NOW + timedelta(seconds=40)  # the same minute
    backlog = backlog_by_age(user=history["manager"], now=later)
    assert backlog[0][0] == "under 1 h"
    assert backlog[0][1:] == (1, 1)
    total = summary(user=history["manager"], range_=WEEK).value(Metric.BACKLOG)
    assert sum(open_ for _, open_, _ in backlog) == total


def test_a_rebuild_gives_the_same_rows(history):
    def rows():
        return (
            list(ConversationFact.objects.order_by("pk").values()),
            sorted(
                tuple(r.values())
                for r in ResponseFact.objects.values(
                    "conversation", "at", "seconds", "business_seconds", "is_first", "sla_met"
                )
            ),
        )

    incremental = rows()
    ConversationFact.objects.all().delete()
    ResponseFact.objects.all().delete()
    facts_rebuild()
    assert rows() == incremental


def test_changes_mark_facts_stale_until_refreshed(history):
    assert not StaleConversation.objects.exists()
    services.conversation_status_set(
        conversation=Conversation.objects.get(messages__external_id="c1"),
        status=Status.RESOLVED,
        actor=history["manager"],
        at=NOW,
    )
    assert StaleConversation.objects.count() == 1
    before = summary(user=history["manager"], range_=WEEK).backlog
    facts_refresh()
    assert not StaleConversation.objects.exists()
    assert summary(user=history["manager"], range_=WEEK).backlog == before - 1


def test_a_change_during_a_refresh_keeps_its_mark(history):
    c = Conversation.objects.get(messages__external_id="c1")
    services.conversation_status_set(
        conversation=c, status=Status.PENDING, actor=history["manager"], at=NOW
    )
    mark = StaleConversation.objects.get()
    # Another change lands after the refresh read the mark: its version moves on.
    StaleConversation.objects.filter(pk=mark.pk).update(version=mark.version + 1)
    from kpis.facts import _unmark

    _unmark([(mark.pk, mark.version)])
    assert StaleConversation.objects.filter(pk=mark.pk).exists()


def test_percentiles_interpolate_like_percentile_cont():
    assert interpolated([], 0.5) is None
    assert interpolated([7.0], 0.9) == 7.0
    assert interpolated([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert interpolated([0.0, 10.0], 0.9) == pytest.approx(9.0)


def test_scoped_to_the_channels_a_manager_may_see(history):
    team = TeamFactory(name="Facebook only")
    scoped = UserFactory(role=Role.MANAGER)
    TeamMembership.objects.create(team=team, user=scoped)
    ChannelAccess.objects.create(team=team, channel=history["facebook"])
    s = summary(user=scoped, range_=WEEK)
    assert s.new_conversations == 1
    assert s.inbound == 2


def test_a_tag_filter_keeps_equal_values_apart(history):
    tag = TagFactory()
    for conversation in Conversation.objects.all():
        conversation.tags.add(tag)
    # Both first responses took 20 minutes (facts are plain rows; set by hand here).
    ResponseFact.objects.filter(conversation=history["b"], is_first=True).update(seconds=1200)
    tagged = summary(user=history["manager"], range_=WEEK, filters=Filters(tag=tag.pk))
    assert tagged.speed.first_response.n == 2
    assert tagged.speed.first_response.mean == 1200
    assert tagged.new_conversations == 4


def test_a_first_response_target_passed_unanswered_is_a_miss_on_the_day_it_fell_due(history):
    manager, alice = history["manager"], history["alice"]
    c = Conversation.objects.get(messages__external_id="c1")
    d = Conversation.objects.get(messages__external_id="d1")
    # C and D came in on Wednesday 10:00 UTC (11:00 Berlin): their first responses fell due
    # at 12:00 Berlin, and the beat sees both pass at 11:05 UTC.
    assert {f.target for f in sla_check(now=utc(14, 11, 5))} == {"first_response"}
    facts_refresh()
    for fact in ConversationFact.objects.filter(conversation__in=[c, d]):
        assert (fact.first_response_met, fact.first_response_sla_day) == (False, date(2026, 1, 14))
        assert fact.first_response_at is None
    tag = TagFactory()
    for conversation in Conversation.objects.all():
        conversation.tags.add(tag)
    # A met; B answered late; C and D not answered.
    for filters in (Filters(), Filters(tag=tag.pk)):  # from the day counts, from the facts
        s = summary(user=manager, range_=WEEK, filters=filters)
        assert (s.first_response_met, s.first_response_missed) == (1, 3), filters
        assert s.first_response_sla == 25
        assert metric_value(
            user=manager, range_=WEEK, filters=filters, metric=Metric.FIRST_RESPONSE_SLA
        ) == pytest.approx(25)
        # Only the responses count in the response times.
        assert s.speed.first_response.n == 2

    # Alice answers C on Friday: still missed, still on Wednesday.
    services.conversation_reply_create(
        conversation=c, author=alice, body="Sorry", at=utc(16, 9), delivery_status="sent"
    )
    facts_refresh()
    fact = ConversationFact.objects.get(conversation=c)
    assert (fact.first_response_met, fact.first_response_sla_day) == (False, date(2026, 1, 14))
    assert fact.first_response_at == utc(16, 9)
    friday = DateRange(date(2026, 1, 16), date(2026, 1, 16))
    for filters in (Filters(), Filters(tag=tag.pk)):
        s = summary(user=manager, range_=WEEK, filters=filters)
        assert (s.first_response_met, s.first_response_missed) == (1, 3), filters
        s = summary(user=manager, range_=friday, filters=filters)
        assert (s.first_response_met, s.first_response_missed) == (0, 0), filters
        assert s.speed.first_response.n == 1  # the response itself is Friday's
    refreshed = list(ConversationFact.objects.order_by("pk").values())
    facts_rebuild()
    assert list(ConversationFact.objects.order_by("pk").values()) == refreshed


def test_a_resolution_target_passed_while_open_is_a_miss_on_the_day_it_fell_due(history):
    manager, alice = history["manager"], history["alice"]
    c = Conversation.objects.get(messages__external_id="c1")
    d = Conversation.objects.get(messages__external_id="d1")
    # C and D came in on Wednesday 11:00 Berlin: 8 business hours run out on Thursday 11:00
    # Berlin (10:00 UTC), which the beat sees at 10:05 UTC (their first responses too).
    assert {f.target for f in sla_check(now=utc(15, 10, 5))} == {
        "first_response",
        "resolution",
    }
    facts_refresh()
    for fact in ConversationFact.objects.filter(conversation__in=[c, d]):
        assert (fact.resolution_met, fact.resolution_sla_day) == (False, date(2026, 1, 15))
        assert (fact.resolved_at, fact.resolved_day) == (None, None)
    tag = TagFactory()
    for conversation in Conversation.objects.all():
        conversation.tags.add(tag)
    # A and B resolved in time; C and D still open past their target.
    for filters in (Filters(), Filters(tag=tag.pk)):  # from the day counts, from the facts
        s = summary(user=manager, range_=WEEK, filters=filters)
        assert (s.resolution_met, s.resolution_missed) == (2, 2), filters
        assert s.resolution_sla == 50
        assert metric_value(
            user=manager, range_=WEEK, filters=filters, metric=Metric.RESOLUTION_SLA
        ) == pytest.approx(50)
        # Only resolutions count as resolved, and in the resolution times.
        assert s.outcomes.resolved == 2
        assert s.speed.resolution.n == 2
    # The agents' compliance counts their own resolutions only.
    rows = {r.name: r for r in agents(user=manager, range_=WEEK)}
    assert (rows["Alice"].sla_met, rows["Alice"].sla_missed) == (2, 0)

    # Alice resolves C on Friday: still missed, still on Thursday, and resolved on Friday.
    services.conversation_status_set(
        conversation=c, status=Status.RESOLVED, actor=alice, at=utc(16, 9)
    )
    facts_refresh()
    fact = ConversationFact.objects.get(conversation=c)
    assert (fact.resolution_met, fact.resolution_sla_day) == (False, date(2026, 1, 15))
    assert fact.resolved_day == date(2026, 1, 16)
    friday = DateRange(date(2026, 1, 16), date(2026, 1, 16))
    for filters in (Filters(), Filters(tag=tag.pk)):
        s = summary(user=manager, range_=WEEK, filters=filters)
        assert (s.resolution_met, s.resolution_missed) == (2, 2), filters
        s = summary(user=manager, range_=friday, filters=filters)
        assert (s.resolution_met, s.resolution_missed) == (0, 0), filters
        assert s.outcomes.resolved == 1  # the resolution itself is Friday's

    # D's customer is answered and the conversation resolved, then reopened on Monday: the new
    # round's target has not passed, so D counts nowhere until it is settled again.
    services.conversation_status_set(
        conversation=d, status=Status.RESOLVED, actor=alice, at=utc(16, 10)
    )
    services.conversation_status_set(conversation=d, status=Status.OPEN, actor=alice, at=utc(19, 9))
    facts_refresh()
    fact = ConversationFact.objects.get(conversation=d)
    assert (fact.resolution_met, fact.resolution_sla_day, fact.reopens) == (None, None, 1)
    s = summary(user=manager, range_=WEEK)
    assert (s.resolution_met, s.resolution_missed) == (2, 1)
    # Its new target, 8 business hours from Monday 10:00 Berlin (7 on Monday, 1 on Tuesday),
    # passes on Tuesday at 10:00 Berlin: missed on Tuesday.
    sla_check(now=utc(20, 9, 5))
    facts_refresh()
    fact = ConversationFact.objects.get(conversation=d)
    assert (fact.resolution_met, fact.resolution_sla_day) == (False, date(2026, 1, 20))
    refreshed = list(ConversationFact.objects.order_by("pk").values())
    facts_rebuild()
    assert list(ConversationFact.objects.order_by("pk").values()) == refreshed


def test_a_reopening_counts_against_the_day_of_the_first_resolution(history):
    manager, alice, a = history["manager"], history["alice"], history["a"]
    monday = DateRange(date(2026, 1, 12), date(2026, 1, 12))
    tuesday = DateRange(date(2026, 1, 13), date(2026, 1, 13))
    tag = TagFactory()
    for conversation in Conversation.objects.all():
        conversation.tags.add(tag)

    def reopen_rate(range_: DateRange, filters: Filters) -> tuple[int, int, float | None]:
        o = summary(user=manager, range_=range_, filters=filters).outcomes
        value = metric_value(
            user=manager, range_=range_, filters=filters, metric=Metric.REOPEN_RATE
        )
        assert value == o.reopen_rate
        return o.first_resolved, o.reopened, o.reopen_rate

    for filters in (Filters(), Filters(tag=tag.pk)):  # from the day counts, from the facts
        # B was first resolved on Tuesday, reopened and resolved again on Wednesday: Tuesday's
        # resolution did not hold, though nothing was resolved for good that day.
        assert reopen_rate(tuesday, filters) == (1, 1, 100), filters
        assert summary(user=manager, range_=tuesday, filters=filters).outcomes.resolved == 0
        # A, resolved on Monday, has held so far.
        assert reopen_rate(monday, filters) == (1, 0, 0), filters

    # Ann writes again on the next Monday: A reopens and stays open. Monday's resolution
    # failed; A is resolved nowhere now.
    ingest(channel=history["x"], posts=[post("a3", author="ann", reply_to="a2", at=utc(19, 9))])
    a.refresh_from_db()
    assert a.status not in ("resolved", "closed")
    facts_refresh()
    fact = ConversationFact.objects.get(conversation=a)
    assert (fact.first_resolved_day, fact.resolved_day, fact.reopens) == (
        date(2026, 1, 12),
        None,
        1,
    )
    for filters in (Filters(), Filters(tag=tag.pk)):
        assert reopen_rate(monday, filters) == (1, 1, 100), filters
        assert reopen_rate(WEEK, filters) == (2, 2, 100), filters
        assert summary(user=manager, range_=WEEK, filters=filters).outcomes.resolved == 1

    # Resolved again on Tuesday: still Monday's failure, and no first resolution on Tuesday.
    services.conversation_status_set(
        conversation=a, status=Status.RESOLVED, actor=alice, at=utc(20, 9)
    )
    facts_refresh()
    next_tuesday = DateRange(date(2026, 1, 20), date(2026, 1, 20))
    for filters in (Filters(), Filters(tag=tag.pk)):
        assert reopen_rate(monday, filters) == (1, 1, 100), filters
        assert reopen_rate(next_tuesday, filters) == (0, 0, None), filters
        assert summary(user=manager, range_=next_tuesday, filters=filters).outcomes.resolved == 1
    refreshed = list(ConversationFact.objects.order_by("pk").values())
    counted = day_counts()
    facts_rebuild()
    assert list(ConversationFact.objects.order_by("pk").values()) == refreshed
    assert day_counts() == counted


def test_periods_shift_back_by_their_length():
    r = DateRange(date(2026, 1, 9), date(2026, 1, 15))
    assert r.previous() == DateRange(date(2026, 1, 2), date(2026, 1, 8))
    assert DateRange.last(7, today=date(2026, 1, 15)) == r
    assert r.days == 7
    assert timedelta(days=r.days) == r.end - r.start + timedelta(days=1)


def test_figures_are_cached_until_facts_change(history, django_assert_num_queries):
    manager = history["manager"]
    manager.__dict__.pop("_scrm_access", None)  # read afresh, then kept
    first = summary(user=manager, range_=WEEK)
    backlog = backlog_by_age(user=manager, now=NOW)
    target = metric_value(user=manager, range_=WEEK, metric=Metric.BACKLOG)
    with django_assert_num_queries(0):
        assert summary(user=manager, range_=WEEK) == first
        assert backlog_by_age(user=manager, now=NOW + timedelta(seconds=30)) == backlog
        assert metric_value(user=manager, range_=WEEK, metric=Metric.BACKLOG) == target
    services.conversation_status_set(
        conversation=Conversation.objects.get(messages__external_id="c1"),
        status=Status.RESOLVED,
        actor=manager,
        at=NOW,
    )
    # Until the facts are computed again the cached figures stand; then they are read anew.
    assert summary(user=manager, range_=WEEK).backlog == first.backlog
    facts_refresh()
    assert summary(user=manager, range_=WEEK).backlog == first.backlog - 1
    assert sum(n for _, n, _ in backlog_by_age(user=manager, now=NOW)) == first.backlog - 1
    assert metric_value(user=manager, range_=WEEK, metric=Metric.BACKLOG) == target - 1


def test_the_beat_refresh_stops_in_time_and_leaves_the_rest_for_the_next(history):
    from kpis.tasks import refresh_until_current

    Conversation.objects.update(priority=3)  # all four marked stale
    assert StaleConversation.objects.count() == 4
    assert refresh_until_current(seconds=0, limit=1) == 1
    assert StaleConversation.objects.count() == 3
    assert refresh_until_current(seconds=60, limit=2) == 3
    assert not StaleConversation.objects.exists()
    assert set(ConversationFact.objects.values_list("priority", flat=True)) == {3}


@pytest.mark.django_db(transaction=True)
def test_the_first_response_sla_migration_moves_the_counts_and_settles_them_again(history):
    sla_check(now=utc(14, 11, 5))  # C and D pass their first-response target unanswered
    facts_refresh()

    def first_response_sla() -> tuple[int, int]:
        s = summary(user=history["manager"], range_=WEEK)
        return s.first_response_met, s.first_response_missed

    assert first_response_sla() == (1, 3)
    try:
        call_command("migrate", "kpis", "0019", verbosity=0)
        # Before: first responses by the day of the reply, the unanswered nowhere.
        row = DayCounts.objects.aggregate(
            met=Sum("first_response_met"), missed=Sum("first_response_missed")
        )
        assert (row["met"], row["missed"]) == (1, 1)
    finally:
        call_command("migrate", "kpis", verbosity=0)
    # The facts hold the replies' days; the misses are marked and settled by the refresh.
    b, c, d = (Conversation.objects.get(messages__external_id=e).pk for e in ("b1", "c1", "d1"))
    assert set(StaleConversation.objects.values_list("conversation_id", flat=True)) == {b, c, d}
    facts_refresh()
    assert first_response_sla() == (1, 3)
    counted = day_counts()
    facts_rebuild()
    assert day_counts() == counted


@pytest.mark.django_db(transaction=True)
def test_the_resolution_sla_migration_moves_the_counts_and_settles_them_again(history):
    sla_check(now=utc(15, 10, 5))  # C and D pass their resolution target while open
    facts_refresh()

    def resolution_sla() -> tuple[int, int]:
        s = summary(user=history["manager"], range_=WEEK)
        return s.resolution_met, s.resolution_missed

    assert resolution_sla() == (2, 2)
    try:
        call_command("migrate", "kpis", "0020", verbosity=0)
        # Before: resolutions by their day, the conversations still open nowhere.
        row = DayCounts.objects.aggregate(
            met=Sum("resolution_met"), missed=Sum("resolution_missed")
        )
        assert (row["met"], row["missed"]) == (2, 0)
    finally:
        call_command("migrate", "kpis", verbosity=0)
    # The facts hold the resolutions' days; the open breached ones are marked and settled.
    c, d = (Conversation.objects.get(messages__external_id=e).pk for e in ("c1", "d1"))
    assert set(StaleConversation.objects.values_list("conversation_id", flat=True)) >= {c, d}
    facts_refresh()
    assert resolution_sla() == (2, 2)
    counted = day_counts()
    facts_rebuild()
    assert day_counts() == counted


@pytest.mark.django_db(transaction=True)
def test_the_first_resolution_migration_moves_the_reopenings_and_settles_them_again(history):
    tuesday = DateRange(date(2026, 1, 13), date(2026, 1, 13))

    def reopenings(range_: DateRange) -> tuple[int, int]:
        o = summary(user=history["manager"], range_=range_).outcomes
        return o.first_resolved, o.reopened

    assert reopenings(tuesday) == (1, 1)
    try:
        call_command("migrate", "kpis", "0021", verbosity=0)
        # Before: B's reopening counted on Wednesday, with its last resolution.
        by_day = dict(DayCounts.objects.values_list("day").annotate(n=Sum("reopened")).order_by())
        assert (by_day.get(date(2026, 1, 13), 0), by_day[date(2026, 1, 14)]) == (0, 1)
    finally:
        call_command("migrate", "kpis", verbosity=0)
    # A, never reopened, has its resolution's day; B is marked and its first resolution found.
    a = ConversationFact.objects.get(conversation=history["a"])
    assert a.first_resolved_day == date(2026, 1, 12)
    assert set(StaleConversation.objects.values_list("conversation_id", flat=True)) == {
        history["b"].pk
    }
    on_tuesday = DayCounts.objects.filter(day=date(2026, 1, 13)).aggregate(
        first_resolved=Sum("first_resolved"), reopened=Sum("reopened")
    )
    assert on_tuesday == {"first_resolved": 0, "reopened": 0}
    facts_refresh()
    assert reopenings(tuesday) == (1, 1)
    assert reopenings(WEEK) == (2, 1)
    counted = day_counts()
    facts_rebuild()
    assert day_counts() == counted


def day_counts() -> list[dict[str, Any]]:
    """The day counts' rows that count something, without their ids."""
    key = ("day", "channel_id", "platform", "team_key", "priority")
    rows = DayCounts.objects.order_by(*key).values()
    return [
        {n: v for n, v in row.items() if n != "id"}
        for row in rows
        if any(v for n, v in row.items() if n not in ("id", *key))
    ]
