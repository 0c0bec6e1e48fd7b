"""Auto-assignment: capacity counted across what the batch itself changes, and presence."""

from datetime import UTC, datetime, timedelta

import pytest

from channels_ingest.pipeline import ingest
from conversations import presence
from conversations.models import ACTIVE_STATUSES, Conversation, RoutingRule, Status
from governance.models import TeamMembership
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


def _rule(actions, events=("message_received",)):
    return RoutingRule.objects.create(
        name="Auto",
        events=list(events),
        conditions=[],
        actions=actions,
        position=RoutingRule.objects.count(),
    )


def _setup(capacity):
    ann = UserFactory(role="agent")
    team = TeamFactory()
    TeamMembershipFactory(team=team, user=ann)
    TeamMembership.objects.filter(team=team).update(capacity=capacity)
    channel = ChannelFactory(default_team=team)
    ChannelAccessFactory(channel=channel, team=team, can_reply=True)
    presence.agent_seen(user_id=ann.pk)
    return ann, team, channel


def _active_of(user):
    return Conversation.objects.filter(assignee=user, status__in=ACTIVE_STATUSES).count()


def test_a_conversation_reopened_in_the_same_batch_counts_towards_the_capacity():
    ann, _team, channel = _setup(capacity=1)
    _rule([{"type": "assign", "value": "auto"}])
    ingest(channel=channel, posts=[post("p1", author="a1", at=T0)])
    first = Conversation.objects.get(messages__external_id="p1")
    assert first.assignee_id == ann.pk
    # Ann resolves it: she is free again.
    Conversation.objects.filter(pk=first.pk).update(status=Status.RESOLVED, resolved_at=T0)
    assert _active_of(ann) == 0

    # One batch: the first customer writes again (reopening Ann's conversation, which she
    # keeps), and a new customer writes.
    ingest(
        channel=channel,
        posts=[
            post("p2", author="a1", reply_to="p1", at=T0 + timedelta(hours=1)),
            post("n1", author="a2", at=T0 + timedelta(hours=1, minutes=1)),
        ],
    )
    first.refresh_from_db()
    assert first.status == Status.OPEN and first.assignee_id == ann.pk
    # Capacity 1: the new conversation must wait in the queue.
    assert _active_of(ann) <= 1, "auto-assignment gave Ann more than her capacity"


def test_a_conversation_assigned_by_name_in_the_same_batch_counts_towards_the_capacity():
    ann, _team, channel = _setup(capacity=1)
    # VIP-like rule: "refund" goes to Ann by name; everything else is auto-assigned.
    RoutingRule.objects.create(
        name="Refunds to Ann",
        events=["message_received"],
        position=0,
        conditions=[{"field": "text", "op": "contains_any", "value": ["refund"]}],
        actions=[{"type": "assign", "value": ann.pk}],
        stop_processing=True,
    )
    RoutingRule.objects.create(
        name="Auto",
        events=["message_received"],
        position=1,
        conditions=[],
        actions=[{"type": "assign", "value": "auto"}],
    )
    ingest(
        channel=channel,
        posts=[
            post("r1", author="a1", body="I want a refund", at=T0),
            post("n1", author="a2", body="Where is my order", at=T0 + timedelta(minutes=1)),
        ],
    )
    assert Conversation.objects.get(messages__external_id="r1").assignee_id == ann.pk
    # Ann holds one already (named): auto-assignment must not give her a second one.
    assert Conversation.objects.get(messages__external_id="n1").assignee_id is None


def test_an_agent_who_logged_out_is_no_longer_given_work(client):
    ann, _team, channel = _setup(capacity=None)
    client.force_login(ann)
    client.get("/inbox/")  # online
    assert ann.pk in presence.agents_online(user_ids={ann.pk})
    client.post("/accounts/logout/")
    _rule([{"type": "assign", "value": "auto"}])
    ingest(channel=channel, posts=[post("p1", author="a1", at=T0)])
    assert Conversation.objects.get(messages__external_id="p1").assignee_id is None


def test_a_conversation_a_rule_moves_away_in_the_same_batch_frees_its_place():
    ann, team, channel = _setup(capacity=1)
    bob = UserFactory(role="agent")
    TeamMembershipFactory(team=team, user=bob)
    TeamMembership.objects.filter(user=bob).update(capacity=0)  # takes no auto-assigned work
    RoutingRule.objects.create(
        name="Refunds to Bob",
        events=["message_received"],
        position=0,
        conditions=[{"field": "text", "op": "contains_any", "value": ["refund"]}],
        actions=[{"type": "assign", "value": bob.pk}],
        stop_processing=True,
    )
    _rule([{"type": "assign", "value": "auto"}])
    ingest(channel=channel, posts=[post("p1", author="a1", at=T0)])
    assert Conversation.objects.get(messages__external_id="p1").assignee_id == ann.pk

    ingest(
        channel=channel,
        posts=[
            post("p2", author="a1", reply_to="p1", body="a refund", at=T0 + timedelta(hours=1)),
            post("n1", author="a2", at=T0 + timedelta(hours=1, minutes=1)),
        ],
    )
    # Bob took Ann's conversation in this batch: her place is free for the new one.
    assert Conversation.objects.get(messages__external_id="p1").assignee_id == bob.pk
    assert Conversation.objects.get(messages__external_id="n1").assignee_id == ann.pk
