"""SLA timers through the real services: policies, business hours, pausing, breach detection."""

import importlib
import re
from datetime import UTC, date, datetime, timedelta

import pytest
from django.apps import apps as django_apps
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from channels_ingest.pipeline import ingest
from conversations import services
from conversations.models import (
    BusinessCalendar,
    Conversation,
    ConversationEvent,
    EventKind,
    Holiday,
    Notification,
    Priority,
    RoutingRule,
    SlaEvent,
    SlaEventKind,
    SlaPolicy,
    SlaState,
    Status,
)
from conversations.sla import RULES_RETRY_MINUTES, RULES_RETRY_WINDOW, SlaSetup, sla_check
from tests.factories import (
    ChannelFactory,
    ContactFactory,
    ConversationFactory,
    UserFactory,
    post,
)
from tests.plans import query_plan

pytestmark = pytest.mark.django_db

# Friday 2026-01-09 15:30 UTC = 16:30 in Berlin (winter, UTC+1).
FRIDAY_AFTERNOON = datetime(2026, 1, 9, 15, 30, tzinfo=UTC)


@pytest.fixture
def office_hours() -> BusinessCalendar:
    calendar = BusinessCalendar.objects.create(
        name="Berlin office",
        time_zone="Europe/Berlin",
        weekly_hours={str(day): [["09:00", "17:00"]] for day in range(5)},
    )
    Holiday.objects.create(calendar=calendar, date=date(2026, 1, 12), name="Closed Monday")
    return calendar


def _policy(**fields) -> SlaPolicy:
    defaults = {
        "name": f"Policy {SlaPolicy.objects.count() + 1}",
        "first_response_minutes": 60,
        "resolution_minutes": 8 * 60,
        "at_risk_minutes": 15,
    }
    return SlaPolicy.objects.create(**(defaults | fields))


def _conversation(channel, external_id="p1", at=FRIDAY_AFTERNOON, **kwargs) -> Conversation:
    ingest(channel=channel, posts=[post(external_id, at=at, **kwargs)])
    return Conversation.objects.get(messages__external_id=external_id, channel=channel)


def test_the_most_specific_policy_applies():
    channel, other = ChannelFactory(), ChannelFactory()
    general = _policy(name="Everyone")
    urgent = _policy(name="Urgent", priority=Priority.URGENT)
    vip = _policy(name="VIP", vip_only=True)
    on_channel = _policy(name="This channel", channel=channel)
    setup = SlaSetup.load()

    assert setup.policy_for(priority=Priority.NORMAL, channel_id=other.pk, is_vip=False) == general
    assert setup.policy_for(priority=Priority.URGENT, channel_id=other.pk, is_vip=False) == urgent
    assert setup.policy_for(priority=Priority.URGENT, channel_id=other.pk, is_vip=True) == vip
    assert setup.policy_for(priority=Priority.URGENT, channel_id=channel.pk, is_vip=True) == (
        on_channel
    )


def test_a_new_conversation_gets_due_times_in_business_hours(office_hours):
    _policy(calendar=office_hours)
    conversation = _conversation(ChannelFactory())

    # 30 minutes left on Friday, Monday is a holiday: 30 more minutes on Tuesday from 09:00.
    assert conversation.first_response_due_at == datetime(2026, 1, 13, 8, 30, tzinfo=UTC)
    assert conversation.sla_due_at == conversation.first_response_due_at
    assert conversation.sla_warn_at == conversation.sla_due_at - timedelta(minutes=15)
    assert conversation.sla_state(now=FRIDAY_AFTERNOON) == SlaState.OK
    # 8 business hours: 30 minutes on Friday and 7h30 on Tuesday.
    assert conversation.resolution_due_at == datetime(2026, 1, 13, 15, 30, tzinfo=UTC)


def test_without_a_policy_no_clock_runs():
    conversation = _conversation(ChannelFactory())
    assert conversation.sla_policy is None
    assert conversation.sla_due_at is None
    assert conversation.sla_state() == ""


def test_a_reply_in_time_meets_the_first_response_target():
    _policy()
    agent = UserFactory()
    conversation = _conversation(ChannelFactory())
    services.conversation_reply_create(
        conversation=conversation,
        author=agent,
        body="On it",
        at=FRIDAY_AFTERNOON + timedelta(minutes=20),
    )
    conversation.refresh_from_db()

    assert conversation.first_response_due_at is None
    assert conversation.sla_due_at == conversation.resolution_due_at
    reply = ConversationEvent.objects.get(conversation=conversation, kind=EventKind.REPLY_SENT)
    assert reply.data["sla_met"] is True


def test_a_late_reply_is_recorded_as_missed():
    _policy()
    conversation = _conversation(ChannelFactory())
    services.conversation_reply_create(
        conversation=conversation,
        author=UserFactory(),
        body="Sorry for the wait",
        at=FRIDAY_AFTERNOON + timedelta(minutes=90),
    )
    reply = ConversationEvent.objects.get(conversation=conversation, kind=EventKind.REPLY_SENT)
    assert reply.data["sla_met"] is False


def test_a_customer_message_after_our_reply_starts_the_next_response_clock():
    _policy(next_response_minutes=30)
    channel = ChannelFactory()
    conversation = _conversation(channel)
    services.conversation_reply_create(
        conversation=conversation,
        author=UserFactory(),
        body="Hello",
        at=FRIDAY_AFTERNOON + timedelta(minutes=5),
    )
    later = FRIDAY_AFTERNOON + timedelta(minutes=40)
    ingest(channel=channel, posts=[post("p2", at=later, reply_to="p1")])
    conversation.refresh_from_db()

    assert conversation.next_response_due_at == later + timedelta(minutes=30)
    assert conversation.sla_due_at == conversation.next_response_due_at


def test_waiting_on_the_customer_pauses_the_clocks_and_resuming_keeps_the_time_left():
    _policy(first_response_minutes=None, resolution_minutes=120)
    conversation = _conversation(ChannelFactory(), at=datetime(2026, 1, 5, 10, 0, tzinfo=UTC))
    due = conversation.resolution_due_at
    assert due == datetime(2026, 1, 5, 12, 0, tzinfo=UTC)

    paused_at = datetime(2026, 1, 5, 11, 0, tzinfo=UTC)
    services.conversation_status_set(
        conversation=conversation, status=Status.PENDING, actor=None, at=paused_at
    )
    conversation.refresh_from_db()
    assert conversation.sla_paused_at == paused_at
    assert conversation.sla_due_at is None
    assert conversation.sla_state() == ""

    services.conversation_status_set(
        conversation=conversation,
        status=Status.OPEN,
        actor=None,
        at=datetime(2026, 1, 5, 15, 0, tzinfo=UTC),
    )
    conversation.refresh_from_db()
    # One hour was left when it paused: due one hour after it came back.
    assert conversation.resolution_due_at == datetime(2026, 1, 5, 16, 0, tzinfo=UTC)
    assert conversation.sla_paused_at is None


def test_a_customer_writing_back_resumes_a_paused_conversation():
    _policy(first_response_minutes=None, resolution_minutes=120)
    channel = ChannelFactory()
    conversation = _conversation(channel, at=datetime(2026, 1, 5, 10, 0, tzinfo=UTC))
    services.conversation_status_set(
        conversation=conversation,
        status=Status.PENDING,
        actor=None,
        at=datetime(2026, 1, 5, 10, 30, tzinfo=UTC),
    )
    ingest(
        channel=channel,
        posts=[post("p2", reply_to="p1", at=datetime(2026, 1, 6, 9, 0, tzinfo=UTC))],
    )
    conversation.refresh_from_db()
    assert conversation.status == Status.OPEN
    assert conversation.resolution_due_at == datetime(2026, 1, 6, 10, 30, tzinfo=UTC)


def test_resolving_meets_the_resolution_target_and_a_reopening_starts_a_new_one():
    _policy(first_response_minutes=None, resolution_minutes=60)
    channel = ChannelFactory()
    conversation = _conversation(channel, at=datetime(2026, 1, 5, 10, 0, tzinfo=UTC))
    services.conversation_status_set(
        conversation=conversation,
        status=Status.RESOLVED,
        actor=None,
        at=datetime(2026, 1, 5, 10, 30, tzinfo=UTC),
    )
    conversation.refresh_from_db()
    assert conversation.resolution_due_at is None
    assert conversation.sla_due_at is None
    resolved = ConversationEvent.objects.get(
        conversation=conversation, kind=EventKind.STATUS_CHANGED
    )
    assert resolved.data["sla_met"] is True

    reopened_at = datetime(2026, 1, 7, 8, 0, tzinfo=UTC)
    ingest(channel=channel, posts=[post("p2", reply_to="p1", at=reopened_at)])
    conversation.refresh_from_db()
    assert conversation.status == Status.OPEN
    assert conversation.resolution_due_at == reopened_at + timedelta(minutes=60)


def test_changing_the_priority_gives_running_targets_the_new_length_minus_time_used():
    _policy(name="Normal", first_response_minutes=240)
    _policy(name="Urgent", priority=Priority.URGENT, first_response_minutes=15)
    started = datetime.now(tz=UTC) - timedelta(minutes=10)
    conversation = _conversation(ChannelFactory(), at=started)
    assert conversation.first_response_due_at == started + timedelta(minutes=240)

    services.conversation_priority_set(
        conversation=conversation, priority=Priority.URGENT, actor=UserFactory()
    )
    conversation.refresh_from_db()
    assert conversation.sla_policy.name == "Urgent"
    # Ten of the fifteen minutes are used: five are left.
    left = conversation.first_response_due_at - datetime.now(tz=UTC)
    assert timedelta(minutes=4) < left <= timedelta(minutes=5)


def test_a_shorter_target_used_up_out_of_hours_is_breached_when_it_ran_out(
    monkeypatch, office_hours
):
    """Adding no business time out of hours gives the next opening: a target already used
    up showed "due" all weekend, and fired its breach on Monday."""
    _policy(name="Normal", calendar=office_hours, first_response_minutes=120)
    _policy(
        name="Urgent", priority=Priority.URGENT, calendar=office_hours, first_response_minutes=15
    )
    # Friday 16:00 in Berlin; Monday is a holiday: due Tuesday 10:00.
    conversation = _conversation(ChannelFactory(), at=datetime(2026, 1, 9, 15, 0, tzinfo=UTC))
    assert conversation.first_response_due_at == datetime(2026, 1, 13, 9, 0, tzinfo=UTC)
    saturday = datetime(2026, 1, 10, 10, 0, tzinfo=UTC)
    monkeypatch.setattr(timezone, "now", lambda: saturday)
    services.conversation_priority_set(
        conversation=conversation, priority=Priority.URGENT, actor=UserFactory()
    )
    conversation.refresh_from_db()
    # An hour of business time was used: the 15 minutes ran out on Friday at 16:15.
    assert conversation.first_response_due_at == datetime(2026, 1, 9, 15, 15, tzinfo=UTC)
    assert conversation.sla_state(now=saturday) == SlaState.BREACHED
    assert [f.kind for f in sla_check(now=saturday)] == [SlaEventKind.BREACHED]


def test_a_shorter_target_used_up_in_hours_is_breached_since_it_ran_out(monkeypatch):
    _policy(name="Normal", first_response_minutes=240, resolution_minutes=None)
    _policy(name="Urgent", priority=Priority.URGENT, first_response_minutes=15)
    started = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    conversation = _conversation(ChannelFactory(), at=started)
    now = started + timedelta(hours=1)
    monkeypatch.setattr(timezone, "now", lambda: now)
    services.conversation_priority_set(
        conversation=conversation, priority=Priority.URGENT, actor=UserFactory()
    )
    conversation.refresh_from_db()
    assert conversation.first_response_due_at == started + timedelta(minutes=15)


def test_a_breached_target_keeps_its_due_time_when_the_priority_changes():
    _policy(name="Normal", first_response_minutes=60, resolution_minutes=None)
    _policy(name="Urgent", priority=Priority.URGENT, first_response_minutes=15)
    conversation = _conversation(ChannelFactory())
    due = conversation.first_response_due_at
    assert len(sla_check(now=due + timedelta(minutes=1))) == 1
    services.conversation_priority_set(
        conversation=conversation, priority=Priority.URGENT, actor=UserFactory()
    )
    conversation.refresh_from_db()
    assert conversation.first_response_due_at == due
    assert sla_check(now=due + timedelta(minutes=30)) == []


def test_a_deactivated_policy_stops_the_clocks_and_fires_nothing():
    policy = _policy(first_response_minutes=60)
    conversation = _conversation(ChannelFactory())
    SlaPolicy.objects.filter(pk=policy.pk).update(is_active=False)
    assert sla_check(now=FRIDAY_AFTERNOON + timedelta(days=30)) == []
    conversation.refresh_from_db()
    assert conversation.sla_due_at is None
    assert conversation.sla_state() == ""


def test_a_listen_only_conversation_runs_no_clock():
    _policy()
    conversation = _conversation(ChannelFactory(mode="listen"))
    assert conversation.is_monitoring
    assert conversation.sla_due_at is None
    assert sla_check(now=FRIDAY_AFTERNOON + timedelta(days=30)) == []


def test_reopening_a_conversation_nobody_answered_restarts_the_first_response_clock():
    _policy(first_response_minutes=60, resolution_minutes=None)
    channel = ChannelFactory()
    conversation = _conversation(channel, at=datetime(2026, 1, 5, 10, 0, tzinfo=UTC))
    services.conversation_status_set(
        conversation=conversation,
        status=Status.RESOLVED,
        actor=None,
        at=datetime(2026, 1, 5, 10, 5, tzinfo=UTC),
    )
    back = datetime(2026, 1, 6, 9, 0, tzinfo=UTC)
    ingest(channel=channel, posts=[post("p2", reply_to="p1", at=back)])
    conversation.refresh_from_db()
    assert conversation.first_response_due_at == back + timedelta(minutes=60)


def test_resolving_while_pending_counts_the_clock_as_stopped_at_the_pause():
    _policy(first_response_minutes=None, resolution_minutes=60)
    conversation = _conversation(ChannelFactory(), at=datetime(2026, 1, 5, 10, 0, tzinfo=UTC))
    services.conversation_status_set(
        conversation=conversation,
        status=Status.PENDING,
        actor=None,
        at=datetime(2026, 1, 5, 10, 30, tzinfo=UTC),
    )
    services.conversation_status_set(
        conversation=conversation,
        status=Status.RESOLVED,
        actor=None,
        at=datetime(2026, 1, 7, 10, 0, tzinfo=UTC),
    )
    resolved = ConversationEvent.objects.filter(
        conversation=conversation, kind=EventKind.STATUS_CHANGED, data__status=Status.RESOLVED
    ).get()
    assert resolved.data["sla_met"] is True


def test_the_check_fires_at_risk_then_breached_each_exactly_once():
    _policy(first_response_minutes=60, resolution_minutes=None, at_risk_minutes=15)
    assignee = UserFactory()
    conversation = _conversation(ChannelFactory())
    Conversation.objects.filter(pk=conversation.pk).update(assignee=assignee)
    due = FRIDAY_AFTERNOON + timedelta(minutes=60)

    assert sla_check(now=due - timedelta(minutes=20)) == []
    warned = sla_check(now=due - timedelta(minutes=10))
    assert [(f.kind, f.target) for f in warned] == [(SlaEventKind.AT_RISK, "first_response")]
    assert Notification.objects.filter(recipient=assignee).count() == 1
    assert sla_check(now=due - timedelta(minutes=5)) == []

    breached = sla_check(now=due + timedelta(seconds=1))
    assert [(f.kind, f.target) for f in breached] == [(SlaEventKind.BREACHED, "first_response")]
    assert sla_check(now=due + timedelta(minutes=5)) == []

    conversation.refresh_from_db()
    assert conversation.sla_check_at is None
    assert conversation.sla_state(now=due + timedelta(minutes=5)) == SlaState.BREACHED
    assert SlaEvent.objects.filter(conversation=conversation).count() == 2
    assert (
        ConversationEvent.objects.filter(
            conversation=conversation, kind=EventKind.SLA_BREACHED
        ).count()
        == 1
    )


def test_a_check_that_runs_again_on_the_same_breach_fires_nothing_twice():
    _policy(first_response_minutes=60, resolution_minutes=None)
    conversation = _conversation(ChannelFactory())
    after = FRIDAY_AFTERNOON + timedelta(hours=2)
    assert len(sla_check(now=after)) == 1
    # As if a second beat had scanned before the first saved its next check time.
    Conversation.objects.filter(pk=conversation.pk).update(sla_check_at=FRIDAY_AFTERNOON)
    assert sla_check(now=after) == []
    assert SlaEvent.objects.filter(kind=SlaEventKind.BREACHED).count() == 1


def test_a_breach_runs_the_rules_listening_for_it():
    _policy(first_response_minutes=60, resolution_minutes=None)
    _breach_rule()
    conversation = _conversation(ChannelFactory())
    sla_check(now=FRIDAY_AFTERNOON + timedelta(hours=2))
    conversation.refresh_from_db()
    assert conversation.priority == Priority.URGENT
    breach = SlaEvent.objects.get(kind=SlaEventKind.BREACHED)
    assert (breach.rules_due_at, breach.rules_attempts, breach.rules_error) == (None, 1, "")
    applied = ConversationEvent.objects.get(conversation=conversation, kind=EventKind.RULE_APPLIED)
    assert [(e["name"], e["event"]) for e in applied.data["rules"]] == [
        ("Breached goes urgent", "sla_breached")
    ]


def _breach_rule() -> RoutingRule:
    return RoutingRule.objects.create(
        name="Breached goes urgent",
        events=["sla_breached"],
        conditions=[],
        actions=[{"type": "set_priority", "value": Priority.URGENT}],
    )


@pytest.fixture
def failing_rules(monkeypatch):
    """The breach rules fail the first ``failures["left"]`` times they are run."""
    from conversations import routing

    real = routing.rules_run
    state = {"left": 0, "calls": 0}

    def rules_run(**kwargs):
        state["calls"] += 1
        if state["left"]:
            state["left"] -= 1
            raise OperationalError("lock timeout")
        return real(**kwargs)

    monkeypatch.setattr(routing, "rules_run", rules_run)
    return state


BREACH_AT = FRIDAY_AFTERNOON + timedelta(minutes=60, seconds=1)


def _failed_once(failing_rules, **policy) -> Conversation:
    """A conversation whose first-response breach at ``BREACH_AT`` ran rules that failed."""
    _policy(**({"first_response_minutes": 60, "resolution_minutes": None} | policy))
    _breach_rule()
    conversation = _conversation(ChannelFactory())
    failing_rules["left"] = 1
    assert len(sla_check(now=BREACH_AT)) >= 1
    assert failing_rules["calls"] == 1
    return conversation


def _given_up() -> str:
    [entry] = ConversationEvent.objects.filter(data__has_key="rules_failed")
    assert entry.data["event"] == "sla_breached"
    return entry.data["rules_failed"]


def test_breach_rules_that_fail_are_tried_again_and_run_once(failing_rules):
    conversation = _failed_once(failing_rules)
    breach = SlaEvent.objects.get(kind=SlaEventKind.BREACHED)
    conversation.refresh_from_db()
    # Recorded, the rules' work undone, and a retry a minute on.
    assert conversation.priority != Priority.URGENT
    assert ConversationEvent.objects.filter(kind=EventKind.SLA_BREACHED).count() == 1
    assert (breach.rules_attempts, breach.rules_due_at) == (1, BREACH_AT + timedelta(minutes=1))
    assert breach.rules_error == "OperationalError: lock timeout"

    assert sla_check(now=BREACH_AT + timedelta(seconds=30)) == []
    assert failing_rules["calls"] == 1
    assert sla_check(now=BREACH_AT + timedelta(minutes=1)) == []  # no second breach
    assert failing_rules["calls"] == 2
    conversation.refresh_from_db()
    breach.refresh_from_db()
    assert conversation.priority == Priority.URGENT
    assert (breach.rules_attempts, breach.rules_due_at, breach.rules_error) == (2, None, "")

    sla_check(now=BREACH_AT + timedelta(hours=2))
    assert failing_rules["calls"] == 2
    assert ConversationEvent.objects.filter(kind=EventKind.RULE_APPLIED).count() == 1


def test_an_agent_moving_the_clocks_before_the_retry_does_not_lose_it(failing_rules):
    conversation = _failed_once(failing_rules)
    # Waiting on the customer stops the clocks' checks: the retry has a scan of its own.
    services.conversation_status_set(
        conversation=conversation, status=Status.PENDING, actor=UserFactory()
    )
    conversation.refresh_from_db()
    assert conversation.sla_check_at is None
    sla_check(now=BREACH_AT + timedelta(minutes=1))
    assert failing_rules["calls"] == 2
    conversation.refresh_from_db()
    assert conversation.priority == Priority.URGENT


def test_breach_rules_that_keep_failing_are_given_up_on_and_the_timeline_says_so(
    failing_rules, client
):
    conversation = _failed_once(failing_rules)
    failing_rules["left"] = 99
    moment = BREACH_AT
    for minutes in RULES_RETRY_MINUTES:
        moment += timedelta(minutes=minutes)
        sla_check(now=moment - timedelta(seconds=1))  # not yet
        sla_check(now=moment)
    assert failing_rules["calls"] == 1 + len(RULES_RETRY_MINUTES)
    breach = SlaEvent.objects.get(kind=SlaEventKind.BREACHED)
    assert (breach.rules_attempts, breach.rules_due_at) == (4, None)
    sla_check(now=moment + timedelta(hours=1))
    assert failing_rules["calls"] == 4

    said = "OperationalError: lock timeout (given up after 4 attempts)"
    assert _given_up() == said
    client.force_login(UserFactory(role="admin"))
    page = client.get(f"/inbox/{conversation.pk}/").content.decode()
    shown = 'Routing rules failed\\s*<span class="muted">— on the SLA breach: '
    assert re.search(shown + re.escape(said), page)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"status": Status.RESOLVED}, "the conversation is resolved"),
        ({"is_monitoring": True}, "the conversation is only monitored"),
        ("policy off", "its SLA policy is switched off"),
    ],
)
def test_breach_rules_are_not_retried_on_a_conversation_that_no_longer_asks_for_them(
    failing_rules, change, reason
):
    conversation = _failed_once(failing_rules)
    if change == "policy off":
        SlaPolicy.objects.update(is_active=False)
    elif "status" in change:
        services.conversation_status_set(
            conversation=conversation, status=change["status"], actor=UserFactory()
        )
    else:
        Conversation.objects.filter(pk=conversation.pk).update(**change)
    sla_check(now=BREACH_AT + timedelta(minutes=1))
    assert failing_rules["calls"] == 1
    breach = SlaEvent.objects.get(kind=SlaEventKind.BREACHED)
    assert (breach.rules_attempts, breach.rules_due_at) == (1, None)
    conversation.refresh_from_db()
    assert conversation.priority != Priority.URGENT
    assert _given_up() == f"OperationalError: lock timeout (not tried again: {reason})"


def test_breach_rules_not_retried_within_the_hour_are_given_up_on(failing_rules):
    _failed_once(failing_rules)
    # The beat was down past the retry window.
    sla_check(now=BREACH_AT + RULES_RETRY_WINDOW + timedelta(minutes=2))
    assert failing_rules["calls"] == 1
    assert _given_up() == (
        "OperationalError: lock timeout (not tried again: the breach is over an hour old)"
    )


def test_a_new_breach_runs_the_rules_though_an_old_one_waited_too_long(failing_rules):
    conversation = _failed_once(failing_rules, resolution_minutes=180)
    # The beat comes back two hours on: the old retry is stale, the resolution breach new.
    fired = sla_check(now=BREACH_AT + timedelta(hours=2))
    assert [f.target for f in fired] == ["resolution"]
    assert failing_rules["calls"] == 2
    conversation.refresh_from_db()
    assert conversation.priority == Priority.URGENT
    assert not SlaEvent.objects.filter(rules_due_at__isnull=False).exists()


def test_a_breach_while_another_waits_for_its_retry_runs_the_rules_once_for_both(failing_rules):
    conversation = _failed_once(failing_rules, resolution_minutes=61)
    # The resolution target breaches a second before the first breach's retry is due.
    fired = sla_check(now=BREACH_AT + timedelta(seconds=59))
    assert [(f.target, f.kind) for f in fired] == [("resolution", SlaEventKind.BREACHED)]
    assert failing_rules["calls"] == 2
    sla_check(now=BREACH_AT + timedelta(minutes=1))
    assert failing_rules["calls"] == 2
    assert not SlaEvent.objects.filter(rules_due_at__isnull=False).exists()
    conversation.refresh_from_db()
    assert conversation.priority == Priority.URGENT
    assert ConversationEvent.objects.filter(kind=EventKind.RULE_APPLIED).count() == 1


def test_an_old_breach_given_up_on_beside_a_new_one_failing_says_why(failing_rules):
    _failed_once(failing_rules, resolution_minutes=180)
    failing_rules["left"] = 1
    sla_check(now=BREACH_AT + timedelta(hours=2))
    assert failing_rules["calls"] == 2
    old, new = SlaEvent.objects.filter(kind=SlaEventKind.BREACHED).order_by("created_at")
    assert (old.rules_attempts, old.rules_due_at) == (1, None)
    assert (new.rules_attempts, new.rules_due_at) == (
        1,
        BREACH_AT + timedelta(hours=2, minutes=1),
    )
    assert _given_up() == (
        "OperationalError: lock timeout (not tried again: the breach is over an hour old)"
    )


def test_targets_breached_together_run_their_rules_once_and_retry_together(failing_rules):
    _failed_once(failing_rules, resolution_minutes=60)
    breaches = SlaEvent.objects.filter(kind=SlaEventKind.BREACHED)
    assert sorted(breaches.values_list("target", "rules_attempts")) == [
        ("first_response", 1),
        ("resolution", 1),
    ]
    sla_check(now=BREACH_AT + timedelta(minutes=1))
    assert failing_rules["calls"] == 2
    assert not breaches.filter(rules_due_at__isnull=False).exists()
    assert ConversationEvent.objects.filter(kind=EventKind.RULE_APPLIED).count() == 1


def test_the_admin_lists_breaches_by_what_became_of_their_rules(failing_rules, client):
    _policy(first_response_minutes=60, resolution_minutes=None)
    _breach_rule()
    channel = ChannelFactory()
    other = _conversation(channel, "p0", at=FRIDAY_AFTERNOON - timedelta(minutes=10), author="b")
    conversation = _conversation(channel, "p1")
    sla_check(now=BREACH_AT - timedelta(minutes=5))  # the other's breach: its rules ran
    failing_rules["left"] = 1
    sla_check(now=BREACH_AT)
    assert failing_rules["calls"] == 2
    client.force_login(UserFactory(is_staff=True, is_superuser=True))

    def listed(rules: str) -> set[int]:
        response = client.get(f"/admin/conversations/slaevent/?kind=breached&rules={rules}")
        assert response.status_code == 200
        return {event.conversation_id for event in response.context["cl"].result_list}

    # The first waits for a retry at BREACH_AT + 1 min (no beat ran at that time since).
    assert listed("waiting") == {conversation.pk}
    assert listed("ran") == {other.pk}
    assert listed("given_up") == set()
    page = client.get("/admin/conversations/slaevent/").content.decode()
    retry_at = timezone.localtime(BREACH_AT + timedelta(minutes=1))
    assert f"retry at {retry_at:%Y-%m-%d %H:%M} (1 try): OperationalError: lock timeout" in page
    assert ">ran<" in page
    assert client.get("/admin/conversations/slaevent/add/").status_code == 403

    failing_rules["left"] = 99
    for minutes in (1, 6, 21):
        sla_check(now=BREACH_AT + timedelta(minutes=minutes))
    assert (listed("waiting"), listed("given_up")) == (set(), {conversation.pk})
    page = client.get("/admin/conversations/slaevent/").content.decode()
    assert "given up (4 tries): OperationalError: lock timeout" in page


def test_without_rules_listening_a_breach_waits_for_none():
    _policy(first_response_minutes=60, resolution_minutes=None)
    conversation = _conversation(ChannelFactory())
    sla_check(now=FRIDAY_AFTERNOON + timedelta(hours=2))
    breach = SlaEvent.objects.get(kind=SlaEventKind.BREACHED)
    assert (breach.rules_due_at, breach.rules_attempts) == (None, 0)
    conversation.refresh_from_db()
    assert conversation.sla_check_at is None


def test_the_check_finds_due_conversations_with_one_query_whatever_their_number(
    django_assert_max_num_queries,
):
    _policy(first_response_minutes=60, resolution_minutes=None, at_risk_minutes=0)
    channel = ChannelFactory()
    ingest(channel=channel, posts=[post(f"p{i}", author=f"a{i}") for i in range(5)])
    future = datetime(2026, 1, 1, tzinfo=UTC)
    # One scan for the clocks, one for breach rules waiting to be tried again.
    with django_assert_max_num_queries(2):
        assert sla_check(now=future) == []


def test_the_check_finds_every_due_conversation_in_one_scan_through_the_partial_index():
    _policy(first_response_minutes=60, resolution_minutes=None, at_risk_minutes=0)
    channel = ChannelFactory()
    ingest(channel=channel, posts=[post(f"p{i}", author=f"a{i}") for i in range(5)])
    with CaptureQueriesContext(connection) as captured:
        fired = sla_check(now=datetime(2026, 1, 6, tzinfo=UTC))
    assert len({f.conversation_id for f in fired}) == 5
    # One statement finds them all, most pressing first (each is then claimed by its key).
    scans = [
        q["sql"]
        for q in captured.captured_queries
        if 'ORDER BY "conversations_conversation"."sla_check_at"' in q["sql"]
    ]
    assert len(scans) == 1

    assert "conv_sla_check_idx" in query_plan(scans[0])


def test_breach_rules_waiting_for_a_retry_are_found_by_one_scan_through_their_index(
    failing_rules,
):
    _failed_once(failing_rules)
    with CaptureQueriesContext(connection) as captured:
        sla_check(now=BREACH_AT + timedelta(minutes=1))
    scans = [
        q["sql"]
        for q in captured.captured_queries
        if 'ORDER BY "conversations_slaevent"."rules_due_at"' in q["sql"]
    ]
    assert len(scans) == 1
    assert failing_rules["calls"] == 2
    assert "sla_event_rules_due_idx" in query_plan(scans[0])


def test_the_inbox_filters_and_sorts_by_sla_state(client):
    _policy(first_response_minutes=60, resolution_minutes=None, at_risk_minutes=15)
    admin = UserFactory(role="admin")
    channel = ChannelFactory()
    now = datetime.now(tz=UTC)
    late = _conversation(channel, "late", at=now - timedelta(hours=2), author="a")
    close = _conversation(channel, "close", at=now - timedelta(minutes=50), author="b")
    fine = _conversation(channel, "fine", at=now, author="c")
    client.force_login(admin)

    def listed(query):
        page = client.get(f"/inbox/?{query}").context["page"]
        return [c["pk"] for c in page.rows]

    assert listed("sla=breached") == [late.pk]
    assert listed("sla=at_risk") == [close.pk]
    assert listed("sla=ok") == [fine.pk]
    assert listed("sort=sla") == [late.pk, close.pk, fine.pk]
    # Each state is said in words on its row, not only by the badge's colour.
    page = client.get("/inbox/").content.decode()
    badges = dict(re.findall(r'<span class="badge sla sla-([a-z-]+)"[^>]*>([^<]*)</span>', page))
    assert set(badges) == {"breached", "at-risk", "ok"}
    assert re.fullmatch(r"SLA breached \S.* ago", badges["breached"])
    assert re.fullmatch(r"SLA at risk: due in \S.*", badges["at-risk"])
    assert re.fullmatch(r"SLA due in \S.*", badges["ok"])


def test_snoozing_pauses_and_waking_resumes():
    _policy(first_response_minutes=None, resolution_minutes=120)
    now = datetime.now(tz=UTC)
    conversation = _conversation(ChannelFactory(), at=now)
    services.conversation_snooze(
        conversation=conversation, until=now + timedelta(hours=1), actor=UserFactory()
    )
    conversation.refresh_from_db()
    assert conversation.sla_paused_at is not None
    services.snoozes_wake(now=now + timedelta(hours=2))
    conversation.refresh_from_db()
    assert conversation.status == Status.OPEN
    assert conversation.sla_paused_at is None
    assert conversation.resolution_due_at > now + timedelta(hours=3)


def test_vip_contacts_get_the_vip_policy():
    _policy(name="Everyone", first_response_minutes=240)
    _policy(name="VIP", vip_only=True, first_response_minutes=30)
    channel = ChannelFactory()
    contact = ContactFactory(is_vip=True, email="vip@example.com")
    ingest(channel=channel, posts=[post("v1", author="vip", email="vip@example.com")])
    conversation = Conversation.objects.get(messages__external_id="v1")
    assert conversation.contact_id == contact.pk
    assert conversation.sla_policy.name == "VIP"


# --- A policy brought in by a priority change ----------------------------------------------


def _urgent_policy(resolution_minutes=8 * 60):
    return SlaPolicy.objects.create(
        name="Urgent",
        priority=Priority.URGENT,
        first_response_minutes=60,
        resolution_minutes=resolution_minutes,
        at_risk_minutes=15,
    )


def test_a_policy_brought_to_a_pending_conversation_waits_for_the_customer():
    _urgent_policy()
    channel = ChannelFactory()
    started = timezone.now() - timedelta(minutes=5)
    ingest(channel=channel, posts=[post("p1", at=started)])
    conversation = Conversation.objects.get(messages__external_id="p1")
    assert conversation.sla_policy is None  # normal priority: no policy, no clock
    services.conversation_status_set(conversation=conversation, status=Status.PENDING, actor=None)

    services.conversation_priority_set(
        conversation=conversation, priority=Priority.URGENT, actor=UserFactory()
    )

    conversation.refresh_from_db()
    assert (conversation.status, conversation.sla_policy.name) == (Status.PENDING, "Urgent")
    assert conversation.sla_paused_at is not None
    assert conversation.sla_due_at is conversation.sla_check_at is None  # the beat leaves it
    # The customer answers: the clocks run again, with the time they had left.
    ingest(channel=channel, posts=[post("p2", reply_to="p1", at=timezone.now())])
    conversation.refresh_from_db()
    assert conversation.sla_paused_at is None
    assert conversation.first_response_due_at > timezone.now() + timedelta(minutes=50)


@pytest.mark.parametrize("by", ["customer", "agent"])
def test_a_target_a_new_policy_brings_after_a_reopening_runs_from_the_reopening(by):
    SlaPolicy.objects.create(
        name="Normal", first_response_minutes=60, resolution_minutes=None, at_risk_minutes=15
    )
    _urgent_policy()
    channel = ChannelFactory()
    now = timezone.now().replace(microsecond=0)
    created = now - timedelta(days=3)
    ingest(channel=channel, posts=[post("p1", at=created)])
    conversation = Conversation.objects.get(messages__external_id="p1")
    assert conversation.sla_started_at is None  # the first round starts at the creation
    services.conversation_status_set(
        conversation=conversation,
        status=Status.RESOLVED,
        actor=None,
        at=created + timedelta(minutes=10),
    )
    reopened_at = now - timedelta(minutes=5)
    if by == "customer":
        ingest(channel=channel, posts=[post("p2", reply_to="p1", at=reopened_at)])
    else:
        services.conversation_status_set(
            conversation=conversation, status=Status.OPEN, actor=UserFactory(), at=reopened_at
        )
    conversation.refresh_from_db()
    assert (conversation.status, conversation.sla_started_at) == (Status.OPEN, reopened_at)

    services.conversation_priority_set(
        conversation=conversation, priority=Priority.URGENT, actor=UserFactory()
    )

    conversation.refresh_from_db()
    assert conversation.sla_policy.name == "Urgent"
    # Urgent's 8 hours to resolve run from the reopening, not from the creation days ago.
    assert conversation.resolution_due_at == reopened_at + timedelta(hours=8)
    assert conversation.sla_state() != SlaState.BREACHED


def test_the_round_of_a_conversation_reopened_before_the_field_existed_is_found():
    migration = importlib.import_module("conversations.migrations.0014_sla_round_start")
    t = timezone.now().replace(microsecond=0) - timedelta(days=2)
    by_customer, by_agent, only_pending, resolved, never = (
        ConversationFactory(status=status, created_at=t)
        for status in (Status.OPEN, Status.OPEN, Status.PENDING, Status.RESOLVED, Status.OPEN)
    )

    def event(conversation, kind, at, **data):
        ConversationEvent.objects.create(
            conversation=conversation, kind=kind, data=data, created_at=at
        )

    event(by_customer, EventKind.REOPENED, t + timedelta(hours=1))
    event(by_customer, EventKind.REOPENED, t + timedelta(hours=5))
    event(
        by_agent, EventKind.STATUS_CHANGED, t + timedelta(hours=2), previous="closed", status="open"
    )
    event(
        only_pending,
        EventKind.STATUS_CHANGED,
        t + timedelta(hours=3),
        previous="open",
        status="pending",
    )
    event(resolved, EventKind.REOPENED, t + timedelta(hours=4))
    Conversation.objects.update(sla_started_at=None)

    migration._rounds_started(django_apps, None)

    started = dict(Conversation.objects.values_list("pk", "sla_started_at"))
    assert started == {
        by_customer.pk: t + timedelta(hours=5),
        by_agent.pk: t + timedelta(hours=2),
        only_pending.pk: None,
        resolved.pk: None,  # a new round starts when it is reopened
        never.pk: None,
    }
