"""The day counts the triggers keep equal a rebuild's, and the figures read from them equal
those read from the facts, on the varied history of the facts' reference test."""

import math
from dataclasses import fields, is_dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.db.models import Max, Min

from channels_ingest.models import ChannelAccount
from conversations.models import Conversation
from governance.models import ChannelAccess, Role, TeamMembership
from kpis import metrics
from kpis.facts import counts_rebuild, facts_compute, facts_refresh
from kpis.metrics import DateRange, Filters
from kpis.models import (
    AgentCounts,
    AgentDurations,
    ContactCounts,
    ConversationFact,
    DayCounts,
    EscalationCounts,
    MessageDay,
    Metric,
    ResponseFact,
    StaleConversation,
)
from tests.factories import TeamFactory, UserFactory
from tests.kpis.test_facts_reference import varied  # noqa: F401 (a fixture)

pytestmark = pytest.mark.django_db

COUNTERS = [
    f.attname
    for f in DayCounts._meta.concrete_fields
    if f.attname not in ("id", "day", "channel_id", "platform", "team_key", "priority")
]


def kept() -> dict[tuple[Any, ...], tuple[int, ...]]:
    """The counts by key, leaving out rows that hold only zeros."""
    rows = {}
    for row in DayCounts.objects.values_list(
        "day", "channel_id", "platform", "team_key", "priority", *COUNTERS
    ):
        if any(row[5:]):
            rows[row[:5]] = row[5:]
    return rows


def other_counts() -> dict[str, set[tuple[Any, ...]]]:
    """The contact, agent, agent duration and escalation counts, leaving out rows that hold
    only zeros."""
    found = {}
    for model, key in (
        (ContactCounts, 4),
        (AgentCounts, 4),
        (AgentDurations, 5),
        (EscalationCounts, 4),
    ):
        columns = [f.attname for f in model._meta.concrete_fields if f.attname != "id"]
        found[model.__name__] = {
            row for row in model.objects.values_list(*columns) if any(row[key:])
        }
    return found


def test_counts_kept_by_the_triggers_equal_a_rebuild(varied):  # noqa: F811
    facts_compute(varied)
    assert DayCounts.objects.exists()
    # A refresh that changes some facts, facts changed by hand, a conversation deleted (the
    # ORM deletes its facts), references to a team set to NULL (as deleting the team does).
    Conversation.objects.filter(pk__in=varied[::4]).update(priority=3)
    ConversationFact.objects.filter(conversation_id__in=varied[1::4]).update(breaches=5)
    ResponseFact.objects.filter(conversation_id__in=varied[2::4]).update(seconds=4000)
    facts_refresh(limit=len(varied))
    Conversation.objects.get(pk=varied[3]).delete()
    MessageDay.objects.exclude(team=None).update(team=None)
    StaleConversation.objects.all().delete()
    kept_by_triggers, others = kept(), other_counts()
    assert all(others.values())
    counts_rebuild()
    assert kept() == kept_by_triggers
    assert other_counts() == others
    assert sum(row[COUNTERS.index("started")] for row in kept_by_triggers.values()) == (
        ConversationFact.objects.count()
    )


def same_figures(found: Any, expected: Any, name: str = "") -> bool:
    """Equal figures, but for means: a mean is a sum divided by a count, and the counts add
    whole millionths (of a second, of a sentiment score) where the facts add fractions in
    the order they come. Medians and percentiles, like every count, must be equal."""
    if is_dataclass(found) and not isinstance(found, type):
        return type(found) is type(expected) and all(
            same_figures(getattr(found, f.name), getattr(expected, f.name), f.name)
            for f in fields(found)
        )
    if isinstance(found, list | tuple):
        return len(found) == len(expected) and all(
            same_figures(a, b, name) for a, b in zip(found, expected, strict=True)
        )
    if name in ("mean", "mean_change") and isinstance(found, float):
        return isinstance(expected, float) and math.isclose(
            found, expected, rel_tol=1e-9, abs_tol=1e-6
        )
    return bool(found == expected)


def _figures(user: Any, range_: DateRange, filters: Filters) -> list[Any]:
    found: list[Any] = [
        metrics._summary(user=user, range_=range_, filters=filters),
        metrics._response_distribution(user=user, range_=range_, filters=filters),
        metrics._agents(user=user, range_=range_, filters=filters),
    ]
    for grain in metrics.GRAINS:
        found.append(metrics._series(user=user, range_=range_, filters=filters, grain=grain))
    for metric in Metric:
        found.append(
            metrics._metric_value(user=user, range_=range_, filters=filters, metric=metric)
        )
    found.append(metrics._now(user, filters))
    # The backlog by age at moments that put its open conversations in every bucket.
    latest = ConversationFact.objects.aggregate(at=Max("started_at"))["at"]
    for days in (0, 1, 3, 6, 7, 8, 9, 30):
        for hours in (0, 1, 13):
            now = latest + timedelta(days=days, hours=hours)
            found.append(metrics._backlog_by_age(user=user, filters=filters, now=now))
    return found


def test_figures_from_the_counts_equal_those_from_the_facts(varied, monkeypatch):  # noqa: F811
    facts_compute(varied)
    admin = UserFactory(role=Role.ADMIN)
    days = ConversationFact.objects.aggregate(first=Min("day"), last=Max("day"))
    whole = DateRange(days["first"], days["last"] + timedelta(days=30))
    part = DateRange(days["first"] + timedelta(days=3), days["first"] + timedelta(days=20))
    fact = ConversationFact.objects.exclude(team=None).first()
    assert fact is not None
    scopes = [
        Filters(),
        Filters(channel=fact.channel_id),
        Filters(platform=fact.platform),
        Filters(team=fact.team_id),
        Filters(priority=fact.priority),
    ]
    # A manager who sees one channel, and one who sees both.
    managers = []
    for channels in ([fact.channel_id], ChannelAccount.objects.values_list("pk", flat=True)):
        manager, team = UserFactory(role=Role.MANAGER), TeamFactory()
        TeamMembership.objects.create(team=team, user=manager)
        for pk in channels:
            ChannelAccess.objects.create(team=team, channel_id=pk)
        managers.append(manager)
    users = [admin, *managers]
    from_counts = [_figures(u, r, f) for u in users for r in (whole, part) for f in scopes]
    monkeypatch.setattr(metrics, "day_counts", lambda user, filters: None)
    monkeypatch.setattr(metrics, "duration_counts", lambda user, filters: None)
    monkeypatch.setattr(metrics, "contact_counts", lambda user, filters: None)
    monkeypatch.setattr(metrics, "agent_counts", lambda user, filters: None)
    monkeypatch.setattr(metrics, "escalation_counts", lambda user, filters: None)
    monkeypatch.setattr(metrics, "agent_durations", lambda user, filters: None)
    from_facts = [_figures(u, r, f) for u in users for r in (whole, part) for f in scopes]
    assert same_figures(from_counts, from_facts)
    assert from_counts[0][0].inbound > 0 and from_counts[0][0].new_conversations > 0


@pytest.mark.parametrize("from_facts", [False, True])
def test_a_baseline_holds_the_figures_of_the_summary(varied, monkeypatch, from_facts):  # noqa: F811
    facts_compute(varied)
    admin = UserFactory(role=Role.ADMIN)
    days = ConversationFact.objects.aggregate(first=Min("day"), last=Max("day"))
    fact = ConversationFact.objects.exclude(team=None).first()
    assert fact is not None
    if from_facts:
        for name in ("day_counts", "duration_counts", "contact_counts", "escalation_counts"):
            monkeypatch.setattr(metrics, name, lambda user, filters: None)
    ranges = [
        DateRange(days["first"], days["last"]),
        DateRange(days["first"] + timedelta(days=3), days["first"] + timedelta(days=20)),
    ]
    for range_ in ranges:
        for filters in (Filters(), Filters(channel=fact.channel_id), Filters(team=fact.team_id)):
            found = metrics._summary(user=admin, range_=range_, filters=filters)
            baseline = metrics._baseline(user=admin, range_=range_, filters=filters)
            assert baseline.values == {m: found.value(m) for m in metrics.BASELINE_METRICS}
            assert (
                baseline.first_response_median,
                baseline.next_response_median,
                baseline.resolution_median,
            ) == (
                found.speed.first_response.median,
                found.speed.next_response.median,
                found.speed.resolution.median,
            )
            assert found.speed.first_response.median is not None
