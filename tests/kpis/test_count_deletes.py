"""Deleting a channel's conversations and then the channel (a channel with conversations is
protected), or an agent, leaves every count the triggers keep equal to a rebuild from the facts
that remain."""

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import models

from channels_ingest.models import ChannelAccount
from conversations.models import Conversation
from kpis.facts import counts_rebuild, facts_compute, facts_refresh
from kpis.models import (
    AgentCounts,
    AgentDurations,
    ContactCounts,
    ConversationFact,
    DayCounts,
    DurationCounts,
    EscalationCounts,
)
from tests.kpis.test_facts_reference import varied  # noqa: F401 (a fixture)

pytestmark = pytest.mark.django_db

COUNTS: list[type[models.Model]] = [
    DayCounts,
    DurationCounts,
    ContactCounts,
    AgentCounts,
    EscalationCounts,
    AgentDurations,
]


def counted(model: type[models.Model]) -> set[tuple[Any, ...]]:
    """The rows of a count table that count something: a rebuild leaves out those that came to
    hold only zeros, the triggers may keep them. The key is what the table's unique constraint
    names; every other column counts."""
    [unique] = [c for c in model._meta.constraints if isinstance(c, models.UniqueConstraint)]
    fields = {f.name: f.attname for f in model._meta.concrete_fields}
    keys = [fields[name] for name in unique.fields]
    counters = [attname for name, attname in fields.items() if attname not in keys and name != "id"]
    rows = model._default_manager.values_list(*keys, *counters)
    return {row for row in rows if any(row[len(keys) :])}


def all_counted() -> dict[str, set[tuple[Any, ...]]]:
    return {model.__name__: counted(model) for model in COUNTS}


def refreshed() -> None:
    while facts_refresh():
        pass


def test_deleting_a_channel_leaves_the_counts_of_the_others_as_a_rebuild_has_them(varied):  # noqa: F811
    facts_compute(varied)
    gone = ChannelAccount.objects.get(pk=ConversationFact.objects.values("channel_id")[:1])
    assert ConversationFact.objects.exclude(channel=gone).exists()
    Conversation.objects.filter(channel=gone).delete()
    gone.delete()
    refreshed()
    assert not ConversationFact.objects.filter(channel_id=gone.pk).exists()
    for model in COUNTS:
        assert not model.objects.filter(channel_id=gone.pk).exists(), model.__name__
    by_triggers = all_counted()
    assert any(by_triggers.values())
    counts_rebuild()
    assert all_counted() == by_triggers


def test_deleting_an_agent_leaves_the_counts_as_a_rebuild_has_them(varied):  # noqa: F811
    facts_compute(varied)
    agent_id = (
        ConversationFact.objects.exclude(assignee=None).values_list("assignee", flat=True).first()
    )
    assert agent_id is not None
    User.objects.get(pk=agent_id).delete()
    refreshed()
    by_triggers = all_counted()
    counts_rebuild()
    assert all_counted() == by_triggers
