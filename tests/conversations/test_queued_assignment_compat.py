"""Timeline entries stored before rules' names left the top level still read as before, and a
hand-out from the queue marks the conversation for the KPIs."""

from datetime import UTC, datetime

import pytest

from conversations.models import ConversationEvent, EventKind
from conversations.selectors import conversation_timeline
from tests.factories import ConversationFactory

pytestmark = pytest.mark.django_db


def test_older_rule_applied_events_with_a_top_level_name_still_display():
    conversation = ConversationFactory()
    at = datetime(2026, 1, 5, 12, tzinfo=UTC)
    ConversationEvent.objects.create(
        conversation=conversation,
        kind=EventKind.RULE_APPLIED,
        created_at=at,
        data={"name": "Old A, Old B", "rules": [{"rule": 1, "name": "Old A", "event": "x"}]},
    )
    ConversationEvent.objects.create(
        conversation=conversation,
        kind=EventKind.CREATED,
        created_at=at,
        data={"name": "Legacy", "rules": [{"rule": 1, "name": "Other", "event": "x"}]},
    )
    ConversationEvent.objects.create(
        conversation=conversation,
        kind=EventKind.RULE_APPLIED,
        created_at=at,
        data={"rules": [{"rule": 1, "name": "New", "event": "x"}, {"rule": 2, "name": "New"}]},
    )
    names = [
        e["name"]
        for e in conversation_timeline(conversation=conversation).entries
        if e["kind_label"] == "Routing rule applied"
    ]
    assert sorted(names) == ["Legacy", "New", "Old A, Old B"]


def test_a_hand_out_marks_the_conversation_stale_for_the_kpis(django_capture_on_commit_callbacks):
    from conversations import presence
    from conversations.models import Conversation
    from conversations.routing import queued_assign
    from kpis.models import StaleConversation
    from tests.conversations.test_queued_assignment import _auto_rule, _ingest, _team
    from tests.factories import UserFactory, post

    ann = UserFactory(role="agent")
    _, channel = _team(ann)
    _auto_rule()
    _ingest(channel, post("p1"), capture=django_capture_on_commit_callbacks)
    StaleConversation.objects.all().delete()
    presence.agent_seen(user_id=ann.pk)
    assert queued_assign() == 1
    assert StaleConversation.objects.filter(conversation_id=Conversation.objects.get().pk).exists()
