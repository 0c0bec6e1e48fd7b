"""Targets judged against the figures, and the weekly digest that reports them."""

from datetime import UTC, date, datetime
from unittest import mock

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core import mail

from governance.models import Role
from kpis.digest import digest_send, due_period, recipients
from kpis.metrics import DateRange
from kpis.models import DigestRun, KpiTarget, Metric, Period
from kpis.targets import (
    AT_RISK,
    MET,
    MISSED,
    NO_DATA,
    evaluate,
    judge,
    period_range,
    previous_period,
    scope_of,
    targets_status,
)
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_judging_in_both_directions():
    # Median first response (lower is better), target 15 min, margin 10%.
    assert judge(Metric.FIRST_RESPONSE_MEDIAN, 15, 15, 10) == MET
    assert judge(Metric.FIRST_RESPONSE_MEDIAN, 16.5, 15, 10) == AT_RISK
    assert judge(Metric.FIRST_RESPONSE_MEDIAN, 16.6, 15, 10) == MISSED
    # In-channel resolution (higher is better), target 70%.
    assert judge(Metric.IN_CHANNEL_RESOLUTION, 71, 70, 10) == MET
    assert judge(Metric.IN_CHANNEL_RESOLUTION, 63, 70, 10) == AT_RISK
    assert judge(Metric.IN_CHANNEL_RESOLUTION, 62.9, 70, 10) == MISSED
    assert judge(Metric.IN_CHANNEL_RESOLUTION, None, 70, 10) == NO_DATA


def test_periods():
    wednesday = date(2026, 1, 14)
    assert period_range(Period.WEEK, wednesday) == DateRange(date(2026, 1, 12), wednesday)
    assert period_range(Period.MONTH, wednesday) == DateRange(date(2026, 1, 1), wednesday)
    assert period_range(Period.QUARTER, date(2026, 5, 2)) == DateRange(
        date(2026, 4, 1), date(2026, 5, 2)
    )
    assert previous_period(Period.WEEK, wednesday) == DateRange(date(2026, 1, 5), date(2026, 1, 11))
    assert previous_period(Period.MONTH, wednesday) == DateRange(
        date(2025, 12, 1), date(2025, 12, 31)
    )
    assert previous_period(Period.QUARTER, date(2026, 1, 1)) == DateRange(
        date(2025, 10, 1), date(2025, 12, 31)
    )


def test_targets_against_the_history(history):
    manager = history["manager"]
    x = history["x"]
    since = {"valid_from": date(2026, 1, 1)}
    on_x = KpiTarget.objects.create(
        metric=Metric.FIRST_RESPONSE_MEDIAN, value=15, period=Period.WEEK, channel=x, **since
    )
    everywhere = KpiTarget.objects.create(
        metric=Metric.IN_CHANNEL_RESOLUTION, value=70, period=Period.WEEK, **since
    )
    volume = KpiTarget.objects.create(metric=Metric.INBOUND, value=14, period=Period.WEEK, **since)
    wednesday = date(2026, 1, 14)

    first = evaluate(on_x, user=manager, today=wednesday)
    # This week on X nobody was answered yet; the week before, Alice took 20 minutes.
    assert first.range == DateRange(date(2026, 1, 12), wednesday)
    assert first.value is None
    assert first.status == NO_DATA
    assert first.previous == pytest.approx(20)

    resolution = evaluate(everywhere, user=manager, today=wednesday)
    assert resolution.value == 50  # A in the channel, B escalated and abandoned
    assert resolution.status == MISSED
    assert resolution.previous is None  # nothing was resolved the week before

    # 14 inbound a week is 6 by Wednesday (3 of 7 days); 4 came in since Monday.
    count = evaluate(volume, user=manager, today=wednesday)
    assert count.goal == pytest.approx(6)
    assert count.value == 4
    assert count.status == MISSED

    statuses = targets_status(user=manager, today=wednesday)
    assert [s.target for s in statuses] == list(
        KpiTarget.objects.order_by("metric", "period", "pk")
    )


def test_a_counts_trend_compares_with_the_period_before_at_the_same_pace():
    target = KpiTarget(metric=Metric.NEW_CONVERSATIONS, value=80, period=Period.WEEK)
    tuesday = date(2026, 11, 17)
    this_week, last_week = period_range(Period.WEEK, tuesday), previous_period(Period.WEEK, tuesday)
    scope = scope_of(target)

    def status(now: float, before: float):
        figures = {
            (this_week, scope, target.metric): now,
            (last_week, scope, target.metric): before,
        }
        return evaluate(target, user=AnonymousUser(), today=tuesday, cache=figures)

    # 30 in two days is 15 a day; the week before had 88, 12.6 a day: better, not worse.
    quicker = status(30, 88)
    assert quicker.previous == 88
    assert quicker.previous_pace == pytest.approx(88 * 2 / 7)
    assert quicker.improved is True
    assert status(20, 88).improved is False
    # Medians and shares are not counts: compared as they are.
    median = KpiTarget(metric=Metric.FIRST_RESPONSE_MEDIAN, value=15, period=Period.WEEK)
    figures = {(this_week, scope, median.metric): 10, (last_week, scope, median.metric): 12}
    judged = evaluate(median, user=AnonymousUser(), today=tuesday, cache=figures)
    assert (judged.previous_pace, judged.change, judged.improved) == (12, -2, True)


def test_targets_not_yet_in_force_are_left_out(history):
    KpiTarget.objects.create(
        metric=Metric.INBOUND, value=1, period=Period.WEEK, valid_from=date(2026, 2, 1)
    )
    assert targets_status(user=history["manager"], today=date(2026, 1, 14)) == []


def test_the_digest_is_due_from_monday_morning(settings):
    settings.TIME_ZONE = "Europe/Berlin"
    settings.SCRM_DIGEST_HOUR = 7
    # Monday 19 January 05:59 UTC is 06:59 in Berlin: not yet.
    assert due_period(datetime(2026, 1, 19, 5, 59, tzinfo=UTC)) is None
    week = DateRange(date(2026, 1, 12), date(2026, 1, 18))
    assert due_period(datetime(2026, 1, 19, 6, 0, tzinfo=UTC)) == week
    assert due_period(datetime(2026, 1, 21, 12, 0, tzinfo=UTC)) == week
    december = DateRange(date(2025, 12, 1), date(2025, 12, 31))
    assert due_period(datetime(2026, 1, 1, 5, 0, tzinfo=UTC), "month") is None
    assert due_period(datetime(2026, 1, 1, 6, 0, tzinfo=UTC), "month") == december
    assert due_period(datetime(2026, 1, 19, 6, 0, tzinfo=UTC), "quarter") == DateRange(
        date(2025, 10, 1), december.end
    )


def test_a_monthly_digest(history, settings):
    settings.SCRM_DIGEST_PERIOD = "month"
    assert digest_send(now=datetime(2026, 2, 1, 9, 0, tzinfo=UTC)) == 1
    assert "January 2026" in mail.outbox[0].subject
    # January against December: 4 new conversations, none before.
    assert "- New conversations: 4 (before: 0), better" in mail.outbox[0].body
    assert DigestRun.objects.get().period == "month"


def test_the_digest_goes_once_to_managers_and_admins(history, settings):
    settings.SCRM_DIGEST_HOUR = 7
    KpiTarget.objects.create(
        metric=Metric.FIRST_RESPONSE_MEDIAN,
        value=30,
        period=Period.WEEK,
        valid_from=date(2026, 1, 1),
    )
    admin = UserFactory(role=Role.ADMIN)
    UserFactory(role=Role.MANAGER, email="")  # nowhere to send it
    UserFactory(role=Role.MANAGER, is_active=False)
    assert set(recipients()) == {admin, history["manager"]}

    monday = datetime(2026, 1, 19, 8, 0, tzinfo=UTC)
    assert digest_send(now=monday) == 2
    assert sorted(m.to[0] for m in mail.outbox) == sorted([admin.email, history["manager"].email])
    message = mail.outbox[0]
    assert "week of Jan 12" in message.subject
    html = message.alternatives[0][0]
    # The week of 12-18 January against the week before: B, C and D started (A the week
    # before); only B was answered for the first time, after 10 hours.
    assert "- New conversations: 3 (before: 1), better" in message.body
    assert "- Median first response (min): 10.0 h (before: 20.0 min), worse" in message.body
    assert (
        "Median first response (min) (weekly, All channels): 10.0 h, target ≤ 30.0 min: Missed"
        in message.body
    )
    assert "New conversations" in html and "10.0 h" in html and "Missed" in html
    assert "http://localhost:8000/reports/" in message.body

    assert digest_send(now=monday) == 0
    assert len(mail.outbox) == 2
    run = DigestRun.objects.get()
    assert run.sent_at == monday
    assert sorted(run.sent_to) == sorted([admin.pk, history["manager"].pk])


def test_a_digest_stopped_part_way_sends_only_the_rest(history, settings):
    UserFactory(role=Role.ADMIN)
    monday = datetime(2026, 1, 19, 8, 0, tzinfo=UTC)
    real_send = mail.EmailMessage.send
    calls = []

    def flaky(self, *args, **kwargs):
        calls.append(self.to[0])
        if len(calls) == 2:
            raise ConnectionError("mail server went away")
        return real_send(self, *args, **kwargs)

    with (
        mock.patch.object(mail.EmailMultiAlternatives, "send", flaky),
        pytest.raises(ConnectionError),
    ):
        digest_send(now=monday)
    assert len(mail.outbox) == 1
    assert DigestRun.objects.get().sent_at is None

    assert digest_send(now=monday) == 1
    assert len(mail.outbox) == 2
    assert len({m.to[0] for m in mail.outbox}) == 2


def test_the_digest_can_be_switched_off(history, settings):
    settings.SCRM_DIGEST_ENABLED = False
    assert digest_send(now=datetime(2026, 1, 19, 8, 0, tzinfo=UTC)) == 0
    assert not DigestRun.objects.exists()
