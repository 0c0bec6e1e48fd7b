"""The escalation counts the triggers keep equal a rebuild's, and the escalations a summary
reads from them equal those read from the facts, after facts are changed, moved and
deleted."""

from datetime import timedelta
from typing import Any

import pytest
from django.db.models import Max, Min

from conversations.models import Conversation, Department, EscalationOutcome
from governance.models import Role
from kpis import metrics
from kpis.facts import counts_rebuild, facts_compute
from kpis.metrics import DateRange, Filters
from kpis.models import ConversationFact, EscalationCounts
from tests.factories import DepartmentFactory, UserFactory
from tests.kpis.test_facts_reference import varied  # noqa: F401 (a fixture)

pytestmark = pytest.mark.django_db


def kept() -> set[tuple[Any, ...]]:
    """The counts, leaving out rows that hold only zeros."""
    columns = [f.attname for f in EscalationCounts._meta.concrete_fields if f.attname != "id"]
    return {row for row in EscalationCounts.objects.values_list(*columns) if any(row[4:])}


def outcomes(user: Any, range_: DateRange, filters: Filters) -> list[metrics.Outcomes]:
    return [
        metrics._summary(user=user, range_=range_, filters=filters).outcomes,
        metrics._summary(user=user, range_=range_.previous(), filters=filters).outcomes,
    ]


def test_counts_kept_by_the_triggers_equal_a_rebuild_and_the_facts(varied, monkeypatch):  # noqa: F811
    facts_compute(varied)
    escalated = ConversationFact.objects.filter(escalations__gt=0, resolved_day__isnull=False)
    assert escalated.count() >= 4
    pks = list(escalated.order_by("pk").values_list("pk", flat=True))
    # Changed by hand: an outcome, a department, a resolution moved to another day, an
    # escalation taken away, a department's conversations set to none; a conversation deleted
    # (the ORM deletes its facts) and a department renamed.
    ConversationFact.objects.filter(pk=pks[0]).update(
        escalation_outcome=EscalationOutcome.MOVED_OFFLINE
    )
    ConversationFact.objects.filter(pk=pks[1]).update(escalation_department=DepartmentFactory())
    fact = ConversationFact.objects.get(pk=pks[2])
    ConversationFact.objects.filter(pk=pks[2]).update(
        resolved_day=fact.resolved_day - timedelta(days=3)
    )
    ConversationFact.objects.filter(pk=pks[3]).update(escalations=0)
    Conversation.objects.get(pk=pks[-1]).delete()
    department = Department.objects.filter(
        pk__in=escalated.exclude(escalation_department=None).values("escalation_department")
    ).first()
    assert department is not None
    ConversationFact.objects.filter(escalation_department=department).update(
        escalation_department=None
    )
    other = Department.objects.exclude(pk=department.pk).order_by("pk").first()
    assert other is not None
    Department.objects.filter(pk=other.pk).update(name="Renamed")
    by_triggers = kept()
    assert by_triggers
    counts_rebuild()
    assert kept() == by_triggers

    days = ConversationFact.objects.aggregate(first=Min("resolved_day"), last=Max("resolved_day"))
    whole = DateRange(days["first"], days["last"])
    part = DateRange(days["first"] + timedelta(days=3), days["last"] - timedelta(days=3))
    channel = ConversationFact.objects.values_list("channel_id", flat=True).first()
    scopes = [Filters(), Filters(channel=channel)]
    admin = UserFactory(role=Role.ADMIN)
    from_counts = [outcomes(admin, r, f) for r in (whole, part) for f in scopes]
    monkeypatch.setattr(metrics, "escalation_counts", lambda user, filters: None)
    from_facts = [outcomes(admin, r, f) for r in (whole, part) for f in scopes]
    assert from_counts == from_facts
    assert from_counts[0][0].by_outcome and from_counts[0][0].by_department
    assert {"A manager", "Renamed"} <= set(dict(from_counts[0][0].by_department))


def test_filters_the_counts_do_not_keep_read_the_facts():
    assert metrics.escalation_counts(UserFactory(role=Role.ADMIN), Filters(team=1)) is None
    assert metrics.escalation_counts(UserFactory(role=Role.ADMIN), Filters(channel=1)) is not None
