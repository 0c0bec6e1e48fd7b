"""The facts ``facts_compute`` stores equal those of a plain reference computation (the ORM
and model instances, written as the definitions read) on a varied, random history: time zones
with DST changes and half-hour offsets, holidays, split opening hours, ties in time, notes and
unsent replies, unscored and borderline sentiment, reopenings, escalations, erased contacts.
"""

import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.db.models import Model
from django.utils import timezone

from contacts.models import Contact, ContactSource
from conversations.models import (
    BusinessCalendar,
    Conversation,
    ConversationEvent,
    DeliveryStatus,
    Direction,
    Escalation,
    EscalationOutcome,
    EscalationStatus,
    EscalationTrigger,
    EventKind,
    Holiday,
    Message,
    MessageKind,
    SlaPolicy,
    Status,
    sentiment_label,
)
from governance.subject_rights import ERASED_ATTRIBUTE
from kpis.facts import ENDED, Calendars, facts_compute, facts_rebuild, facts_refresh
from kpis.models import ConversationFact, MessageDay, ResponseFact, StaleConversation
from scrm.bulk import rows_insert
from tests.factories import ChannelFactory, DepartmentFactory, TeamFactory, UserFactory

pytestmark = pytest.mark.django_db

_SENT = (DeliveryStatus.SENT,)
_EVENTS = [
    EventKind.REPLY_SENT,
    EventKind.STATUS_CHANGED,
    EventKind.REOPENED,
    EventKind.SLA_BREACHED,
]


# --- The reference: the definitions, one conversation at a time, with model instances ------


def _local_day(moment: datetime) -> date:
    return timezone.localdate(moment, timezone.get_default_timezone())


def _business(calendar: Any, start: datetime, end: datetime) -> float | None:
    return None if calendar is None else calendar.between(start, end).total_seconds()


def reference(ids: list[int]) -> tuple[list[Any], list[Any], list[Any]]:
    calendars = Calendars.load()
    facts: list[ConversationFact] = []
    responses: list[ResponseFact] = []
    days: list[MessageDay] = []
    erased_vip = set(
        ConversationFact.objects.filter(conversation_id__in=ids, is_vip=True).values_list(
            "conversation_id", "contact_id"
        )
    )
    for c in Conversation.objects.filter(pk__in=ids).select_related(
        "contact", "channel", "sla_policy"
    ):
        contact = c.contact
        attributes = contact.attributes
        erased = isinstance(attributes, dict) and ERASED_ATTRIBUTE in attributes
        calendar = calendars.get(c.sla_policy.calendar_id if c.sla_policy else None)
        dims = {
            "channel_id": c.channel_id,
            "platform": c.channel.platform,
            "team_id": c.team_id,
            "priority": c.priority,
        }
        fact = ConversationFact(
            conversation_id=c.pk,
            assignee_id=c.assignee_id,
            contact_id=c.contact_id,
            status=c.status,
            is_monitoring=c.is_monitoring,
            is_vip=contact.is_vip or (erased and (c.pk, c.contact_id) in erased_vip),
            started_at=c.created_at,
            day=_local_day(c.created_at),
            **dims,
        )
        by_day: dict[date, MessageDay] = {}
        scores = []
        for m in (
            Message.objects.filter(conversation=c)
            .exclude(kind=MessageKind.NOTE)
            .order_by("created_at", "pk")
        ):
            if m.direction != Direction.IN and m.delivery_status not in _SENT:
                continue
            day = _local_day(m.created_at)
            bucket = by_day.setdefault(
                day,
                MessageDay(conversation_id=c.pk, day=day, assignee_id=c.assignee_id, **dims),
            )
            if m.direction == Direction.IN:
                fact.inbound += 1
                bucket.inbound += 1
                if label := sentiment_label(m.sentiment):
                    setattr(bucket, label, getattr(bucket, label) + 1)
                    scores.append(m.sentiment)
            else:
                fact.outbound += 1
                bucket.outbound += 1
        if scores:
            fact.sentiment_first, fact.sentiment_last = scores[0], scores[-1]
        days.extend(by_day.values())

        resolution_met = resolved_by = unanswered_due = None
        # The last resolution's missed target; the running round's that passed unresolved.
        resolution_due = round_due = first_resolved = None
        for e in ConversationEvent.objects.filter(conversation=c, kind__in=_EVENTS).order_by(
            "created_at", "pk"
        ):
            data = e.data or {}
            if e.kind == EventKind.REPLY_SENT:
                waited = data.get("response_seconds")
                if waited is None:
                    continue
                first = bool(data.get("first_response")) and fact.first_response_at is None
                business = _business(
                    calendar, e.created_at - timedelta(seconds=waited), e.created_at
                )
                responses.append(
                    ResponseFact(
                        conversation_id=c.pk,
                        at=e.created_at,
                        day=_local_day(e.created_at),
                        is_first=first,
                        seconds=waited,
                        business_seconds=business,
                        sla_met=data.get("sla_met"),
                        agent_id=e.actor_id,
                        **dims,
                    )
                )
                if first:
                    fact.first_response_at = e.created_at
                    fact.first_response_seconds = waited
                    fact.first_response_business_seconds = business
                    fact.first_response_met = data.get("sla_met")
                    if fact.first_response_met is not None:
                        # Met on the reply's day; missed on the day it fell due.
                        due = data.get("sla_due_at")
                        settled = e.created_at
                        if not fact.first_response_met and due not in (None, "soon"):
                            settled = datetime.fromisoformat(str(due))  # "soon": unreadable
                        fact.first_response_sla_day = _local_day(settled)
            elif e.kind == EventKind.STATUS_CHANGED:
                previous, status = data.get("previous"), data.get("status")
                if status in ENDED and previous not in ENDED:
                    if first_resolved is None:
                        first_resolved = e.created_at
                    resolved_by, resolution_met = e.actor_id, data.get("sla_met")
                    resolution_due = None
                    if resolution_met is False:
                        due = data.get("sla_due_at")
                        resolution_due = (
                            datetime.fromisoformat(due) if due not in (None, "soon") else round_due
                        )
                    round_due = None
                elif previous in ENDED and status not in ENDED:
                    fact.reopens += 1
                    round_due = None
            elif e.kind == EventKind.REOPENED:
                fact.reopens += 1
                round_due = None
            else:
                fact.breaches += 1
                if (
                    data.get("target") == "resolution"
                    and data.get("due_at") not in (None, "not a time")
                    and round_due is None
                ):
                    round_due = datetime.fromisoformat(data["due_at"])
                if (
                    data.get("target") == "first_response"
                    and data.get("due_at") not in (None, "not a time")  # unreadable: ignored
                    and fact.first_response_at is None
                    and unanswered_due is None
                ):
                    unanswered_due = datetime.fromisoformat(data["due_at"])
        if fact.first_response_at is None and unanswered_due is not None:
            # Never answered: the breach is the miss, on the day the target fell due.
            fact.first_response_met = False
            fact.first_response_sla_day = _local_day(unanswered_due)
        if first_resolved is None and c.status in ENDED:
            first_resolved = c.resolved_at  # no status change on the timeline
        if first_resolved is not None:
            fact.first_resolved_day = _local_day(first_resolved)
        if c.status in ENDED and c.resolved_at is not None:
            fact.resolved_at = c.resolved_at
            fact.resolved_day = _local_day(c.resolved_at)
            fact.resolution_seconds = max(0.0, (c.resolved_at - c.created_at).total_seconds())
            fact.resolution_business_seconds = _business(calendar, c.created_at, c.resolved_at)
            fact.resolution_met = resolution_met
            fact.resolved_by_id = resolved_by
            if resolution_met is not None:
                # Met on the resolution's day; missed on the day it fell due.
                settled = c.resolved_at if resolution_met else (resolution_due or c.resolved_at)
                fact.resolution_sla_day = _local_day(settled)
        elif c.status not in ENDED and round_due is not None:
            # Open past the running round's target: missed on the day it fell due.
            fact.resolution_met = False
            fact.resolution_sla_day = _local_day(round_due)

        escalations = list(Escalation.objects.filter(conversation=c).order_by("created_at", "pk"))
        if escalations:
            fact.escalations = len(escalations)
            fact.escalation_department_id = escalations[-1].department_id
            fact.escalation_outcome = escalations[-1].outcome or ""

        same_channel = set(
            Conversation.objects.filter(
                contact_id=c.contact_id, channel_id=c.channel_id
            ).values_list("pk", flat=True)
        )
        earlier = list(
            Conversation.objects.filter(contact_id=c.contact_id)
            .order_by("created_at", "pk")
            .values_list("pk", "created_at")
        )
        position = [pk for pk, _ in earlier].index(c.pk)
        if position == 0:
            fact.new_contact = contact.source == ContactSource.SOCIAL
        else:
            fact.days_since_previous = (
                c.created_at - earlier[position - 1][1]
            ).total_seconds() / 86400
            fact.previous_day = _local_day(earlier[position - 1][1])
        if position > 1:
            fact.second_previous_day = _local_day(earlier[position - 2][1])
        here = [at for pk, at in earlier[:position] if pk in same_channel]
        if here:
            fact.channel_previous_day = _local_day(here[-1])
        if len(here) > 1:
            fact.channel_second_previous_day = _local_day(here[-2])
        facts.append(fact)
    return facts, responses, days


def reference_store(ids: list[int]) -> None:
    """The reference's rows, stored the way facts were stored before: INSERT statements."""
    computed = reference(ids)
    for table in (ResponseFact, MessageDay, ConversationFact):
        table.objects.filter(conversation_id__in=ids).delete()
    models: tuple[type[Model], ...] = (ConversationFact, ResponseFact, MessageDay)
    for model, instances in zip(models, computed, strict=True):
        fields = [f for f in model._meta.concrete_fields if not f.auto_created]
        rows_insert(
            model,
            [f.name for f in fields],
            [[getattr(obj, f.attname) for f in fields] for obj in instances],
        )


def stored() -> dict[str, list[str]]:
    """Every fact row, read back, without the ids rows get from the table; repr tells -0.0
    from 0.0 and 1 from 1.0."""
    found = {}
    for model in (ConversationFact, ResponseFact, MessageDay):
        columns = [f.attname for f in model._meta.concrete_fields if not f.auto_created]
        found[model.__name__] = sorted(repr(row) for row in model.objects.values_list(*columns))
    return found


# --- A varied history ----------------------------------------------------------------------


# Unscored, signed zeros, the labels' borders.
SCORES = [None, -0.0, 0.0, 0.05, -0.05, 0.0499]


def _moment(rng: random.Random) -> datetime:
    """Around the DST changes of Europe, North America and Lord Howe Island."""
    start = datetime(2026, *rng.choice([(3, 6), (3, 26), (10, 22), (12, 29)]), tzinfo=UTC)
    return start + timedelta(
        minutes=rng.randrange(14 * 24 * 60), microseconds=rng.choice([0, 0, rng.randrange(10**6)])
    )


@pytest.fixture(params=["Europe/Berlin", "Australia/Lord_Howe"])
def varied(request, settings):
    settings.TIME_ZONE = request.param
    rng = random.Random(request.param)
    # What the resolution targets add draws from its own generator: the rest of the history,
    # which other tests' expectations rest on, stays as it was.
    resolution = random.Random(f"{request.param} resolution")
    berlin = BusinessCalendar.objects.create(
        name="Berlin",
        time_zone="Europe/Berlin",
        weekly_hours={str(d): [["09:00", "12:30"], ["13:30", "18:00"]] for d in range(5)},
        is_default=request.param == "Europe/Berlin",
    )
    Holiday.objects.create(calendar=berlin, date=date(2026, 4, 3))
    Holiday.objects.create(calendar=berlin, date=date(2026, 12, 31))
    india = BusinessCalendar.objects.create(
        name="Pune",
        time_zone="Asia/Kolkata",
        weekly_hours={
            "0": [["22:00", "24:00"]],
            "1": [["00:00", "02:30"]],
            "5": [["10:15", "14:45"]],
        },
    )
    new_york = BusinessCalendar.objects.create(
        name="New York",
        time_zone="America/New_York",
        weekly_hours={str(d): [["00:00", "03:00"], ["01:00", "24:00"]] for d in range(7)},
    )
    policies = [None] + [
        SlaPolicy.objects.create(name=f"Policy {i}", calendar=calendar)
        for i, calendar in enumerate([berlin, india, new_york, None])
    ]
    channels = [ChannelFactory(platform="x"), ChannelFactory(platform="facebook")]
    teams = [None, TeamFactory()]
    users = [None, UserFactory(), UserFactory()]
    departments = [None, DepartmentFactory(), DepartmentFactory()]
    contacts = [
        Contact.objects.create(
            name=f"Contact {i}",
            source=rng.choice(list(ContactSource)),
            is_vip=rng.random() < 0.3,
            attributes=rng.choice([{}, {"tier": "gold"}, [ERASED_ATTRIBUTE]]),
        )
        for i in range(14)
    ]
    conversations = []
    for i in range(70):
        created, contact = _moment(rng), rng.choice(contacts)
        if conversations and rng.random() < 0.15:  # the same contact, starting at once
            other = rng.choice(conversations)
            created, contact = other.created_at, other.contact
        status = rng.choice(list(Status))
        resolved = created + timedelta(minutes=rng.randrange(-30, 9 * 24 * 60))
        conversations.append(
            Conversation(
                contact=contact,
                channel=rng.choice(channels),
                thread_key=f"t{i}",
                team=rng.choice(teams),
                assignee=rng.choice(users),
                priority=rng.randint(1, 4),
                status=status,
                is_monitoring=rng.random() < 0.1,
                created_at=created,
                resolved_at=rng.choice([None, resolved, resolved]),
                sla_policy=rng.choice(policies),
            )
        )
    Conversation.objects.bulk_create(conversations)
    messages, events, escalations = [], [], []
    for c in conversations:
        times = [c.created_at + timedelta(seconds=rng.randrange(5 * 86400)) for _ in range(8)]
        times += [times[0]]  # a tie
        for n, at in enumerate(times[: rng.randrange(10)]):
            messages.append(
                Message(
                    conversation=c,
                    channel=c.channel,
                    direction=rng.choice(list(Direction)),
                    kind=rng.choice(list(MessageKind)),
                    delivery_status=rng.choice(list(DeliveryStatus) + [DeliveryStatus.SENT] * 3),
                    body="…",
                    external_id=f"{c.thread_key}-{n}",
                    sentiment=rng.choice(
                        [None, -0.0, 0.0, 0.05, -0.05, 0.0499, rng.uniform(-1, 1)]
                    ),
                    created_at=at,
                )
            )
        for at in times[: rng.randrange(10)]:
            kind = rng.choice(list(_EVENTS) + [EventKind.REPLY_SENT] * 2 + [EventKind.ASSIGNED])
            if kind == EventKind.REPLY_SENT:
                data: Any = rng.choice(
                    [
                        {},
                        {"first_response": True},
                        {
                            "response_seconds": rng.choice(
                                [0, 59, rng.randrange(10**6), rng.uniform(0, 5e5)]
                            ),
                            "first_response": rng.choice([True, False, 1, None]),
                            "sla_met": rng.choice([True, False, None]),
                        },
                    ]
                )
                if data.get("sla_met") is not None and rng.random() < 0.7:
                    data["sla_due_at"] = rng.choice(
                        [(at - timedelta(hours=rng.randrange(48))).isoformat()] * 5 + ["soon"]
                    )
            elif kind == EventKind.SLA_BREACHED:
                data = rng.choice(
                    [
                        {},
                        {"target": "next_response", "due_at": at.isoformat()},
                        {"target": "first_response", "due_at": "not a time"},
                        {
                            "target": "first_response",
                            "due_at": (at - timedelta(minutes=rng.randrange(3000))).isoformat(),
                        },
                    ]
                )
                if not data and resolution.random() < 0.8:  # no target: now the resolution's
                    data = resolution.choice(
                        [
                            {"target": "resolution", "due_at": "not a time"},
                            {
                                "target": "resolution",
                                "due_at": (
                                    at - timedelta(minutes=resolution.randrange(9000))
                                ).isoformat(),
                            },
                        ]
                    )
            elif kind == EventKind.STATUS_CHANGED:
                data = {
                    "previous": rng.choice([None, *Status]),
                    "status": rng.choice(list(Status)),
                    "sla_met": rng.choice([True, False, None]),
                }
                if data["sla_met"] is not None and resolution.random() < 0.7:
                    data["sla_due_at"] = resolution.choice(
                        [(at - timedelta(hours=resolution.randrange(96))).isoformat()] * 5
                        + ["soon"]
                    )
            else:
                data = {}
            events.append(
                ConversationEvent(
                    conversation=c, kind=kind, data=data, actor=rng.choice(users), created_at=at
                )
            )
        for at in times[: rng.choice([0, 0, 1, 2, 3])]:
            escalations.append(
                Escalation(
                    conversation=c,
                    department=rng.choice(departments),
                    trigger=EscalationTrigger.AGENT,
                    status=EscalationStatus.CLOSED,
                    outcome=rng.choice(["", *EscalationOutcome]),
                    created_at=at,
                )
            )
    # Some resolved late, their target days before the resolution, and some in time.
    resolved = [c for c in conversations if c.status in ENDED and c.resolved_at]
    for c, met in zip(resolved, [False, False, False, True, True], strict=False):
        due = c.resolved_at + timedelta(days=1) if met else c.resolved_at - timedelta(days=3)
        events.append(
            ConversationEvent(
                conversation=c,
                kind=EventKind.STATUS_CHANGED,
                data={
                    "previous": Status.OPEN,
                    "status": c.status,
                    "sla_met": met,
                    "sla_due_at": due.isoformat(),
                },
                actor=users[1],
                created_at=c.resolved_at + timedelta(days=6),  # the last
            )
        )
    Message.objects.bulk_create(messages)
    ConversationEvent.objects.bulk_create(events)
    Escalation.objects.bulk_create(escalations)
    ids = [c.pk for c in conversations]
    # Facts exist, then some VIPs are erased: their past figures keep the mark.
    facts_compute(ids)
    for contact in contacts[:5]:
        contact.attributes = {ERASED_ATTRIBUTE: "2026-12-01", "tier": "gold"}
        contact.is_vip = False
        contact.save()
    return ids


def test_computed_facts_equal_the_references(varied):
    facts_compute(varied)
    computed = stored()
    reference_store(varied)
    expected = stored()
    assert computed == expected
    # The history reaches every branch.
    facts = ConversationFact.objects
    assert ResponseFact.objects.filter(business_seconds__gt=0).count() > 5
    without_calendar = not BusinessCalendar.objects.filter(is_default=True).exists()
    assert ResponseFact.objects.filter(business_seconds=None).exists() == without_calendar
    assert MessageDay.objects.count() > 60
    assert facts.filter(resolution_business_seconds__gt=0).exists()
    assert facts.filter(reopens__gt=0, breaches__gt=0, escalations__gt=1).exists()
    # First-response targets met, missed late and missed unanswered, some settled on another
    # day than the reply's.
    assert facts.filter(first_response_met=True).exists()
    assert facts.filter(first_response_met=False, first_response_at__isnull=False).exists()
    assert facts.filter(first_response_met=False, first_response_at__isnull=True).exists()
    assert any(
        f.first_response_sla_day != _local_day(f.first_response_at)
        for f in facts.filter(first_response_met=False, first_response_at__isnull=False)
    )
    # Resolution targets met, missed late (some settled on another day than the resolution's)
    # and missed while open.
    assert facts.filter(resolution_met=True).exists()
    assert facts.filter(resolution_met=False, resolved_at__isnull=True).exists()
    assert any(
        f.resolution_sla_day != f.resolved_day
        for f in facts.filter(resolution_met=False, resolved_at__isnull=False)
    )
    # First resolutions: some on another day than the last, some of conversations open again.
    assert any(
        f.first_resolved_day != f.resolved_day
        for f in facts.filter(resolved_day__isnull=False, first_resolved_day__isnull=False)
    )
    assert facts.filter(first_resolved_day__isnull=False, resolved_at__isnull=True).exists()
    assert facts.filter(new_contact=True).exists() and facts.filter(days_since_previous=0).exists()
    assert facts.filter(is_vip=True, contact__is_vip=False).exists()  # erased, kept
    assert facts.exclude(sentiment_first=None).exists()


def test_refresh_and_rebuild_equal_the_references(varied):
    reference_store(varied)
    expected = stored()
    StaleConversation.objects.all().delete()
    Conversation.objects.filter(pk__in=varied[::3]).update(priority=1)
    ConversationFact.objects.filter(conversation_id__in=varied[1::3]).update(inbound=99)
    StaleConversation.objects.bulk_create(
        [StaleConversation(conversation_id=pk) for pk in varied[1::3]], ignore_conflicts=True
    )
    reference_store(varied)
    expected = stored()
    facts_refresh(limit=len(varied))
    assert stored() == expected
    facts_rebuild(chunk=7)
    assert stored() == expected


def test_facts_of_deleted_conversations_are_removed(varied):
    gone = varied[:3]
    Conversation.objects.filter(pk__in=gone).delete()
    facts_compute([*gone, 10**9])
    assert not ConversationFact.objects.filter(conversation_id__in=gone).exists()


def test_statements_do_not_grow_with_the_conversations(varied, django_assert_max_num_queries):
    calendars = Calendars.load()
    with django_assert_max_num_queries(20):
        facts_compute(varied, calendars=calendars)
    assert connection.vendor in ("sqlite", "postgresql")


def test_a_refresh_clears_thousands_of_marks_at_once():
    StaleConversation.objects.bulk_create(
        [StaleConversation(conversation_id=10**6 + n, version=1 + n % 3) for n in range(4500)]
    )
    StaleConversation.objects.filter(conversation_id=10**6).update(version=7)
    from kpis.facts import _unmark

    _unmark([(10**6, 1), *((10**6 + n, 1 + n % 3) for n in range(1, 4000))])
    assert list(StaleConversation.objects.order_by("pk").values_list("pk", flat=True)[:1]) == [
        10**6
    ]
    assert StaleConversation.objects.count() == 501
    assert facts_refresh(limit=5000) == 0
    assert not StaleConversation.objects.exists()
