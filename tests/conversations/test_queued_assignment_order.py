"""The team queue keeps its order and fairness: turns across pages and runs, conversations
let go, the "some wait" hint, and new conversations behind those that wait."""

from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
from django.core.cache import cache

from channels_ingest.pipeline import ingest
from conversations import presence, routing
from conversations.models import (
    Conversation,
    ConversationEvent,
    EventKind,
    QueuedAssignment,
)
from conversations.routing import queued_assign
from conversations.selectors import conversation_timeline
from conversations.services import conversation_assign
from tests.conversations.test_queued_assignment import (
    T0,
    _auto_rule,
    _conversation,
    _ingest,
    _team,
)
from tests.factories import (
    UserFactory,
    post,
)

pytestmark = pytest.mark.django_db


def test_a_hand_out_does_not_move_an_agents_turn_back_before_a_later_ingest(
    django_capture_on_commit_callbacks,
):
    """The run's ``now`` is taken once for all its pages: an ingest that auto-assigned
    meanwhile (later ``now``) is overtaken by the run's older time, so the agent the run
    picked looks 'assigned longest ago' and wins the next turn again."""
    ann, bob = UserFactory(role="agent"), UserFactory(role="agent")
    _, channel = _team(ann, bob)
    _auto_rule()
    _ingest(channel, post("p0", author="a0", at=T0), capture=django_capture_on_commit_callbacks)
    presence.agent_seen(user_id=ann.pk)
    presence.agent_seen(user_id=bob.pk)
    run_started = datetime.now(tz=UTC) - timedelta(seconds=5)  # a run whose pages took 5 s
    # Meanwhile the ingest gave Bob a conversation (his turn: now); it read the hint as it was
    # before p0 was queued (none wait), so it does not queue behind p0.
    cache.set(presence.QUEUE_WAITING_KEY, False)
    _ingest(channel, post("x", author="x", at=T0), capture=django_capture_on_commit_callbacks)
    first = _conversation("x").assignee_id
    # The run's page hands p0 to the other agent, stamped with the run's older start.
    assert queued_assign(now=run_started) == 1
    second = _conversation("p0").assignee_id
    assert {first, second} == {ann.pk, bob.pk}
    # Next conversation: the one who got p0 was assigned last, so the other one is due.
    _ingest(channel, post("y", author="y", at=T0), capture=django_capture_on_commit_callbacks)
    assert _conversation("y").assignee_id == first


def test_the_assigned_event_is_not_older_than_the_queueing(
    django_capture_on_commit_callbacks,
):
    """A conversation queued while a run is between pages is handed out on a later page with
    the run's start time: its ASSIGNED event predates its queueing ("after -5s")."""
    ann, bob = UserFactory(role="agent"), UserFactory(role="agent")
    _, away = _team(ann)
    _, here = _team(bob)
    _auto_rule()
    capture = django_capture_on_commit_callbacks
    _ingest(away, post("w1", author="w1", at=T0), capture=capture)  # fills page 1, stays
    real_page = routing._queued_assign_page
    calls = []

    def page(**kwargs):
        calls.append(1)
        if len(calls) == 2:  # between the pages: a new conversation is queued, Bob comes
            ingest(channel=here, posts=[post("h1", author="h1", at=T0)])
            presence.agent_seen(user_id=bob.pk)
        return real_page(**kwargs)

    with mock.patch.object(routing, "_queued_assign_page", side_effect=page):
        assert queued_assign(now=datetime.now(tz=UTC) - timedelta(seconds=5), page=1) == 1
    conversation = _conversation("h1")
    event = ConversationEvent.objects.get(conversation=conversation, kind=EventKind.ASSIGNED)
    assert event.created_at >= datetime.fromisoformat(event.data["queued_at"])
    [assigned] = [
        e
        for e in conversation_timeline(conversation=conversation).entries
        if e["kind_label"] == "Assigned"
    ]
    assert "-" not in assigned["detail"]


# --- Stale queue entries -------------------------------------------------------------------


def test_an_auto_assignment_by_the_ingest_let_go_by_the_agent_is_not_handed_out_again(
    django_capture_on_commit_callbacks,
):
    """The ingest (or rules_run) assigning a queued conversation leaves its entry; the agent
    letting it go before the next beat does not remove it either (only an assignment to
    someone does), so the beat auto-assigns it again, against "let go: theirs to hand on"."""
    ann = UserFactory(role="agent")
    _, channel = _team(ann)
    _auto_rule()
    capture = django_capture_on_commit_callbacks
    _ingest(channel, post("p1", author="a1", at=T0), capture=capture)
    assert QueuedAssignment.objects.count() == 1
    # Ann comes online (between two beats); the customer writes again: the ingest assigns.
    # Keep the at-once hand-out out of the way: the hint, read before p1 was queued, says
    # none wait.
    cache.set(presence.QUEUE_WAITING_KEY, False)
    presence.agent_seen(user_id=ann.pk)
    _ingest(
        channel,
        post("p2", author="a1", reply_to="p1", at=T0 + timedelta(minutes=1)),
        capture=capture,
    )
    conversation = _conversation("p1")
    assert conversation.assignee_id == ann.pk
    # Not hers: she lets it go.
    conversation_assign(conversation=conversation, assignee=None, actor=ann)
    assert queued_assign() == 0, "the beat hands a conversation an agent let go back out"
    assert _conversation("p1").assignee_id is None


# --- The "some wait" hint ------------------------------------------------------------------


def test_the_hint_is_not_lost_when_a_conversation_is_queued_as_the_beat_finishes(
    django_capture_on_commit_callbacks,
):
    """``queued_assign`` checks the queue is empty, then deletes the hint: a conversation
    queued (and the hint set) in between is left waiting without it, and nothing sets it
    again (the beat never does), so agents coming online start no hand-out."""
    ann = UserFactory(role="agent")
    _, channel = _team(ann)
    _auto_rule()
    manager = type(QueuedAssignment.objects)
    real_exists = manager.exists

    def exists(self):
        found = real_exists(self)
        # Just after the check: an ingest queues a conversation and sets the hint.
        _ingest(channel, post("p1", author="a1", at=T0), capture=django_capture_on_commit_callbacks)
        return found

    with mock.patch.object(manager, "exists", exists):
        queued_assign()
    assert QueuedAssignment.objects.exists()
    # The next beat runs (Ann still away): it does not put the hint back either.
    queued_assign()
    assert cache.get(presence.QUEUE_WAITING_KEY), "a conversation waits but the hint is gone"


def test_a_lost_hint_is_taken_as_some_may_wait_and_the_beat_sets_it_again(
    django_capture_on_commit_callbacks,
):
    """The hint lives in the cache, which a restart or an eviction empties. Read as "none
    wait", new conversations went ahead of those waiting until the beat's next run."""
    from conversations.models import Status

    ann = UserFactory(role="agent")
    _, channel = _team(ann, capacity=1)
    presence.agent_seen(user_id=ann.pk)
    _auto_rule()
    capture = django_capture_on_commit_callbacks
    _ingest(channel, post("p1", author="a1", at=T0), capture=capture)
    _ingest(channel, post("p2", author="a2", at=T0 + timedelta(minutes=1)), capture=capture)
    assert QueuedAssignment.objects.get().conversation_id == _conversation("p2").pk
    # Ann frees her place; the cache is emptied; a new customer writes before the beat.
    Conversation.objects.filter(pk=_conversation("p1").pk).update(status=Status.RESOLVED)
    cache.clear()
    presence.agent_seen(user_id=ann.pk)
    _ingest(channel, post("p3", author="a3", at=T0 + timedelta(hours=1)), capture=capture)
    assert _conversation("p3").assignee_id is None, "a new conversation jumped the queue"
    # p3 queued behind p2, and the hand-out its queueing started gave Ann p2.
    assert _conversation("p2").assignee_id == ann.pk
    assert QueuedAssignment.objects.get().conversation_id == _conversation("p3").pk
    assert cache.get(presence.QUEUE_WAITING_KEY) is True
    # The queue emptied and the hint lost again: the beat says none wait.
    QueuedAssignment.objects.all().delete()
    cache.delete(presence.QUEUE_WAITING_KEY)
    queued_assign()
    assert cache.get(presence.QUEUE_WAITING_KEY) is False


def test_an_agent_coming_online_with_the_hint_lost_starts_a_hand_out():
    ann = UserFactory(role="agent")
    with mock.patch("conversations.presence.transaction.on_commit") as on_commit:
        cache.set(presence.QUEUE_WAITING_KEY, False)
        presence.agent_seen(user_id=ann.pk)  # none wait
        presence.agent_away(user_id=ann.pk)
        cache.delete(presence.QUEUE_WAITING_KEY)
        presence.agent_seen(user_id=ann.pk)  # the hint is gone: some may wait
    assert on_commit.call_count == 1


# --- The queue jumped --------------------------------------------------------------------


def test_a_new_conversation_does_not_take_the_place_freed_before_one_that_waits(
    django_capture_on_commit_callbacks,
):
    """The ingest's auto-assignment ignores the queue: the first place an agent frees goes to
    whichever conversation arrives next, not to the one waiting longest. Under steady inflow
    new conversations take every freed place before the beat runs, and the queue starves."""
    from conversations.models import Status

    ann = UserFactory(role="agent")
    _, channel = _team(ann, capacity=1)
    presence.agent_seen(user_id=ann.pk)
    _auto_rule()
    capture = django_capture_on_commit_callbacks
    _ingest(channel, post("p1", author="a1", at=T0), capture=capture)
    _ingest(channel, post("p2", author="a2", at=T0 + timedelta(minutes=1)), capture=capture)
    assert _conversation("p1").assignee_id == ann.pk
    assert QueuedAssignment.objects.get().conversation_id == _conversation("p2").pk
    # Ann resolves p1: she has room. A new customer writes before the next beat.
    Conversation.objects.filter(pk=_conversation("p1").pk).update(status=Status.RESOLVED)
    _ingest(channel, post("p3", author="a3", at=T0 + timedelta(hours=1)), capture=capture)
    queued_assign()  # the beat comes round
    assert _conversation("p2").assignee_id == ann.pk, "the one waiting longest goes first"
    assert _conversation("p3").assignee_id is None
