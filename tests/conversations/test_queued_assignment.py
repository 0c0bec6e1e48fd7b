"""Conversations a rule wanted auto-assigned while nobody could take them wait in their
team's queue, and are handed out, oldest first, once an agent is online with room: when one
comes online, and on the beat."""

from collections import Counter
from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
import responses
from django.conf import settings
from django.core.cache import cache

from channels_ingest.pipeline import ingest
from conversations import presence
from conversations.models import (
    Conversation,
    ConversationEvent,
    EventKind,
    QueuedAssignment,
    RoutingRule,
    Status,
    WebhookCall,
    WebhookEndpoint,
)
from conversations.routing import queued_assign, rules_run
from conversations.selectors import conversation_timeline
from conversations.services import conversation_assign
from governance.models import TeamMembership
from scrm.celery import app
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


def _auto_rule(events=("message_received",)):
    return RoutingRule.objects.create(
        name="Auto",
        events=list(events),
        conditions=[],
        actions=[{"type": "assign", "value": "auto"}],
        position=RoutingRule.objects.count(),
    )


def _team(*agents, capacity=None):
    team = TeamFactory()
    for agent in agents:
        TeamMembershipFactory(team=team, user=agent)
    TeamMembership.objects.filter(team=team).update(capacity=capacity)
    channel = ChannelFactory(default_team=team)
    ChannelAccessFactory(channel=channel, team=team, can_reply=True)
    return team, channel


def _ingest(channel, *posts, capture):
    with capture(execute=True):
        ingest(channel=channel, posts=list(posts))


def _conversation(external_id):
    return Conversation.objects.get(messages__external_id=external_id)


def test_nobody_online_queues_the_conversation_and_an_agent_coming_online_gets_it(
    client, django_capture_on_commit_callbacks
):
    ann = UserFactory(role="agent")
    team, channel = _team(ann)
    _auto_rule()
    _ingest(channel, post("p1", author="a1", at=T0), capture=django_capture_on_commit_callbacks)

    conversation = _conversation("p1")
    assert conversation.assignee_id is None and conversation.status == Status.NEW
    entry = QueuedAssignment.objects.get()
    assert (entry.conversation_id, entry.team_id) == (conversation.pk, team.pk)
    assert cache.get(presence.QUEUE_WAITING_KEY)

    # Ann logs in: her first page view hands out the queue at once, not at the next beat.
    client.force_login(ann)
    with django_capture_on_commit_callbacks(execute=True):
        assert client.get("/inbox/").status_code == 200

    conversation.refresh_from_db()
    assert conversation.assignee_id == ann.pk and conversation.status == Status.OPEN
    assert not QueuedAssignment.objects.exists()
    event = ConversationEvent.objects.get(conversation=conversation, kind=EventKind.ASSIGNED)
    assert event.data["auto"] is True and event.data["assignee"] == ann.pk
    assert event.data["queued_at"] == entry.queued_at.isoformat()
    [assigned] = [
        e
        for e in conversation_timeline(conversation=conversation).entries
        if e["kind_label"] == "Assigned"
    ]
    assert assigned["auto"] and assigned["detail"].startswith("from the team's queue, after ")
    # Nothing waits any more: the next agent coming online starts no hand-out.
    assert cache.get(presence.QUEUE_WAITING_KEY) is False


def test_an_agent_coming_online_starts_a_hand_out_only_when_some_conversation_waits():
    ann = UserFactory(role="agent")
    with mock.patch("conversations.tasks.assign_queued_conversations.delay") as delay:
        presence.agent_seen(user_id=ann.pk)  # nothing waits
        cache.set(presence.QUEUE_WAITING_KEY, True)
        presence.agent_seen(user_id=ann.pk)  # online already
        presence.agent_away(user_id=ann.pk)
        from django.db import transaction

        with mock.patch.object(transaction, "on_commit", side_effect=lambda f: f()):
            presence.agent_seen(user_id=ann.pk)  # back: some wait
    assert delay.call_count == 1
    assert ann.pk in presence.agents_online(user_ids={ann.pk})


def test_the_beat_hands_out_the_queue_when_capacity_frees_oldest_first(
    django_capture_on_commit_callbacks,
):
    ann = UserFactory(role="agent")
    _, channel = _team(ann, capacity=1)
    presence.agent_seen(user_id=ann.pk)
    _auto_rule()
    capture = django_capture_on_commit_callbacks
    _ingest(channel, post("p1", author="a1", at=T0), capture=capture)
    _ingest(channel, post("p2", author="a2", at=T0 + timedelta(minutes=1)), capture=capture)
    _ingest(channel, post("p3", author="a3", at=T0 + timedelta(minutes=2)), capture=capture)
    first = _conversation("p1")
    assert first.assignee_id == ann.pk
    assert _conversation("p2").assignee_id is None and _conversation("p3").assignee_id is None
    assert QueuedAssignment.objects.count() == 2

    assert queued_assign() == 0, "Ann is full: nothing to hand out"
    assert QueuedAssignment.objects.count() == 2

    Conversation.objects.filter(pk=first.pk).update(status=Status.RESOLVED)
    assert queued_assign() == 1
    assert _conversation("p2").assignee_id == ann.pk, "the one waiting longest goes first"
    assert _conversation("p3").assignee_id is None
    assert list(QueuedAssignment.objects.values_list("conversation_id", flat=True)) == [
        _conversation("p3").pk
    ]


@pytest.mark.parametrize("page", [500, 2])
def test_round_robin_over_the_agents_online_as_in_the_ingest(
    page, django_capture_on_commit_callbacks
):
    """Pages of 2: the turns of a later page come after those of the earlier one (each page
    once started its turns at the run's start time: 3 + 1 instead of 2 + 2)."""
    ann, bob = UserFactory(role="agent"), UserFactory(role="agent")
    _, channel = _team(ann, bob)
    _auto_rule()
    _ingest(
        channel,
        *(post(f"p{i}", author=f"a{i}", at=T0 + timedelta(minutes=i)) for i in range(4)),
        capture=django_capture_on_commit_callbacks,
    )
    assert QueuedAssignment.objects.count() == 4
    presence.agent_seen(user_id=ann.pk)
    presence.agent_seen(user_id=bob.pk)
    assert queued_assign(page=page) == 4
    holders = [_conversation(f"p{i}").assignee_id for i in range(4)]
    assert Counter(holders) == Counter({ann.pk: 2, bob.pk: 2})
    assert holders[0] != holders[1] and holders[2] != holders[3]


@pytest.mark.parametrize("change", ["assigned", "let go", "resolved", "moved", "escalated"])
def test_a_conversation_that_no_longer_waits_leaves_the_queue_untouched(
    change, django_capture_on_commit_callbacks
):
    ann, bob = UserFactory(role="agent"), UserFactory(role="agent")
    _, channel = _team(ann, bob)
    _auto_rule()
    _ingest(channel, post("p1", author="a1", at=T0), capture=django_capture_on_commit_callbacks)
    conversation = _conversation("p1")
    other_team = TeamFactory()
    if change == "assigned":
        Conversation.objects.filter(pk=conversation.pk).update(assignee=bob)
    elif change == "let go":
        # An agent took it and let it go again: it is theirs to hand on, not the queue's.
        conversation_assign(conversation=conversation, assignee=bob, actor=bob)
        conversation_assign(conversation=conversation, assignee=None, actor=bob)
    elif change == "resolved":
        Conversation.objects.filter(pk=conversation.pk).update(status=Status.RESOLVED)
    elif change == "moved":
        Conversation.objects.filter(pk=conversation.pk).update(team=other_team)
        TeamMembershipFactory(team=other_team, user=ann)
    else:
        Conversation.objects.filter(pk=conversation.pk).update(status=Status.ESCALATED)
    before = Conversation.objects.values("assignee_id", "status", "team_id").get()

    presence.agent_seen(user_id=ann.pk)
    assert queued_assign() == 0
    assert Conversation.objects.values("assignee_id", "status", "team_id").get() == before
    assert not QueuedAssignment.objects.exists()
    assert not ConversationEvent.objects.filter(kind=EventKind.ASSIGNED, data__auto=True).exists()


def test_a_later_rule_keeps_the_conversations_place_in_the_queue(
    django_capture_on_commit_callbacks,
):
    ann = UserFactory(role="agent")
    _, channel = _team(ann)
    _auto_rule()
    capture = django_capture_on_commit_callbacks
    _ingest(channel, post("p1", author="a1", at=T0), capture=capture)
    first = QueuedAssignment.objects.get().queued_at
    _ingest(
        channel,
        post("p2", author="a1", reply_to="p1", at=T0 + timedelta(minutes=5)),
        capture=capture,
    )
    assert _conversation("p2") == _conversation("p1")
    assert QueuedAssignment.objects.get().queued_at == first


def test_a_team_with_nobody_online_does_not_hold_up_the_others(
    django_capture_on_commit_callbacks,
):
    """The queue is read in pages: the oldest, of a team nobody of is online, fill the first
    pages; a later one, of a team with an agent online, is still handed out."""
    ann, bob = UserFactory(role="agent"), UserFactory(role="agent")
    _, away_channel = _team(ann)
    _, here_channel = _team(bob)
    _auto_rule()
    capture = django_capture_on_commit_callbacks
    _ingest(
        away_channel,
        *(post(f"w{i}", author=f"w{i}", at=T0 + timedelta(minutes=i)) for i in range(5)),
        capture=capture,
    )
    _ingest(here_channel, post("h1", author="h1", at=T0 + timedelta(hours=1)), capture=capture)
    presence.agent_seen(user_id=bob.pk)
    assert queued_assign(page=2) == 1
    assert _conversation("h1").assignee_id == bob.pk
    assert QueuedAssignment.objects.count() == 5


def test_a_reopening_by_hand_that_finds_nobody_online_queues_the_conversation(
    django_capture_on_commit_callbacks,
):
    ann = UserFactory(role="agent")
    _, channel = _team(ann)
    _auto_rule(events=("conversation_reopened",))
    _ingest(channel, post("p1", author="a1", at=T0), capture=django_capture_on_commit_callbacks)
    conversation = _conversation("p1")
    assert not QueuedAssignment.objects.exists()  # the rule runs on reopenings only
    with django_capture_on_commit_callbacks(execute=True):
        rules_run(conversation_id=conversation.pk, event="conversation_reopened")
    assert QueuedAssignment.objects.get().conversation_id == conversation.pk
    presence.agent_seen(user_id=ann.pk)
    assert queued_assign() == 1
    conversation.refresh_from_db()
    assert conversation.assignee_id == ann.pk


def test_a_hand_out_from_the_queue_reaches_conversation_assigned_subscribers(
    django_capture_on_commit_callbacks,
):
    ann = UserFactory(role="agent")
    _, channel = _team(ann)
    _auto_rule()
    hook = "https://crm.example.com/hook"
    WebhookEndpoint.objects.create(name="CRM", url=hook, events=["conversation.assigned"])
    _ingest(channel, post("p1", author="a1", at=T0), capture=django_capture_on_commit_callbacks)
    assert not WebhookCall.objects.exists()  # queued, not assigned
    presence.agent_seen(user_id=ann.pk)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as stub:
        stub.post(hook, status=200)
        with django_capture_on_commit_callbacks(execute=True):
            assert queued_assign() == 1
            assert queued_assign() == 0
    [payload] = WebhookCall.objects.filter(event="conversation.assigned").values_list(
        "payload", flat=True
    )
    assert payload["data"]["conversation"]["assignee"] == ann.pk
    assert payload["data"]["details"]["auto"] is True


def test_the_beat_hands_out_the_queue(django_capture_on_commit_callbacks):
    ann = UserFactory(role="agent")
    _, channel = _team(ann)
    _auto_rule()
    _ingest(channel, post("p1", author="a1", at=T0), capture=django_capture_on_commit_callbacks)
    presence.agent_seen(user_id=ann.pk)
    schedule = settings.CELERY_BEAT_SCHEDULE["assign-queued-conversations"]
    assert schedule["schedule"] <= 60
    app.loader.import_default_modules()
    task = app.tasks[schedule["task"]]

    assert task.apply().get() == 1
    assert _conversation("p1").assignee_id == ann.pk
    assert task.apply().get() == 0
