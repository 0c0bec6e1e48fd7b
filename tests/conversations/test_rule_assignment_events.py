"""Assignments made by rules, named or automatic, in the ingest or on an SLA breach, reach
"conversation.assigned" webhook subscribers as an agent's assignments do, once each."""

from datetime import UTC, datetime, timedelta

import pytest
import responses

from channels_ingest.pipeline import ingest
from conversations import presence
from conversations.models import Conversation, RoutingRule, SlaPolicy, WebhookCall, WebhookEndpoint
from conversations.sla import sla_check
from tests.factories import (
    ChannelAccessFactory,
    ChannelFactory,
    TeamFactory,
    TeamMembershipFactory,
    UserFactory,
    post,
)

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
HOOK = "https://crm.example.com/hook"


def _rule(events, actions):
    return RoutingRule.objects.create(
        name=f"Rule {RoutingRule.objects.count() + 1}",
        events=list(events),
        conditions=[],
        actions=list(actions),
        position=RoutingRule.objects.count(),
    )


def _team_channel(agent, *, can_reply=True):
    team = TeamFactory()
    TeamMembershipFactory(team=team, user=agent)
    channel = ChannelFactory(default_team=team)
    ChannelAccessFactory(channel=channel, team=team, can_reply=can_reply)
    return channel


def _assigned_calls():
    return list(
        WebhookCall.objects.filter(event="conversation.assigned").values_list("payload", flat=True)
    )


def test_a_breach_rule_assigning_an_agent_publishes_conversation_assigned(
    django_capture_on_commit_callbacks,
):
    agent = UserFactory(role="agent")
    channel = _team_channel(agent)
    SlaPolicy.objects.create(name="Fast", first_response_minutes=10)
    WebhookEndpoint.objects.create(name="CRM", url=HOOK, events=["conversation.assigned"])
    _rule(["sla_breached"], [{"type": "assign", "value": agent.pk}])
    ingest(channel=channel, posts=[post("p1", at=T0)])

    with responses.RequestsMock(assert_all_requests_are_fired=False) as stub:
        stub.post(HOOK, status=200)
        with django_capture_on_commit_callbacks(execute=True):
            sla_check(now=T0 + timedelta(hours=1))
            sla_check(now=T0 + timedelta(hours=2))

    conversation = Conversation.objects.get()
    assert conversation.assignee_id == agent.pk
    [payload] = _assigned_calls()
    assert payload["data"]["conversation"]["assignee"] == agent.pk
    assert payload["data"]["details"]["assignee"] == agent.pk


def test_auto_assignment_by_a_rule_publishes_conversation_assigned(
    django_capture_on_commit_callbacks,
):
    agent = UserFactory(role="agent")
    channel = _team_channel(agent)
    presence.agent_seen(user_id=agent.pk)
    WebhookEndpoint.objects.create(name="CRM", url=HOOK, events=["conversation.assigned"])
    _rule(["conversation_created"], [{"type": "assign", "value": "auto"}])
    with responses.RequestsMock(assert_all_requests_are_fired=False) as stub:
        stub.post(HOOK, status=200)
        with django_capture_on_commit_callbacks(execute=True):
            ingest(channel=channel, posts=[post("p1", at=T0)])
    assert Conversation.objects.get().assignee_id == agent.pk
    [payload] = _assigned_calls()
    assert payload["data"]["details"]["auto"] is True


def test_a_refused_assignment_is_not_published(django_capture_on_commit_callbacks):
    agent = UserFactory(role="agent")
    channel = _team_channel(agent, can_reply=False)
    WebhookEndpoint.objects.create(name="CRM", url=HOOK, events=["conversation.assigned"])
    _rule(["conversation_created"], [{"type": "assign", "value": agent.pk}])
    with responses.RequestsMock(assert_all_requests_are_fired=False) as stub:
        stub.post(HOOK, status=200)
        with django_capture_on_commit_callbacks(execute=True):
            ingest(channel=channel, posts=[post("p1", at=T0)])
    assert Conversation.objects.get().assignee_id is None
    assert _assigned_calls() == []


def test_rules_on_a_reopening_by_hand_that_fail_are_said_on_the_timeline(monkeypatch):
    from django.db import OperationalError

    from conversations.models import EventKind, Status
    from conversations.selectors import conversation_timeline
    from conversations.services import conversation_status_set

    agent = UserFactory()
    ingest(channel=ChannelFactory(), posts=[post("p1", at=T0)])
    conversation = conversation_status_set(
        conversation=Conversation.objects.get(), status=Status.RESOLVED, actor=agent
    )
    _rule(["conversation_reopened"], [{"type": "set_priority", "value": 4}])

    def locked(*args, **kwargs):
        raise OperationalError("lock timeout")

    monkeypatch.setattr("conversations.routing.decisions_write", locked)
    reopened = conversation_status_set(conversation=conversation, status=Status.OPEN, actor=agent)

    assert reopened.status == Status.OPEN  # the agent's change stands
    failed = conversation.events.get(kind=EventKind.RULE_APPLIED)
    assert failed.data == {
        "event": "conversation_reopened",
        "rules_failed": "OperationalError: lock timeout",
    }
    [entry] = [
        e
        for e in conversation_timeline(conversation=conversation).entries
        if e["kind_label"] == "Routing rules failed"
    ]
    assert entry["detail"] == "on the reopening: OperationalError: lock timeout"
