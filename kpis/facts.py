"""Facts of conversations, computed from what is stored about them: the conversation row, its
messages, its timeline events and its escalations.

One function computes the facts of a set of conversations and replaces what was stored for
them. The beat task runs it on the conversations marked stale; the rebuild command on all of
them. Both take the same path, so an incremental refresh and a rebuild store the same rows.

Definitions (the README's KPI section says the same in words):
- A response is an agent's reply that ended a customer's wait (the reply event carries how long
  the customer waited). The first of a conversation is its first response; later ones are next
  responses. Automatic acknowledgements are not responses.
- Resolution time runs from the conversation's start to its last resolution (a reopened and
  resolved again conversation counts once, with its whole life).
- Business time is counted on the calendar of the conversation's SLA policy, else on the
  default calendar; without any calendar it is not computed.
"""

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Exists, Model, OuterRef, Q
from django.utils import timezone

from contacts.models import Contact, ContactSource
from conversations import business_hours
from conversations.models import (
    BusinessCalendar,
    Conversation,
    ConversationEvent,
    DeliveryStatus,
    Direction,
    Escalation,
    EventKind,
    Holiday,
    Message,
    MessageKind,
    Status,
    sentiment_label,
)
from governance.subject_rights import ERASED_ATTRIBUTE
from kpis.metrics import facts_changed
from kpis.models import ConversationFact, MessageDay, ResponseFact, StaleConversation
from scrm.bulk import rows_insert

logger = logging.getLogger(__name__)

ENDED = (Status.RESOLVED, Status.CLOSED)
# Outbound messages that left us (sending records an event, so the count follows); queued,
# held, refused and failed ones did not.
_SENT = (DeliveryStatus.SENT,)
_EVENTS = (
    EventKind.REPLY_SENT,
    EventKind.STATUS_CHANGED,
    EventKind.REOPENED,
    EventKind.SLA_BREACHED,
)
CHUNK = 500


@dataclass
class Calendars:
    by_id: dict[int, business_hours.BusinessCalendar]
    default_id: int | None

    @classmethod
    def load(cls) -> "Calendars":
        holidays: dict[int, set[date]] = defaultdict(set)
        for calendar_id, day in Holiday.objects.values_list("calendar_id", "date"):
            holidays[calendar_id].add(day)
        by_id: dict[int, business_hours.BusinessCalendar] = {}
        default_id = None
        for model in BusinessCalendar.objects.all():
            try:
                by_id[model.pk] = business_hours.BusinessCalendar.from_config(
                    time_zone=model.time_zone,
                    weekly_hours=model.weekly_hours,
                    holidays=holidays[model.pk],
                )
            except business_hours.CalendarError:
                logger.exception("Business hours %s cannot be read", model.pk)
                continue
            if model.is_default:
                default_id = model.pk
        return cls(by_id=by_id, default_id=default_id)

    def get(self, calendar_id: int | None) -> business_hours.BusinessCalendar | None:
        if calendar_id is not None and calendar_id in self.by_id:
            return self.by_id[calendar_id]
        return self.by_id.get(self.default_id) if self.default_id is not None else None


def _business(
    calendar: business_hours.BusinessCalendar | None, start: datetime, end: datetime
) -> float | None:
    if calendar is None:
        return None
    return calendar.between(start, end).total_seconds()


def local_day(moment: datetime) -> date:
    return timezone.localdate(moment, timezone.get_default_timezone())


def facts_compute(conversation_ids: Sequence[int], *, calendars: Calendars | None = None) -> int:
    """Compute and store the facts of these conversations, replacing their old ones; facts of
    conversations that no longer exist are removed. Returns how many were computed."""
    ids = sorted(set(conversation_ids))
    if not ids:
        return 0
    calendars = calendars or Calendars.load()
    conversations = list(
        Conversation.objects.filter(pk__in=ids).values(
            "pk",
            "channel_id",
            "channel__platform",
            "team_id",
            "assignee_id",
            "priority",
            "contact_id",
            "created_at",
            "status",
            "is_monitoring",
            "resolved_at",
            "sla_policy__calendar_id",
        )
    )
    messages: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
    for row in (
        Message.objects.filter(conversation_id__in=ids)
        .exclude(kind=MessageKind.NOTE)
        .filter(Q(direction=Direction.IN) | Q(delivery_status__in=_SENT))
        .order_by("conversation_id", "created_at", "pk")
        .values_list("conversation_id", "direction", "created_at", "sentiment")
    ):
        messages[row[0]].append(row)
    events: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
    for event in (
        ConversationEvent.objects.filter(conversation_id__in=ids, kind__in=_EVENTS)
        .order_by("conversation_id", "created_at", "pk")
        .values_list("conversation_id", "kind", "data", "actor_id", "created_at")
    ):
        events[event[0]].append(event)
    escalations: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
    for escalation in (
        Escalation.objects.filter(conversation_id__in=ids)
        .order_by("conversation_id", "created_at", "pk")
        .values_list("conversation_id", "department_id", "outcome")
    ):
        escalations[escalation[0]].append(escalation)
    contact_ids = {c["contact_id"] for c in conversations}
    social: set[int] = set()
    vip: set[int] = set()
    erased: set[int] = set()
    for pk, source, is_vip, attributes in Contact.objects.filter(pk__in=contact_ids).values_list(
        "pk", "source", "is_vip", "attributes"
    ):
        if source == ContactSource.SOCIAL:
            social.add(pk)
        if is_vip:
            vip.add(pk)
        if isinstance(attributes, dict) and ERASED_ATTRIBUTE in attributes:
            erased.add(pk)
    # Erasure removes a person's VIP mark, not the past figures it counted in.
    kept_vip = (
        set(
            ConversationFact.objects.filter(
                conversation_id__in=ids, contact_id__in=erased, is_vip=True
            ).values_list("conversation_id", flat=True)
        )
        if erased
        else set()
    )
    history: dict[int, list[tuple[datetime, int]]] = defaultdict(list)
    for contact_id, started, pk in (
        Conversation.objects.filter(contact_id__in=contact_ids)
        .order_by("contact_id", "created_at", "pk")
        .values_list("contact_id", "created_at", "pk")
    ):
        history[contact_id].append((started, pk))

    facts: list[ConversationFact] = []
    responses: list[ResponseFact] = []
    days: list[MessageDay] = []
    for c in conversations:
        pk = c["pk"]
        calendar = calendars.get(c["sla_policy__calendar_id"])
        dims = {
            "channel_id": c["channel_id"],
            "platform": c["channel__platform"],
            "team_id": c["team_id"],
            "priority": c["priority"],
        }
        fact = ConversationFact(
            conversation_id=pk,
            assignee_id=c["assignee_id"],
            contact_id=c["contact_id"],
            status=c["status"],
            is_monitoring=c["is_monitoring"],
            is_vip=c["contact_id"] in vip or c["pk"] in kept_vip,
            started_at=c["created_at"],
            day=local_day(c["created_at"]),
            **dims,
        )
        _messages(fact, messages[pk], days, dims)
        _timeline(fact, events[pk], responses, dims, calendar, resolved_at=c["resolved_at"])
        _escalations(fact, escalations[pk])
        _history(fact, history[c["contact_id"]], is_social=c["contact_id"] in social)
        facts.append(fact)

    with transaction.atomic():
        ResponseFact.objects.filter(conversation_id__in=ids).delete()
        MessageDay.objects.filter(conversation_id__in=ids).delete()
        ConversationFact.objects.filter(conversation_id__in=ids).delete()
        _insert(ConversationFact, facts)
        _insert(ResponseFact, responses)
        _insert(MessageDay, days)
        # Figures cached from the old facts are dropped now and, in case one was read from
        # them before this transaction ends, once more when it commits.
        facts_changed()
        transaction.on_commit(facts_changed)
    return len(facts)


def _insert(model: type[Model], objects: Sequence[Model]) -> None:
    """Write rows straight from the instances' values: Django's bulk_create spends more time
    compiling each value than the database spends storing them."""
    fields = [f for f in model._meta.concrete_fields if not (f.primary_key and f.auto_created)]
    rows_insert(
        model,
        [f.name for f in fields],
        [[getattr(obj, f.attname) for f in fields] for obj in objects],
    )


def _messages(
    fact: ConversationFact,
    rows: Iterable[tuple[Any, ...]],
    days: list[MessageDay],
    dims: dict[str, Any],
) -> None:
    by_day: dict[date, MessageDay] = {}
    sentiments: list[float] = []
    for _, direction, created_at, sentiment in rows:
        day = local_day(created_at)
        bucket = by_day.get(day)
        if bucket is None:
            bucket = by_day[day] = MessageDay(
                conversation_id=fact.conversation_id,
                day=day,
                assignee_id=fact.assignee_id,
                **dims,
            )
        if direction == Direction.IN:
            fact.inbound += 1
            bucket.inbound += 1
            label = sentiment_label(sentiment)
            if label:
                setattr(bucket, label, getattr(bucket, label) + 1)
                sentiments.append(sentiment)
        else:
            fact.outbound += 1
            bucket.outbound += 1
    if sentiments:
        fact.sentiment_first = sentiments[0]
        fact.sentiment_last = sentiments[-1]
    days.extend(by_day.values())


def _timeline(
    fact: ConversationFact,
    rows: Iterable[tuple[Any, ...]],
    responses: list[ResponseFact],
    dims: dict[str, Any],
    calendar: business_hours.BusinessCalendar | None,
    *,
    resolved_at: datetime | None,
) -> None:
    resolution_met: bool | None = None
    resolved_by: int | None = None
    for _, kind, data, actor_id, at in rows:
        data = data or {}
        if kind == EventKind.REPLY_SENT:
            waited = data.get("response_seconds")
            if waited is None:
                continue
            is_first = bool(data.get("first_response")) and fact.first_response_at is None
            business = _business(calendar, at - timedelta(seconds=waited), at)
            met = data.get("sla_met")
            responses.append(
                ResponseFact(
                    conversation_id=fact.conversation_id,
                    at=at,
                    day=local_day(at),
                    is_first=is_first,
                    seconds=waited,
                    business_seconds=business,
                    sla_met=met,
                    agent_id=actor_id,
                    **dims,
                )
            )
            if is_first:
                fact.first_response_at = at
                fact.first_response_seconds = waited
                fact.first_response_business_seconds = business
                fact.first_response_met = met
        elif kind == EventKind.STATUS_CHANGED:
            previous, status = data.get("previous"), data.get("status")
            if status in ENDED and previous not in ENDED:
                resolved_by = actor_id
                resolution_met = data.get("sla_met")
            elif previous in ENDED and status not in ENDED:
                fact.reopens += 1
        elif kind == EventKind.REOPENED:
            fact.reopens += 1
        elif kind == EventKind.SLA_BREACHED:
            fact.breaches += 1
    if fact.status in ENDED and resolved_at is not None:
        fact.resolved_at = resolved_at
        fact.resolved_day = local_day(resolved_at)
        fact.resolution_seconds = max(0.0, (resolved_at - fact.started_at).total_seconds())
        fact.resolution_business_seconds = _business(calendar, fact.started_at, resolved_at)
        fact.resolution_met = resolution_met
        fact.resolved_by_id = resolved_by


def _escalations(fact: ConversationFact, rows: Sequence[tuple[Any, ...]]) -> None:
    if not rows:
        return
    fact.escalations = len(rows)
    _, department_id, outcome = rows[-1]
    fact.escalation_department_id = department_id
    fact.escalation_outcome = outcome or ""


def _history(
    fact: ConversationFact, history: Sequence[tuple[datetime, int]], *, is_social: bool
) -> None:
    previous: datetime | None = None
    for started, pk in history:
        if pk == fact.conversation_id:
            break
        previous = started
    else:
        return
    if previous is None:
        fact.new_contact = is_social
    else:
        fact.days_since_previous = (fact.started_at - previous).total_seconds() / 86400


def facts_refresh(*, limit: int = 5000) -> int:
    """Compute the facts of conversations marked stale, oldest marks first. A mark is cleared
    only if no change came in while its facts were computed; otherwise it stays for the next
    run. Returns how many conversations were computed."""
    marks = list(
        StaleConversation.objects.order_by("pk").values_list("conversation_id", "version")[:limit]
    )
    if not marks:
        return 0
    calendars = Calendars.load()
    done = 0
    for start in range(0, len(marks), CHUNK):
        chunk = marks[start : start + CHUNK]
        done += facts_compute([pk for pk, _ in chunk], calendars=calendars)
        _unmark(chunk)
    return done


def _unmark(marks: Sequence[tuple[int, int]]) -> None:
    if not marks:
        return
    table = StaleConversation._meta.db_table
    condition = " OR ".join(["(conversation_id = %s AND version = %s)"] * len(marks))
    params = [value for mark in marks for value in mark]
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table} WHERE {condition}", params)


def facts_rebuild(*, chunk: int = CHUNK) -> int:
    """Compute the facts of every conversation again, from its stored history."""
    calendars = Calendars.load()
    done = 0
    last = 0
    while True:
        ids = list(
            Conversation.objects.filter(pk__gt=last)
            .order_by("pk")
            .values_list("pk", flat=True)[:chunk]
        )
        if not ids:
            break
        done += facts_compute(ids, calendars=calendars)
        last = ids[-1]
    # Facts of conversations that were deleted since (NOT EXISTS: an anti-join, fast however
    # many conversations there are).
    ConversationFact.objects.filter(
        ~Exists(Conversation.objects.filter(pk=OuterRef("conversation_id")))
    ).delete()
    return done
