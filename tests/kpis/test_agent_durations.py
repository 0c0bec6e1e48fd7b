"""The agents' duration counts the triggers keep equal a rebuild's, and each agent's medians
read from them equal those of sorting the facts, after facts are changed and deleted."""

from datetime import timedelta
from typing import Any

import pytest
from django.db.models import Max, Min

from conversations.models import Conversation
from governance.models import Role
from kpis import metrics
from kpis.facts import counts_rebuild, facts_compute
from kpis.metrics import DateRange, Filters
from kpis.models import AgentDurations, ConversationFact, DurationMeasure, ResponseFact
from tests.factories import UserFactory
from tests.kpis.test_facts_reference import varied  # noqa: F401 (a fixture)

pytestmark = pytest.mark.django_db


def kept() -> set[tuple[Any, ...]]:
    """The counts, leaving out rows that hold only zeros."""
    columns = [f.attname for f in AgentDurations._meta.concrete_fields if f.attname != "id"]
    return {row for row in AgentDurations.objects.values_list(*columns) if any(row[5:])}


def sorted_medians(user: Any, range_: DateRange, filters: Filters) -> dict[int, dict[int, Any]]:
    """Each agent's medians from every fact of the range, sorted."""
    responses = metrics.response_facts(user, filters).filter(
        metrics._in(range_), agent__isnull=False, is_first=True
    )
    resolved = metrics.conversation_facts(user, filters).filter(
        metrics._in(range_, "resolved_day"), resolved_by__isnull=False
    )
    return {
        DurationMeasure.FIRST_RESPONSE: {
            pk: s.median for pk, s in metrics.grouped_spread(responses, "agent", "seconds").items()
        },
        DurationMeasure.RESOLUTION: {
            pk: s.median
            for pk, s in metrics.grouped_spread(
                resolved, "resolved_by", "resolution_seconds"
            ).items()
        },
    }


def test_counts_kept_by_the_triggers_equal_a_rebuild_and_the_facts(varied):  # noqa: F811
    facts_compute(varied)
    responses = ResponseFact.objects.filter(is_first=True, agent__isnull=False).order_by("pk")
    pks = list(responses.values_list("pk", flat=True))
    assert len(pks) >= 4
    # Changed by hand: a duration, an agent, an agent set to none (as deleting a user does),
    # a resolution time; a conversation deleted (the ORM deletes its facts).
    ResponseFact.objects.filter(pk=pks[0]).update(seconds=0)
    other = ResponseFact.objects.exclude(agent=None).exclude(agent_id=responses[1].agent_id)
    ResponseFact.objects.filter(pk=pks[1]).update(agent_id=other.values("agent_id")[:1])
    ResponseFact.objects.filter(pk=pks[2]).update(agent=None)
    resolved = ConversationFact.objects.exclude(resolved_by=None).order_by("pk")
    ConversationFact.objects.filter(pk=resolved[0].pk).update(resolution_seconds=12345.5)
    Conversation.objects.get(pk=ResponseFact.objects.get(pk=pks[-1]).conversation_id).delete()
    by_triggers = kept()
    assert by_triggers
    counts_rebuild()
    assert kept() == by_triggers

    admin = UserFactory(role=Role.ADMIN)
    days = ConversationFact.objects.aggregate(first=Min("day"), last=Max("day"))
    whole = DateRange(days["first"], days["last"] + timedelta(days=30))
    part = DateRange(days["first"] + timedelta(days=3), days["first"] + timedelta(days=20))
    channel = ConversationFact.objects.values_list("channel_id", flat=True).first()
    for range_ in (whole, part):
        for filters in (Filters(), Filters(channel=channel)):
            found = metrics.agent_medians(admin, filters, range_)
            assert found == sorted_medians(admin, range_, filters)
    assert found is not None and found[DurationMeasure.FIRST_RESPONSE]


def test_filters_the_counts_do_not_keep_read_the_facts():
    admin = UserFactory(role=Role.ADMIN)
    assert metrics.agent_durations(admin, Filters(team=1)) is None
    assert metrics.agent_durations(admin, Filters(channel=1)) is not None
