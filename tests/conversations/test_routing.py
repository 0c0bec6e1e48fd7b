"""Routing rules run by the ingest pipeline: conditions, actions, auto-assignment, timeline."""

import re
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import responses
from django.core import mail
from django.db import connection
from django.db.models import Q
from django.test.utils import CaptureQueriesContext

from channels_ingest.models import ChannelMode
from channels_ingest.pipeline import ingest
from conversations import presence
from conversations.escalations import escalation_open
from conversations.models import (
    BusinessCalendar,
    Conversation,
    ConversationEvent,
    DeliveryStatus,
    Department,
    DepartmentDelivery,
    Direction,
    Escalation,
    EscalationLevel,
    EscalationPath,
    EscalationTrigger,
    EventKind,
    Holiday,
    Message,
    Notification,
    Priority,
    RoutingRule,
    SlaPolicy,
    Status,
    WebhookCall,
    WebhookEndpoint,
)
from conversations.routing import RuleBook
from conversations.services import conversation_status_set, conversations_bulk_apply
from conversations.sla import sla_check
from governance.models import TeamMembership
from tests.factories import (
    ChannelAccessFactory,
    ChannelFactory,
    ContactFactory,
    ConversationFactory,
    SlaPolicyFactory,
    TagFactory,
    TeamFactory,
    TeamMembershipFactory,
    UserFactory,
    post,
)

pytestmark = pytest.mark.django_db

MONDAY_NOON = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def rule(name="Rule", events=("message_received",), conditions=(), actions=(), **fields):
    return RoutingRule.objects.create(
        name=name,
        events=list(events),
        conditions=list(conditions),
        actions=list(actions),
        position=RoutingRule.objects.count(),
        **fields,
    )


def conversation_of(external_id: str) -> Conversation:
    return Conversation.objects.get(messages__external_id=external_id)


def rules_applied(**filters) -> list[ConversationEvent]:
    """The timeline events listing rules applied, oldest first: those of their own, and the
    creation of a conversation the rules applied to as it was created."""
    return list(
        ConversationEvent.objects.filter(
            Q(kind=EventKind.RULE_APPLIED) | Q(kind=EventKind.CREATED, data__has_key="rules"),
            **filters,
        ).order_by("id")
    )


def test_a_matching_rule_sets_priority_team_and_tags_and_is_on_the_timeline():
    billing = TeamFactory(name="Billing")
    tag = TagFactory(name="refund")
    rule(
        name="Refunds",
        conditions=[{"field": "text", "op": "contains_any", "value": ["refund"]}],
        actions=[
            {"type": "set_priority", "value": Priority.URGENT},
            {"type": "set_team", "value": billing.pk},
            {"type": "add_tags", "value": [tag.pk]},
        ],
    )
    channel = ChannelFactory()
    ingest(
        channel=channel,
        posts=[post("r1", body="I want a refund!"), post("n1", author="u2", body="Nice shop")],
    )

    refund = conversation_of("r1")
    assert refund.priority == Priority.URGENT
    assert refund.team == billing
    assert list(refund.tags.values_list("name", flat=True)) == ["refund"]
    # Applied as the conversation was created: its creation lists them, in one event.
    [applied] = rules_applied(conversation=refund)
    assert applied.kind == EventKind.CREATED
    assert not refund.events.filter(kind=EventKind.RULE_APPLIED).exists()
    assert applied.data == {
        "rules": [
            {
                "rule": RoutingRule.objects.get().pk,
                "name": "Refunds",
                "event": "message_received",
                "priority": [Priority.NORMAL, Priority.URGENT],
                "team": [None, billing.pk],
                "tags": [tag.pk],
            }
        ],
    }

    other = conversation_of("n1")
    assert other.priority == Priority.NORMAL
    assert not other.tags.exists()


def test_the_rules_a_batch_applies_to_a_conversation_share_one_timeline_entry():
    urgent, dm = TagFactory(name="urgent"), TagFactory(name="dm")
    first = rule(
        name="Outages",
        conditions=[{"field": "text", "op": "contains_any", "value": ["not working"]}],
        actions=[
            {"type": "set_priority", "value": Priority.URGENT},
            {"type": "add_tags", "value": [urgent.pk]},
        ],
    )
    rule(
        name="Finds it as it wants",
        conditions=[{"field": "text", "op": "contains_any", "value": ["hello"]}],
        actions=[{"type": "set_priority", "value": Priority.NORMAL}],
    )
    second = rule(
        name="Direct messages",
        events=["conversation_created", "message_received"],
        conditions=[{"field": "kind", "op": "is", "value": ["dm"]}],
        actions=[{"type": "add_tags", "value": [dm.pk]}, {"type": "mark_monitoring"}],
    )
    channel = ChannelFactory()
    later = MONDAY_NOON + timedelta(minutes=5)
    ingest(
        channel=channel,
        posts=[
            post("d1", kind="dm", thread="t1", body="Hello", at=MONDAY_NOON),
            post("d2", kind="dm", thread="t1", body="The app is not working", at=later),
            post("q1", author="u2", body="Any news?"),
        ],
    )

    conversation = conversation_of("d1")
    assert conversation_of("d2") == conversation
    [applied] = rules_applied()
    assert applied.conversation == conversation
    assert applied.kind == EventKind.CREATED
    assert applied.created_at == MONDAY_NOON
    # The rule that found the priority as it wanted is left out; the second message's
    # rule carries the time of that message.
    assert applied.data == {
        "rules": [
            {
                "rule": second.pk,
                "name": "Direct messages",
                "event": "conversation_created",
                "tags": [dm.pk],
                "monitoring": True,
            },
            {
                "rule": first.pk,
                "name": "Outages",
                "event": "message_received",
                "priority": [Priority.NORMAL, Priority.URGENT],
                "tags": [urgent.pk],
                "at": later.isoformat(),
            },
        ],
    }

    # A later batch has an entry of its own, with what its rules did then: here nothing (the
    # tags are there already, priority and monitoring as the rules want them), so none.
    latest = later + timedelta(minutes=5)
    ingest(
        channel=channel,
        posts=[post("d3", kind="dm", thread="t1", body="still not working", at=latest)],
    )
    assert rules_applied() == [applied]


def test_a_tag_the_conversation_has_from_an_earlier_batch_is_not_added_again():
    vip, orders = TagFactory(name="vip"), TagFactory(name="orders")
    tagging = rule(name="Tag", actions=[{"type": "add_tags", "value": [vip.pk, orders.pk]}])
    channel = ChannelFactory()
    ingest(channel=channel, posts=[post("p1", at=MONDAY_NOON)])
    conversation = conversation_of("p1")
    conversation.tags.remove(orders)  # an agent took one off; the other stays

    later = MONDAY_NOON + timedelta(minutes=5)
    ingest(channel=channel, posts=[post("p2", at=later)])
    assert conversation_of("p2") == conversation
    assert set(conversation.tags.all()) == {vip, orders}
    newest = rules_applied()[-1]
    assert newest.kind == EventKind.RULE_APPLIED
    assert newest.created_at == later
    assert newest.data["rules"] == [
        {"rule": tagging.pk, "name": "Tag", "event": "message_received", "tags": [orders.pk]}
    ]

    ingest(channel=channel, posts=[post("p3", at=later + timedelta(minutes=5))])
    assert rules_applied()[-1] == newest


def test_tags_of_new_conversations_go_in_apart_and_an_existing_ones_added_meanwhile_are_kept():
    from conversations.services import _tags_insert

    tag, other = TagFactory(name="orders"), TagFactory(name="billing")
    existing, new = ConversationFactory(), ConversationFactory()
    existing.tags.add(tag)  # an agent added it after the batch read the conversation's tags
    with CaptureQueriesContext(connection) as captured:
        _tags_insert(
            {(existing.pk, tag.pk), (existing.pk, other.pk), (new.pk, tag.pk)}, new_ids={new.pk}
        )
    statements = [q["sql"] for q in captured.captured_queries]
    if connection.vendor == "postgresql":  # the new conversation's by COPY, then the others
        assert len(statements) == 2
        assert statements[0].startswith("COPY") and "ON CONFLICT" in statements[1]
    else:  # SQLite: one statement, as cheap
        assert len(statements) == 1 and "ON CONFLICT" in statements[0]
    assert set(existing.tags.all()) == {tag, other}
    assert list(new.tags.all()) == [tag]


def test_a_rule_applied_to_two_messages_of_a_batch_is_named_once():
    rule(
        name="Urgent",
        conditions=[{"field": "text", "op": "contains_any", "value": ["urgent"]}],
        actions=[{"type": "set_priority", "value": Priority.URGENT}],
    )
    rule(
        name="Calm",
        conditions=[{"field": "text", "op": "contains_any", "value": ["calm"]}],
        actions=[{"type": "set_priority", "value": Priority.LOW}],
    )
    times = [MONDAY_NOON + timedelta(minutes=n) for n in range(3)]
    ingest(
        channel=ChannelFactory(),
        posts=[
            post("p1", body="urgent", at=times[0]),
            post("p2", reply_to="p1", body="calm now", at=times[1]),
            post("p3", reply_to="p1", body="urgent again", at=times[2]),
        ],
    )
    [applied] = rules_applied()
    assert "name" not in applied.data  # the timeline names the rules from their entries
    from conversations.selectors import conversation_timeline

    conversation = conversation_of("p1")
    [entry] = [
        e
        for e in conversation_timeline(conversation=conversation).entries
        if e["kind_label"] == "Routing rule applied"
    ]
    assert entry["name"] == "Urgent, Calm"
    assert [(e["name"], e["priority"], e.get("at")) for e in applied.data["rules"]] == [
        ("Urgent", [Priority.NORMAL, Priority.URGENT], None),
        ("Calm", [Priority.URGENT, Priority.LOW], times[1].isoformat()),
        ("Urgent", [Priority.LOW, Priority.URGENT], times[2].isoformat()),
    ]
    assert conversation_of("p1").priority == Priority.URGENT


def test_rules_first_applied_to_a_later_message_of_a_new_conversation_have_their_own_entry():
    rule(
        name="Urgent",
        conditions=[{"field": "text", "op": "contains_any", "value": ["urgent"]}],
        actions=[{"type": "set_priority", "value": Priority.URGENT}],
    )
    later = MONDAY_NOON + timedelta(minutes=3)
    ingest(
        channel=ChannelFactory(),
        posts=[
            post("p1", body="hello", at=MONDAY_NOON),
            post("p2", reply_to="p1", body="urgent", at=later),
        ],
    )
    # Nothing applied as it was created: the creation stays bare, the rule has its entry
    # at the time of the message it applied to.
    created = ConversationEvent.objects.get(kind=EventKind.CREATED)
    assert created.data == {}
    [applied] = rules_applied()
    assert (applied.kind, applied.created_at) == (EventKind.RULE_APPLIED, later)
    assert [e["name"] for e in applied.data["rules"]] == ["Urgent"]


def test_the_timeline_names_every_rule_a_batch_applied(login, world):
    tag = TagFactory(name="vip")
    rule(name="Tag them", actions=[{"type": "add_tags", "value": [tag.pk]}])
    rule(name="Make it urgent", actions=[{"type": "set_priority", "value": Priority.URGENT}])
    ingest(channel=world.channel_a, posts=[post("p1", author="new-author")])
    conversation = conversation_of("p1")
    page = login(world.admin).get(f"/inbox/{conversation.pk}/").content.decode()
    # One event for both: shown as two entries, the rules above the creation.
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))
    assert re.search(r"Routing rule applied “Tag them, Make it urgent”.*Conversation created", text)
    assert "Conversation created “" not in text


def test_a_rule_on_existing_conversations_updates_them():
    channel = ChannelFactory()
    ingest(channel=channel, posts=[post("p1", body="Hello")])
    rule(
        conditions=[{"field": "sentiment", "op": "below", "value": -0.3}],
        actions=[{"type": "set_priority", "value": Priority.HIGH}],
    )
    ingest(
        channel=channel,
        posts=[post("p2", reply_to="p1", body="This is terrible, awful service, I hate it")],
    )
    assert conversation_of("p1").priority == Priority.HIGH


def test_a_rule_that_finds_everything_as_it_wants_leaves_no_timeline_entry():
    rule(actions=[{"type": "set_priority", "value": Priority.NORMAL}])
    ingest(channel=ChannelFactory(), posts=[post("p1")])
    assert not rules_applied()
    assert ConversationEvent.objects.get(kind=EventKind.CREATED).data == {}


def test_conversation_created_rules_run_once_for_the_first_message_only():
    tag = TagFactory(name="new")
    rule(events=["conversation_created"], actions=[{"type": "add_tags", "value": [tag.pk]}])
    channel = ChannelFactory()
    ingest(channel=channel, posts=[post("p1"), post("p2", reply_to="p1")])
    conversation = conversation_of("p1")
    assert conversation_of("p2") == conversation
    assert len(rules_applied()) == 1


def _reopening_rule():
    tag = TagFactory(name="reopened")
    reopened = rule(
        name="Reopened go up",
        events=["conversation_reopened"],
        actions=[
            {"type": "set_priority", "value": Priority.HIGH},
            {"type": "add_tags", "value": [tag.pk]},
        ],
    )
    return reopened, tag.pk


def test_a_customer_message_reopening_a_resolved_conversation_runs_the_reopened_rules():
    channel = ChannelFactory()
    ingest(channel=channel, posts=[post("p1"), post("o1", author="u2")])
    conversation_status_set(
        conversation=conversation_of("p1"), status=Status.RESOLVED, actor=UserFactory()
    )
    reopened, tag = _reopening_rule()

    later = MONDAY_NOON + timedelta(hours=1)
    ingest(
        channel=channel,
        posts=[
            post("p2", reply_to="p1", body="It broke again", at=later),
            post("o2", author="u2", reply_to="o1", body="Any news?", at=later),
        ],
    )

    conversation = conversation_of("p2")
    assert conversation == conversation_of("p1")
    assert conversation.status == Status.OPEN
    assert conversation.priority == Priority.HIGH
    assert list(conversation.tags.values_list("pk", flat=True)) == [tag]
    [applied] = rules_applied()
    assert applied.conversation == conversation
    assert applied.data["rules"] == [
        {
            "rule": reopened.pk,
            "name": "Reopened go up",
            "event": "conversation_reopened",
            "priority": [Priority.NORMAL, Priority.HIGH],
            "tags": [tag],
        }
    ]
    # A message on a conversation that was open all along reopens nothing.
    assert conversation_of("o2").priority == Priority.NORMAL


def test_an_agent_reopening_a_conversation_runs_the_reopened_rules():
    agent = UserFactory()
    ingest(channel=ChannelFactory(), posts=[post("p1", body="The app is not working")])
    conversation = conversation_of("p1")
    reopened, tag = _reopening_rule()
    # Resolving, and moving between open states, is no reopening.
    conversation = conversation_status_set(
        conversation=conversation, status=Status.PENDING, actor=agent
    )
    conversation = conversation_status_set(
        conversation=conversation, status=Status.RESOLVED, actor=agent
    )
    assert not rules_applied()

    conversation = conversation_status_set(
        conversation=conversation, status=Status.OPEN, actor=agent
    )

    # What the rules changed is in the conversation handed back, and stored.
    assert conversation.status == Status.OPEN
    assert conversation.priority == Priority.HIGH
    stored = Conversation.objects.get(pk=conversation.pk)
    assert (stored.status, stored.priority) == (Status.OPEN, Priority.HIGH)
    assert list(stored.tags.values_list("pk", flat=True)) == [tag]
    [applied] = rules_applied()
    assert applied.kind == EventKind.RULE_APPLIED
    assert [(e["rule"], e["event"]) for e in applied.data["rules"]] == [
        (reopened.pk, "conversation_reopened")
    ]

    # Closed, then reopened: the rules run again, and find everything as they want it.
    conversation_status_set(conversation=conversation, status=Status.CLOSED, actor=agent)
    conversation_status_set(conversation=conversation, status=Status.OPEN, actor=agent)
    assert rules_applied() == [applied]


def test_an_acknowledgement_on_reopening_by_hand_answers_the_customers_latest_post():
    agent = UserFactory()
    channel = ChannelFactory()
    ingest(channel=channel, posts=[post("p1"), post("p2", reply_to="p1", body="Hello?")])
    conversation = conversation_status_set(
        conversation=conversation_of("p1"), status=Status.RESOLVED, actor=agent
    )
    rule(
        events=["conversation_reopened"],
        actions=[{"type": "acknowledge", "value": "We are back on it, {first_name}."}],
    )
    conversation_status_set(conversation=conversation, status=Status.OPEN, actor=agent)
    [ack] = Message.objects.filter(direction=Direction.OUT)
    assert (ack.body, ack.in_reply_to_external_id) == ("We are back on it, Name.", "p2")


def test_a_failing_rule_does_not_undo_an_agents_reopening(monkeypatch, caplog):
    agent = UserFactory()
    ingest(channel=ChannelFactory(), posts=[post("p1")])
    conversation = conversation_status_set(
        conversation=conversation_of("p1"), status=Status.RESOLVED, actor=agent
    )
    _reopening_rule()

    def broken(**kwargs):
        Conversation.objects.filter(pk=conversation.pk).update(priority=Priority.URGENT)
        raise RuntimeError("a rule broke")

    monkeypatch.setattr("conversations.services.rules_run", broken)
    conversation = conversation_status_set(
        conversation=conversation, status=Status.OPEN, actor=agent
    )
    stored = Conversation.objects.get(pk=conversation.pk)
    # The agent's change stands; what the failing rules did is undone.
    assert (stored.status, stored.priority) == (Status.OPEN, Priority.NORMAL)
    assert "Rules on the reopening of conversation" in caplog.text


def test_reopening_in_bulk_reads_the_rules_once(login, world, monkeypatch):
    agent = world.admin
    ingest(channel=world.channel_a, posts=[post(f"b{i}", author=f"a{i}") for i in range(3)])
    ids = [conversation_of(f"b{i}").pk for i in range(3)]
    for pk in ids:
        conversation_status_set(
            conversation=Conversation.objects.get(pk=pk), status=Status.RESOLVED, actor=agent
        )
    _reopening_rule()
    loads = []
    real_load = RuleBook.load
    monkeypatch.setattr(RuleBook, "load", classmethod(lambda cls: loads.append(1) or real_load()))
    outcomes = conversations_bulk_apply(user=agent, ids=ids, action="status", status=Status.OPEN)
    assert [o.done for o in outcomes] == [True, True, True]
    assert len(loads) == 1
    assert set(Conversation.objects.filter(pk__in=ids).values_list("priority", flat=True)) == {
        Priority.HIGH
    }


def test_stop_processing_keeps_later_rules_from_running():
    rule(
        name="First",
        actions=[{"type": "set_priority", "value": Priority.HIGH}],
        stop_processing=True,
    )
    rule(name="Second", actions=[{"type": "set_priority", "value": Priority.LOW}])
    ingest(channel=ChannelFactory(), posts=[post("p1")])
    assert conversation_of("p1").priority == Priority.HIGH
    [applied] = rules_applied()
    assert [entry["name"] for entry in applied.data["rules"]] == ["First"]


def test_later_rules_see_the_tags_earlier_rules_added():
    first, second = TagFactory(name="angry"), TagFactory(name="escalate-me")
    rule(name="Tag", actions=[{"type": "add_tags", "value": [first.pk]}])
    rule(
        name="Follow up",
        conditions=[{"field": "tags", "op": "has_any", "value": [first.pk]}],
        actions=[{"type": "add_tags", "value": [second.pk]}],
    )
    ingest(channel=ChannelFactory(), posts=[post("p1")])
    assert set(conversation_of("p1").tags.values_list("name", flat=True)) == {
        "angry",
        "escalate-me",
    }


def test_vip_follower_and_kind_conditions_use_the_authors_facts():
    rule(
        match="all",
        conditions=[
            {"field": "vip", "op": "is", "value": True},
            {"field": "followers", "op": "above", "value": 1000},
            {"field": "kind", "op": "is", "value": ["mention"]},
        ],
        actions=[{"type": "set_priority", "value": Priority.URGENT}],
    )
    ContactFactory(is_vip=True, email="star@example.com")
    ingest(
        channel=ChannelFactory(),
        posts=[
            post("star", author="s", email="star@example.com", followers=50_000),
            post("plain", author="p", followers=50_000),
        ],
    )
    assert conversation_of("star").priority == Priority.URGENT
    assert conversation_of("plain").priority == Priority.NORMAL


def test_the_vips_and_the_tags_of_a_batch_are_read_in_one_statement():
    known = TagFactory(name="known")
    vip_tag = TagFactory(name="vip")
    rule(
        name="VIPs",
        conditions=[{"field": "vip", "op": "is", "value": True}],
        actions=[{"type": "add_tags", "value": [vip_tag.pk]}],
    )
    rule(
        name="Known ones go up",
        conditions=[{"field": "tags", "op": "has_any", "value": [known.pk]}],
        actions=[{"type": "set_priority", "value": Priority.HIGH}],
    )
    channel = ChannelFactory()
    ContactFactory(is_vip=True, email="star@example.com")
    ingest(
        channel=channel,
        posts=[post("star", author="s", email="star@example.com"), post("plain", author="p")],
    )
    conversation_of("plain").tags.add(known)

    with CaptureQueriesContext(connection) as captured:
        ingest(
            channel=channel,
            posts=[
                post("star2", author="s", reply_to="star", body="Me again"),
                post("plain2", author="p", reply_to="plain", body="And me"),
            ],
        )

    facts = [q["sql"] for q in captured if '"is_vip"' in q["sql"] or "_tags" in q["sql"]]
    assert "UNION ALL" in facts[0]
    assert len([sql for sql in facts if sql.startswith("SELECT")]) == 1
    star, plain = conversation_of("star2"), conversation_of("plain2")
    assert set(star.tags.values_list("name", flat=True)) == {"vip"}
    assert star.priority == Priority.NORMAL
    assert set(plain.tags.values_list("name", flat=True)) == {"known"}
    assert plain.priority == Priority.HIGH


def _calendar(name, time_zone, weekly_hours, holidays=(), is_default=False):
    calendar = BusinessCalendar.objects.create(
        name=name, time_zone=time_zone, weekly_hours=weekly_hours, is_default=is_default
    )
    for day in holidays:
        Holiday.objects.create(calendar=calendar, date=day)
    return calendar


def test_business_hours_of_posts_in_time_order_are_those_of_the_calendar(monkeypatch):
    """Spans remembered between posts give the calendar's own answer for every moment:
    across a DST change, a holiday, back-to-back hours, midnight and hours shorter than a
    span, at the boundaries and a microsecond either side, in order or not."""
    import random

    from conversations import business_hours, setup_cache
    from conversations.routing import Calendars

    berlin = _calendar(
        "Berlin",
        "Europe/Berlin",
        {
            **{str(d): [["08:00", "12:00"], ["12:00", "20:00"]] for d in range(5)},
            "5": [["10:00", "16:00"]],
        },
        holidays=[datetime(2026, 4, 3).date()],
        is_default=True,
    )
    new_york = _calendar("New York", "America/New_York", {"0": [["00:00", "24:00"]]})
    brief = _calendar("Brief", "UTC", {"6": [["09:00", "09:05"]], "2": [["23:58", "24:00"]]})
    chance = random.Random(7)
    start = datetime(2026, 3, 25, tzinfo=UTC)
    moments = sorted(start + timedelta(seconds=chance.randrange(14 * 86400)) for _ in range(3000))
    loaded = setup_cache.business_calendars()
    tick = timedelta(microseconds=1)
    for calendar in (berlin, new_york, brief):
        zone = ZoneInfo(calendar.time_zone)
        clocks = {c for hours in calendar.weekly_hours.values() for pair in hours for c in pair}
        for day in range(15):
            midnight = datetime.combine(start.date() + timedelta(days=day), time(0), zone)
            for clock in clocks:
                hour, minute = map(int, clock.split(":"))
                edge = midnight + timedelta(hours=hour, minutes=minute)
                moments += [edge - tick, edge, edge + tick]
    moments.sort()
    moments += chance.sample(moments, 200)  # and some out of order

    asked = []
    for name in ("next_opening", "open_until"):
        method = getattr(business_hours.BusinessCalendar, name)
        monkeypatch.setattr(
            business_hours.BusinessCalendar,
            name,
            lambda self, moment, method=method: asked.append(moment) or method(self, moment),
        )
    calendars = Calendars()
    for calendar_id in (berlin.pk, new_york.pk, brief.pk, None):
        chosen = loaded.get(calendar_id)
        expected = [chosen.is_open(m) for m in moments]
        asked.clear()
        assert [calendars.within(calendar_id, m) for m in moments] == expected
        assert len(asked) < len(moments) / 3

    # Posts three seconds apart in open hours: one look at the calendar per stretch of hours
    # (Berlin's 08:00-12:00 then 12:00-20:00, summer time: until 10:00 UTC, then 18:00).
    asked.clear()
    monday = datetime(2026, 3, 30, 9, 0, tzinfo=UTC)
    posts = [monday + timedelta(seconds=3 * n) for n in range(2000)]
    calendars = Calendars()
    assert all(calendars.within(berlin.pk, at) for at in posts)
    assert asked == [monday, datetime(2026, 3, 30, 10, 0, tzinfo=UTC)]


def test_a_batch_reads_the_calendars_once_for_the_sla_clocks_and_the_rules():
    calendar = _calendar("Office", "UTC", {str(d): [["09:00", "17:00"]] for d in range(5)})
    SlaPolicy.objects.create(name="Standard", first_response_minutes=60, calendar=calendar)
    rule(
        conditions=[{"field": "business_hours", "op": "outside", "value": calendar.pk}],
        actions=[{"type": "set_priority", "value": Priority.HIGH}],
    )

    def calendar_reads(external_id):
        with CaptureQueriesContext(connection) as captured:
            ingest(channel=ChannelFactory(), posts=[post(external_id, author=external_id)])
        return sum("conversations_businesscalendar" in q["sql"] for q in captured)

    assert calendar_reads("p1") == 1
    assert conversation_of("p1").first_response_due_at == MONDAY_NOON + timedelta(hours=1)
    RoutingRule.objects.all().delete()
    SlaPolicy.objects.update(calendar=None)
    assert calendar_reads("p2") == 0  # nothing asks about business hours


def test_business_hours_condition_uses_the_default_calendar():
    BusinessCalendar.objects.create(
        name="Office",
        time_zone="UTC",
        is_default=True,
        weekly_hours={str(day): [["09:00", "17:00"]] for day in range(5)},
    )
    tag = TagFactory(name="after-hours")
    rule(
        conditions=[{"field": "business_hours", "op": "outside", "value": None}],
        actions=[{"type": "add_tags", "value": [tag.pk]}],
    )
    ingest(
        channel=ChannelFactory(),
        posts=[
            post("day", author="a", at=MONDAY_NOON),
            post("night", author="b", at=datetime(2026, 1, 5, 22, 0, tzinfo=UTC)),
        ],
    )
    assert not conversation_of("day").tags.exists()
    assert conversation_of("night").tags.get().name == "after-hours"


def test_a_rule_naming_a_deleted_calendar_uses_the_default_hours():
    office = {str(day): [["09:00", "17:00"]] for day in range(5)}
    _calendar("Office", "UTC", office, is_default=True)
    nights = _calendar("Nights", "UTC", {str(day): [["20:00", "23:59"]] for day in range(7)})
    tag = TagFactory(name="after-hours")
    rule(
        conditions=[{"field": "business_hours", "op": "outside", "value": nights.pk}],
        actions=[{"type": "add_tags", "value": [tag.pk]}],
    )
    channel = ChannelFactory()
    ingest(channel=channel, posts=[post("before", author="a", at=MONDAY_NOON)])
    # Noon is outside the night shift's hours.
    assert conversation_of("before").tags.get().name == "after-hours"

    nights.delete()
    ingest(
        channel=channel,
        posts=[
            post("day", author="b", at=MONDAY_NOON + timedelta(minutes=1)),
            post("night", author="c", at=datetime(2026, 1, 5, 22, 0, tzinfo=UTC)),
        ],
    )
    # Not taken as always open (which no post is outside of): the default hours apply.
    assert not conversation_of("day").tags.exists()
    assert conversation_of("night").tags.get().name == "after-hours"


def test_monitoring_rule_keeps_the_conversation_out_of_the_work_views():
    rule(
        conditions=[{"field": "text", "op": "contains_any", "value": ["love"]}],
        actions=[{"type": "mark_monitoring", "value": None}],
    )
    ingest(channel=ChannelFactory(), posts=[post("p1", body="I love this brand")])
    assert conversation_of("p1").is_monitoring


def test_assign_to_a_named_agent():
    agent = UserFactory(role="agent")
    rule(actions=[{"type": "assign", "value": agent.pk}])
    ingest(channel=_channel_of(_team_with(agent)), posts=[post("p1")])
    conversation = conversation_of("p1")
    assert conversation.assignee == agent
    assert conversation.status == Status.OPEN


def test_a_named_agent_who_may_not_reply_on_the_channel_is_not_assigned():
    agent = UserFactory(role="agent")
    rule(actions=[{"type": "assign", "value": agent.pk}])
    ingest(channel=_channel_of(_team_with(agent), can_reply=False), posts=[post("p1")])
    conversation = conversation_of("p1")
    assert conversation.assignee is None
    # Nobody took it: it stays new, in the queue, and the timeline says why.
    assert conversation.status == Status.NEW
    refused = ConversationEvent.objects.get(kind=EventKind.ASSIGNED)
    assert "may not reply" in refused.data["refused"]
    from conversations.selectors import conversation_timeline

    timeline = conversation_timeline(conversation=conversation).entries
    (entry,) = [e for e in timeline if e["kind_label"] == "Assignment refused"]
    assert entry["detail"] == "not assigned: The agent may not reply on this channel."


def test_auto_assignment_skips_online_agents_without_access_to_the_channel():
    ann = UserFactory(role="agent")
    team = _team_with(ann)
    presence.agent_seen(user_id=ann.pk)
    rule(actions=[{"type": "assign", "value": "auto"}])
    ingest(channel=ChannelFactory(default_team=team), posts=[post("p1")])
    assert conversation_of("p1").assignee is None


def test_a_rule_naming_a_deleted_team_or_tag_skips_that_part_and_stores_the_post():
    team, tag = TeamFactory(), TagFactory()
    rule(
        actions=[
            {"type": "set_team", "value": team.pk},
            {"type": "add_tags", "value": [tag.pk]},
            {"type": "set_priority", "value": Priority.HIGH},
        ]
    )
    team.delete()
    tag.delete()
    ingest(channel=ChannelFactory(), posts=[post("p1")])
    conversation = conversation_of("p1")
    assert conversation.priority == Priority.HIGH
    assert not conversation.tags.exists()


def _team_with(*agents, capacity=None):
    team = TeamFactory()
    for agent in agents:
        TeamMembershipFactory(team=team, user=agent)
    TeamMembership.objects.filter(team=team).update(capacity=capacity)
    return team


def _channel_of(team, can_reply=True):
    channel = ChannelFactory(default_team=team)
    ChannelAccessFactory(channel=channel, team=team, can_reply=can_reply)
    return channel


def test_auto_assignment_takes_turns_among_online_agents():
    ann, ben, cid = (UserFactory(role="agent") for _ in range(3))
    team = _team_with(ann, ben, cid)
    for agent in (ann, ben):
        presence.agent_seen(user_id=agent.pk)
    rule(actions=[{"type": "assign", "value": "auto"}])
    channel = _channel_of(team)
    ingest(channel=channel, posts=[post(f"p{i}", author=f"a{i}") for i in range(4)])

    assignees = [conversation_of(f"p{i}").assignee_id for i in range(4)]
    # Cid is offline and gets nothing; the two online agents alternate.
    assert sorted(assignees) == sorted([ann.pk, ann.pk, ben.pk, ben.pk])
    assert assignees[0] != assignees[1]
    assert ConversationEvent.objects.filter(kind=EventKind.ASSIGNED, data__auto=True).count() == 4


def test_auto_assignment_respects_capacity_and_leaves_the_rest_in_the_queue():
    ann = UserFactory(role="agent")
    team = _team_with(ann, capacity=2)
    presence.agent_seen(user_id=ann.pk)
    rule(actions=[{"type": "assign", "value": "auto"}])
    channel = _channel_of(team)
    ingest(channel=channel, posts=[post(f"p{i}", author=f"a{i}") for i in range(3)])
    assignees = [conversation_of(f"p{i}").assignee_id for i in range(3)]
    assert assignees.count(ann.pk) == 2
    assert assignees.count(None) == 1


def test_auto_assignment_continues_the_rotation_across_batches():
    ann, ben = UserFactory(role="agent"), UserFactory(role="agent")
    team = _team_with(ann, ben)
    for agent in (ann, ben):
        presence.agent_seen(user_id=agent.pk)
    rule(actions=[{"type": "assign", "value": "auto"}])
    channel = _channel_of(team)
    ingest(channel=channel, posts=[post("p1", author="a1")])
    ingest(channel=channel, posts=[post("p2", author="a2")])
    assert {conversation_of("p1").assignee_id, conversation_of("p2").assignee_id} == {
        ann.pk,
        ben.pk,
    }


def test_nobody_online_leaves_the_conversation_unassigned():
    team = _team_with(UserFactory(role="agent"))
    rule(actions=[{"type": "assign", "value": "auto"}])
    ingest(channel=_channel_of(team), posts=[post("p1")])
    assert conversation_of("p1").assignee is None


def test_an_acknowledgement_is_sent_through_the_channel_with_the_customers_name(
    django_capture_on_commit_callbacks,
):
    rule(
        events=["conversation_created"],
        actions=[{"type": "acknowledge", "value": "Thanks {first_name}, we are on it."}],
    )
    channel = ChannelFactory()
    with django_capture_on_commit_callbacks(execute=True):
        ingest(channel=channel, posts=[post("p1")])
    conversation = conversation_of("p1")
    ack = Message.objects.get(conversation=conversation, direction=Direction.OUT)
    assert ack.body == "Thanks Name, we are on it."
    assert ack.in_reply_to_external_id == "p1"
    assert ack.delivery_status == DeliveryStatus.SENT  # the demo connector sent it
    # An automatic message is no response by a person: the customer still waits.
    assert conversation.waiting_since is not None
    assert conversation.first_response_at is None


def test_acknowledgements_of_a_batch_are_stored_as_the_messages_they_are():
    rule(
        events=["conversation_created"],
        actions=[{"type": "acknowledge", "value": "Thanks {first_name}!"}],
    )
    channel = ChannelFactory()
    ingest(
        channel=channel,
        posts=[
            post("dm1", author="a", kind="dm", thread="t1"),
            post("m1", author="b"),
            post("m2", author="c", reply_to="m1"),  # joins the first mention's conversation
        ],
    )
    stored = {
        m.conversation_id: m
        for m in Message.objects.filter(direction=Direction.OUT).select_related("conversation")
    }
    assert len(stored) == 2
    dm, mention = stored[conversation_of("dm1").pk], stored[conversation_of("m1").pk]
    assert (dm.kind, dm.body, dm.in_reply_to_external_id) == ("dm", "Thanks Name!", "dm1")
    assert (mention.kind, mention.in_reply_to_external_id) == ("reply", "m1")
    for message in (dm, mention):
        assert message.channel_id == channel.pk
        assert message.delivery_status == DeliveryStatus.QUEUED
        assert message.created_at == message.received_at == message.conversation.last_message_at
        assert (message.language, message.keywords, message.raw, message.error) == ("", [], {}, "")
        assert message.author_identity_id is None and message.author_user_id is None
        assert message.external_id is None and message.sent_at is None
        assert message.conversation.message_count == (2 if message is dm else 3)


def test_an_acknowledgement_on_a_listen_only_channel_is_refused_and_recorded(login, world):
    rule(name="Say thanks", actions=[{"type": "acknowledge", "value": "Thanks!"}])
    world.channel_a.mode = ChannelMode.LISTEN
    world.channel_a.save(update_fields=["mode"])
    ingest(channel=world.channel_a, posts=[post("p1")])
    conversation = conversation_of("p1")
    assert not Message.objects.filter(conversation=conversation, direction=Direction.OUT).exists()
    refused = ConversationEvent.objects.get(
        conversation=conversation,
        kind=EventKind.RULE_APPLIED,
        data__has_key="acknowledgement_refused",
    )
    assert refused.data["name"] == "Say thanks"
    assert "listen-only" in refused.data["acknowledgement_refused"][0]
    # The timeline names the rule and says why nothing was sent.
    page = login(world.admin).get(f"/inbox/{conversation.pk}/").content.decode()
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))
    assert re.search(
        r"Routing rule applied “Say thanks” — acknowledgement refused: [^<]*listen-only", text
    )


def test_notify_reaches_team_members_in_app_and_by_email(django_capture_on_commit_callbacks):
    ann, ben = UserFactory(role="agent"), UserFactory(role="agent")
    team = _team_with(ann, ben)
    rule(
        actions=[
            {
                "type": "notify",
                "value": {
                    "users": [],
                    "teams": [team.pk],
                    "assignee": False,
                    "email": True,
                    "message": "A complaint came in",
                },
            }
        ]
    )
    with django_capture_on_commit_callbacks(execute=True):
        ingest(channel=_channel_of(team), posts=[post("p1")])
    assert set(Notification.objects.values_list("recipient_id", flat=True)) == {ann.pk, ben.pk}
    assert len(mail.outbox) == 1
    assert set(mail.outbox[0].to) == {ann.email, ben.email}
    assert "A complaint came in" in mail.outbox[0].subject


@responses.activate
def test_a_webhook_action_calls_the_endpoint_once_even_if_the_batch_is_repeated(
    django_capture_on_commit_callbacks,
):
    endpoint = WebhookEndpoint.objects.create(
        name="CRM", url="https://crm.example.com/hook", secret="s3cret"
    )
    responses.post("https://crm.example.com/hook", status=200)
    rule(actions=[{"type": "webhook", "value": {"endpoint": endpoint.pk}}])
    channel = ChannelFactory()
    with django_capture_on_commit_callbacks(execute=True):
        ingest(channel=channel, posts=[post("p1")])
        ingest(channel=channel, posts=[post("p1")])  # a redelivery: a duplicate, nothing new

    assert WebhookCall.objects.count() == 1
    assert len(responses.calls) == 1
    assert responses.calls[0].request.headers["X-SCRM-Signature"].startswith("sha256=")


def test_routing_costs_a_fixed_number_of_queries_whatever_the_batch_size():
    tag = TagFactory()
    rule(
        conditions=[{"field": "tags", "op": "has_none", "value": [tag.pk]}],
        actions=[
            {"type": "set_priority", "value": Priority.HIGH},
            {"type": "add_tags", "value": [tag.pk]},
        ],
    )

    # Who subscribes to webhook events is read once and cached: not part of a batch's cost.
    from conversations.webhook_events import webhook_subscribed

    webhook_subscribed("conversation.created")

    def queries_for(n, prefix):
        channel = ChannelFactory()
        with CaptureQueriesContext(connection) as captured:
            ingest(
                channel=channel,
                posts=[post(f"{prefix}{i}", author=f"{prefix}{i}") for i in range(n)],
            )
        return [re.sub(r"\d+", "N", q["sql"])[:50] for q in captured]

    # (SQLite splits an INSERT of more rows than its 999 parameters allow; 20 rows fit.)
    assert queries_for(5, "a") == queries_for(20, "b")


def test_an_escalate_action_hands_the_conversation_to_the_department():
    billing_team = TeamFactory(name="Billing")
    department = Department.objects.create(
        name="Billing", delivery=DepartmentDelivery.IN_APP, team=billing_team
    )
    rule(
        name="Chargebacks",
        conditions=[{"field": "text", "op": "contains_any", "value": ["chargeback"]}],
        actions=[{"type": "escalate", "value": {"department": department.pk, "reason": "Money"}}],
    )
    ingest(channel=ChannelFactory(), posts=[post("p1", body="Filing a chargeback today")])
    conversation = conversation_of("p1")
    escalation = Escalation.objects.get(conversation=conversation)
    assert conversation.status == Status.ESCALATED
    assert conversation.team == billing_team
    assert (escalation.trigger, escalation.reason, escalation.department) == (
        EscalationTrigger.RULE,
        "Money",
        department,
    )


def test_a_breach_rule_escalates_with_the_sla_as_the_trigger():
    SlaPolicy.objects.create(name="Fast", first_response_minutes=10)
    department = Department.objects.create(
        name="Tier 2", delivery=DepartmentDelivery.IN_APP, team=TeamFactory()
    )
    rule(
        events=["sla_breached"],
        actions=[{"type": "escalate", "value": {"department": department.pk}}],
    )
    ingest(channel=ChannelFactory(), posts=[post("p1", at=MONDAY_NOON)])
    sla_check(now=MONDAY_NOON + timedelta(hours=1))
    assert Escalation.objects.get().trigger == EscalationTrigger.SLA


def test_a_contact_with_an_open_escalation_matches_that_condition():
    tag = TagFactory(name="watch")
    rule(
        conditions=[{"field": "open_escalation", "op": "is", "value": True}],
        actions=[{"type": "add_tags", "value": [tag.pk]}],
    )
    channel = ChannelFactory()
    ingest(channel=channel, posts=[post("p1", author="a")])
    escalation_open(
        conversation=conversation_of("p1"),
        trigger=EscalationTrigger.AGENT,
        actor=UserFactory(),
        department=Department.objects.create(
            name="Tier 2", delivery=DepartmentDelivery.IN_APP, team=TeamFactory()
        ),
    )
    # A DM from the same customer opens a second conversation; they are waiting elsewhere.
    ingest(channel=channel, posts=[post("d1", author="a", kind="dm")])
    assert conversation_of("d1").tags.get() == tag


def test_two_webhook_actions_in_one_rule_call_both_endpoints(django_capture_on_commit_callbacks):
    first = WebhookEndpoint.objects.create(name="A", url="https://a.example.com/hook")
    second = WebhookEndpoint.objects.create(name="B", url="https://b.example.com/hook")
    rule(
        actions=[
            {"type": "webhook", "value": {"endpoint": first.pk}},
            {"type": "webhook", "value": {"endpoint": second.pk}},
        ]
    )
    with responses.RequestsMock() as stub:
        stub.post("https://a.example.com/hook", status=200)
        stub.post("https://b.example.com/hook", status=200)
        with django_capture_on_commit_callbacks(execute=True):
            ingest(channel=ChannelFactory(), posts=[post("p1")])
    assert set(WebhookCall.objects.values_list("endpoint_id", flat=True)) == {first.pk, second.pk}


def test_a_rule_escalating_along_a_path_does_not_climb_a_level_per_message():
    team = TeamFactory()
    tier2 = Department.objects.create(name="Tier 2", delivery=DepartmentDelivery.IN_APP, team=team)
    path = EscalationPath.objects.create(name="Support")
    EscalationLevel.objects.create(path=path, position=0, department=tier2)
    EscalationLevel.objects.create(path=path, position=1, user=UserFactory(role="manager"))
    rule(actions=[{"type": "escalate", "value": {"path": path.pk}}])
    channel = ChannelFactory()
    ingest(channel=channel, posts=[post("p1"), post("p2", reply_to="p1")])
    ingest(channel=channel, posts=[post("p3", reply_to="p1")])
    ingest(channel=channel, posts=[post("p4", reply_to="p1")])
    escalation = Escalation.objects.get()
    assert escalation.level == 0
    # The rule's later "escalate" did nothing, and the timeline says why, once for the
    # escalation however many messages follow.
    [skipped] = ConversationEvent.objects.filter(data__has_key="escalation_refused")
    assert skipped.data == {
        "name": "Rule",
        "escalation_refused": "The conversation is already escalated.",
    }


def test_a_superuser_counts_as_an_admin_for_auto_assignment():
    boss = UserFactory(is_superuser=True)
    team = _team_with(boss)
    presence.agent_seen(user_id=boss.pk)
    rule(actions=[{"type": "assign", "value": "auto"}])
    ingest(channel=ChannelFactory(default_team=team), posts=[post("p1")])
    assert conversation_of("p1").assignee == boss


def _compiled_rule(rule_id, name):
    from conversations.rules import rule_compile

    return rule_compile(
        id=rule_id,
        name=name,
        events=["message_received", "conversation_created"],
        match="all",
        conditions=[],
        actions=[{"type": "mark_monitoring"}],
        stop_processing=False,
    )


def test_a_rule_applied_entry_is_the_json_of_its_rules_whatever_their_names():
    import json

    from conversations.routing import RuleApplied

    quoted = _compiled_rule(1, 'The "VIP" rule \\ ünïcode ☎')
    other = _compiled_rule(2, "Tab\there")
    later = MONDAY_NOON + timedelta(minutes=1)
    applied = RuleApplied(MONDAY_NOON)
    applied.add(quoted, "conversation_created", ['"priority": [2, 4]', '"tags": [3]'], MONDAY_NOON)
    applied.add(other, "message_received", ['"team": [null, 7]'], later)
    applied.add(quoted, "message_received", ['"monitoring": true'], later)
    expected = {
        "rules": [
            {
                "rule": 1,
                "name": quoted.name,
                "event": "conversation_created",
                "priority": [2, 4],
                "tags": [3],
            },
            {
                "rule": 2,
                "name": "Tab\there",
                "event": "message_received",
                "team": [None, 7],
                "at": later.isoformat(),
            },
            {
                "rule": 1,
                "name": quoted.name,
                "event": "message_received",
                "monitoring": True,
                "at": later.isoformat(),
            },
        ],
    }
    assert applied.json_text() == json.dumps(expected)


def test_what_each_action_did_is_written_as_the_json_of_its_values():
    """The timeline entry's members are written by hand for speed: they must read back as
    what each action did, None and strings included."""
    import json

    from conversations.models import Conversation
    from conversations.routing import Decisions, decisions_take
    from conversations.rules import RuleMatch, rule_compile

    rule = rule_compile(
        id=9,
        name="Everything",
        events=["message_received"],
        match="all",
        conditions=[],
        actions=[
            {"type": "set_priority", "value": 4},
            {"type": "set_team", "value": 7},
            {"type": "add_tags", "value": [5, 3, 5]},
            {"type": "mark_monitoring"},
            {"type": "assign", "value": 11},
            {"type": "acknowledge", "value": "Hi {first_name}"},
            {"type": "escalate", "value": {"path": 2, "reason": 'Say "why"\u2026'}},
            {"type": "notify", "value": {"users": [11], "message": "Look"}},
            {"type": "webhook", "value": {"endpoint": 6}},
        ],
        stop_processing=False,
    )
    conversation = Conversation(id=1, priority=2, team_id=None, assignee_id=None, status="new")
    decisions = Decisions()
    decisions_take(
        conversation,
        [("message_received", RuleMatch(rule=rule, actions=rule.actions))],
        decisions,
        at=MONDAY_NOON,
        key="post-1",
        tags=frozenset({3}),
    )
    ((_, applied),) = decisions.applied.values()
    assert json.loads(applied.json_text()) == {
        "rules": [
            {
                "rule": 9,
                "name": "Everything",
                "event": "message_received",
                "priority": [2, 4],
                "team": [None, 7],
                "tags": [5],
                "monitoring": True,
                "assign": 11,
                "acknowledge": True,
                "escalate": {"path": 2, "reason": 'Say "why"\u2026'},
                "notify": True,
                "webhook": 6,
            }
        ],
    }
    assert (conversation.priority, conversation.team_id, conversation.assignee_id) == (4, 7, 11)
    assert conversation.is_monitoring and decisions.tags[id(conversation)] == {5}


def test_a_rule_applied_entry_with_a_nul_character_is_stored_without_it():
    from conversations.routing import RuleApplied
    from scrm.bulk import json_value_text

    applied = RuleApplied(MONDAY_NOON)
    applied.add(
        _compiled_rule(1, "Nul\x00here"), "message_received", ['"monitoring": true'], MONDAY_NOON
    )
    assert "\\u0000" not in json_value_text(applied)
    assert "Nulhere" in json_value_text(applied)


def test_a_new_priority_starts_no_clock_on_a_conversation_only_monitored():
    from conversations.services import conversation_priority_set

    SlaPolicyFactory(name="Fast", first_response_minutes=10)
    ingest(channel=ChannelFactory(mode=ChannelMode.LISTEN), posts=[post("p1")])
    conversation = conversation_of("p1")
    assert conversation.is_monitoring and conversation.sla_due_at is None
    conversation_priority_set(conversation=conversation, priority=4, actor=UserFactory())
    conversation.refresh_from_db()
    assert (conversation.priority, conversation.sla_due_at) == (4, None)
    assert conversation.first_response_due_at is None
