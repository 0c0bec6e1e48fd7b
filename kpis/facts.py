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
- The reopen rate counts each conversation on the day of its first resolution, reopened since
  or not: a later reopening changes that day's rate, and a conversation reopened and still open
  counts as reopened.
- Business time is counted on the calendar of the conversation's SLA policy, else on the
  default calendar; without any calendar it is not computed.
"""

import bisect
import importlib
import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

from django.db import connection, transaction
from django.db.models import Exists, Model, OuterRef
from django.utils import timezone

from channels_ingest.models import ChannelAccount
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
    Sentiment,
    SlaPolicy,
    SlaTarget,
    Status,
    sentiment_label,
)
from governance.subject_rights import ERASED_ATTRIBUTE
from kpis.metrics import facts_changed
from kpis.models import (
    AgentCounts,
    AgentDurations,
    ContactCounts,
    ConversationFact,
    DayCounts,
    DurationCounts,
    EscalationCounts,
    MessageDay,
    ResponseFact,
    StaleConversation,
)
from scrm.bulk import rows_copy, rows_select

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
# Conversations read and computed at a time.
CHUNK = 1000


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


def facts_compute(
    conversation_ids: Sequence[int],
    *,
    calendars: Calendars | None = None,
    mark_next: bool = True,
) -> int:
    """Compute and store the facts of these conversations, replacing their old ones; facts of
    conversations that no longer exist are removed. Returns how many were computed.

    A conversation that is new, deleted, or moved to another contact, channel or start also
    changes its contact's next conversations' previous ones: those are marked stale, unless
    ``mark_next`` is off (a rebuild, which computes them all anyway)."""
    facts = _facts_build(conversation_ids, calendars or Calendars.load(), mark_next=mark_next)
    if facts is None:
        return 0
    with transaction.atomic():
        if _facts_store(facts):
            _facts_changed()
    return len(facts.conversations)


@dataclass
class _Facts:
    """The rows of some conversations' facts, ready to be stored."""

    ids: list[int]  # the conversations', ascending
    conversations: list[list[Any]]
    responses: list[list[Any]]
    days: list[list[Any]]
    # Other conversations whose previous conversations these changed: to be marked stale.
    stale: list[int]


def _facts_build(
    conversation_ids: Sequence[int], calendars: Calendars, *, mark_next: bool = True
) -> _Facts | None:
    """Read what the facts are computed from and compute them, without writing.

    Rows are read with plain SQL and the facts built as plain values: model instances and
    Django's per-value conversions cost several times the computation itself."""
    ids = sorted({int(pk) for pk in conversation_ids})
    if not ids:
        return None
    zone = timezone.get_default_timezone()
    with connection.cursor() as cursor:
        cursor.execute(_sql(_CONVERSATIONS_SQL, _among("c.id", ids)))
        conversations = cursor.fetchall()
        stored: dict[int, tuple[int, int, datetime]] = {}
        if mark_next:
            cursor.execute(_sql(_STORED_SQL, _among("conversation_id", ids)))
            stored = {pk: (contact, channel, _utc(at)) for pk, contact, channel, at in cursor}
        contact_ids = sorted({int(row[6]) for row in conversations})
        cursor.execute(
            _sql(
                _HISTORY_SQL,
                _among("contact_id", sorted({*contact_ids, *(p[0] for p in stored.values())})),
            )
        )
        history = _Histories(cursor.fetchall())
        cursor.execute(_sql(_CONTACTS_SQL, _among("id", contact_ids)))
        contacts = {row[0]: row[1:] for row in cursor.fetchall()}
        in_ids = _among("conversation_id", ids)
        cursor.execute(_sql(_MESSAGES_SQL, in_ids), [MessageKind.NOTE, Direction.IN, *_SENT])
        messages = _grouped(cursor.fetchall())
        cursor.execute(_sql(_EVENTS_SQL, in_ids), list(_EVENTS))
        events = _grouped(cursor.fetchall())
        cursor.execute(_sql(_ESCALATIONS_SQL, in_ids))
        escalations = _grouped(cursor.fetchall())
    erased = {pk for pk, (_, _, attributes) in contacts.items() if _is_erased(attributes)}
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

    facts: list[list[Any]] = []
    responses: list[list[Any]] = []
    days: list[list[Any]] = []
    for (
        pk,
        channel_id,
        platform,
        team_id,
        assignee_id,
        priority,
        contact_id,
        created_at,
        status,
        is_monitoring,
        resolved_at,
        calendar_id,
    ) in conversations:
        source, is_vip, _ = contacts.get(contact_id, (None, False, None))
        started_at = _utc(created_at)
        dims = (channel_id, platform, team_id, priority)
        fact = dict(_FACT_DEFAULTS)
        fact.update(
            conversation_id=pk,
            channel_id=channel_id,
            platform=platform,
            team_id=team_id,
            priority=priority,
            assignee_id=assignee_id,
            contact_id=contact_id,
            status=status,
            is_monitoring=bool(is_monitoring),
            is_vip=bool(is_vip) or pk in kept_vip,
            started_at=started_at,
            day=started_at.astimezone(zone).date(),
        )
        if pk in messages:
            _messages(fact, messages[pk], days, dims, zone)
        _timeline(
            fact,
            events.get(pk, ()),
            responses,
            dims,
            calendars.get(calendar_id),
            zone,
            resolved_at=_utc(resolved_at),
        )
        if pk in escalations:
            _escalations(fact, escalations[pk])
        _history(fact, history, zone, is_social=source == ContactSource.SOCIAL)
        facts.append([fact[name] for name in _FACT_COLUMNS])

    stale: set[int] = set()
    if mark_next:
        now = {row[0]: (row[6], row[1], _utc(row[7])) for row in conversations}
        for pk in ids:
            was, is_ = stored.get(pk), now.get(pk)
            if was == is_:
                continue
            for place in (was, is_):
                if place is not None:
                    contact_id, channel_id, started_at = place
                    stale.update(history.next(contact_id, channel_id, started_at, pk))
        stale.difference_update(ids)
    return _Facts(ids=ids, conversations=facts, responses=responses, days=days, stale=sorted(stale))


def _facts_store(facts: _Facts) -> bool:
    """Make the stored facts of these conversations what was computed, writing only the rows
    that differ: a stored row computed again stays, one no longer computed is deleted, a new
    or changed one inserted. Call inside a transaction. Returns whether anything changed.

    Most conversations a refresh computes changed in a way that leaves most of their rows as
    they were (a new message changes one day, a reply adds one response)."""
    changed = False
    for model, columns, rows in (
        (ConversationFact, _FACT_COLUMNS, facts.conversations),
        (ResponseFact, _RESPONSE_COLUMNS, facts.responses),
        (MessageDay, _DAY_COLUMNS, facts.days),
    ):
        stored: dict[tuple[Any, ...], list[Any]] = defaultdict(list)
        for pk, *values in rows_select(
            model, ["pk", *columns], where=_among("conversation_id", facts.ids), params=()
        ):
            stored[tuple(values)].append(pk)
        new = []
        for row in rows:
            same = stored.get(tuple(row))
            if same:
                same.pop()
            else:
                new.append(row)
        gone = [pk for pks in stored.values() for pk in pks]
        if gone:
            table = connection.ops.quote_name(model._meta.db_table)
            pk_column = connection.ops.quote_name(_pk_column(model))
            with connection.cursor() as cursor:
                cursor.execute(f"DELETE FROM {table} WHERE {_among(pk_column, sorted(gone))}")
        rows_copy(model, columns, new)
        changed = changed or bool(gone or new)
    if facts.stale:
        # Only conversations with stored facts: one without is marked since it was inserted.
        table = connection.ops.quote_name(StaleConversation._meta.db_table)
        fact_table = connection.ops.quote_name(ConversationFact._meta.db_table)
        version = f"{table}.version" if connection.vendor == "postgresql" else "version"
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (conversation_id, version)"
                f" SELECT conversation_id, 1 FROM {fact_table}"
                f" WHERE {_among('conversation_id', facts.stale)} ORDER BY 1"
                f" ON CONFLICT (conversation_id) DO UPDATE SET version = {version} + 1"
            )
    return changed


def _pk_column(model: type[Model]) -> str:
    pk = model._meta.pk
    assert pk is not None
    return str(pk.column)


def _facts_changed() -> None:
    """Figures cached from the old facts are dropped now and, in case one was read from them
    before the transaction ends, once more when it commits."""
    facts_changed()
    transaction.on_commit(facts_changed)


# The columns written, by attribute name, in the order the rows below hold them.
_FACT_COLUMNS = tuple(f.attname for f in ConversationFact._meta.concrete_fields)
# What a new instance holds before it is filled in.
_FACT_DEFAULTS = {f.attname: f.get_default() for f in ConversationFact._meta.concrete_fields}
_DIMENSIONS = ("channel_id", "platform", "team_id", "priority")
_RESPONSE_COLUMNS = (
    "conversation_id",
    "at",
    "day",
    "is_first",
    "seconds",
    "business_seconds",
    "sla_met",
    "agent_id",
    *_DIMENSIONS,
)
_DAY_COLUMNS = (
    "conversation_id",
    "day",
    "assignee_id",
    "inbound",
    "outbound",
    Sentiment.POSITIVE.value,
    Sentiment.NEUTRAL.value,
    Sentiment.NEGATIVE.value,
    *_DIMENSIONS,
)
# Where each label's count sits in a day's bucket: [inbound, outbound, *labels].
_LABEL_SLOT: dict[str, int] = {Sentiment.POSITIVE: 2, Sentiment.NEUTRAL: 3, Sentiment.NEGATIVE: 4}

# The conversation with what the facts copy from its channel and SLA policy.
_CONVERSATIONS_SQL = """
SELECT c.id, c.channel_id, ch.platform, c.team_id, c.assignee_id, c.priority, c.contact_id,
    c.created_at, c.status, c.is_monitoring, c.resolved_at, p.calendar_id
FROM {conversation} c
INNER JOIN {channel} ch ON ch.id = c.channel_id
LEFT JOIN {policy} p ON p.id = c.sla_policy_id
WHERE {ids}
ORDER BY c.id
"""
# Every conversation of the contacts, whose order gives each its previous ones.
_HISTORY_SQL = "SELECT contact_id, created_at, id, channel_id FROM {conversation} WHERE {ids}"
# Where the stored facts put each conversation: its contact, channel and start.
_STORED_SQL = "SELECT conversation_id, contact_id, channel_id, started_at FROM {fact} WHERE {ids}"
_CONTACTS_SQL = "SELECT id, source, is_vip, attributes FROM {contact} WHERE {ids}"
# Messages that reached us or left us; notes are no messages.
_MESSAGES_SQL = f"""
SELECT conversation_id, direction, created_at, sentiment
FROM {{message}}
WHERE {{ids}} AND NOT (kind = %s)
    AND (direction = %s OR delivery_status IN ({", ".join(["%s"] * len(_SENT))}))
ORDER BY conversation_id, created_at, id
"""
_EVENTS_SQL = f"""
SELECT conversation_id, kind, data, actor_id, created_at
FROM {{event}}
WHERE {{ids}} AND kind IN ({", ".join(["%s"] * len(_EVENTS))})
ORDER BY conversation_id, created_at, id
"""
_ESCALATIONS_SQL = """
SELECT conversation_id, department_id, outcome
FROM {escalation}
WHERE {ids}
ORDER BY conversation_id, created_at, id
"""


def _among(column: str, ids: Sequence[int]) -> str:
    """SQL: the column holds one of these ids (ascending). Integers only, written into the
    statement: binding hundreds of parameters through the ORM's lookups cost more than running
    the queries. The range tells the planner how few rows can match, which a long IN list
    alone does not (PostgreSQL then scanned whole tables)."""
    if not ids:
        return "1 = 0"
    listed = ",".join(map(str, map(int, ids)))
    among = f"{column} BETWEEN {int(ids[0])} AND {int(ids[-1])} AND {column}"
    if connection.vendor == "postgresql":
        # One array constant: the planner weighs each value of an IN list, which took longer
        # than running the query.
        return f"{among} IN (SELECT unnest('{{{listed}}}'::bigint[]))"
    return f"{among} IN ({listed})"


def _sql(template: str, ids: str) -> str:
    tables = {
        "conversation": Conversation,
        "channel": ChannelAccount,
        "policy": SlaPolicy,
        "contact": Contact,
        "message": Message,
        "event": ConversationEvent,
        "escalation": Escalation,
        "fact": ConversationFact,
    }
    return template.format(
        ids=ids,
        **{key: connection.ops.quote_name(model._meta.db_table) for key, model in tables.items()},
    )


def _grouped(rows: Iterable[tuple[Any, ...]]) -> dict[int, list[tuple[Any, ...]]]:
    """Rows by their first value, the conversation, in the order they came."""
    grouped: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
    for row in rows:
        grouped[row[0]].append(row)
    return grouped


def _utc(value: Any) -> Any:
    """A moment as the ORM reads it: aware, in UTC. SQLite gives naive UTC datetimes, or text
    for a computed column; PostgreSQL gives them aware."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _moment(value: Any) -> datetime | None:
    """A time an event's data records (ISO 8601), aware; None if it holds none that reads."""
    if not isinstance(value, str):
        return None
    try:
        return _utc(datetime.fromisoformat(value))
    except ValueError:
        return None


def _json(value: Any) -> Any:
    """A JSON column's value as the ORM reads it (Django's backends hand over its text)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _is_erased(attributes: Any) -> bool:
    if isinstance(attributes, str) and ERASED_ATTRIBUTE not in attributes:
        return False  # JSON text that does not name the key: no need to parse it
    attributes = _json(attributes)
    return isinstance(attributes, dict) and ERASED_ATTRIBUTE in attributes


def _messages(
    fact: dict[str, Any],
    rows: Iterable[tuple[Any, ...]],
    days: list[list[Any]],
    dims: tuple[Any, ...],
    zone: tzinfo,
) -> None:
    by_day: dict[date, list[int]] = {}
    inbound = outbound = 0
    first = last = None
    incoming = str(Direction.IN)
    for _, direction, created_at, sentiment in rows:
        if type(created_at) is not datetime or created_at.tzinfo is None:
            created_at = _utc(created_at)
        day = created_at.astimezone(zone).date()
        bucket = by_day.get(day)
        if bucket is None:
            bucket = by_day[day] = [0, 0, 0, 0, 0]
        if direction == incoming:
            inbound += 1
            bucket[0] += 1
            label = sentiment_label(sentiment)
            if label:
                bucket[_LABEL_SLOT[label]] += 1
                if first is None:
                    first = sentiment
                last = sentiment
        else:
            outbound += 1
            bucket[1] += 1
    fact["inbound"] = inbound
    fact["outbound"] = outbound
    if first is not None:
        fact["sentiment_first"] = first
        fact["sentiment_last"] = last
    conversation_id, assignee_id = fact["conversation_id"], fact["assignee_id"]
    for day, counts in by_day.items():
        days.append([conversation_id, day, assignee_id, *counts, *dims])


def _timeline(
    fact: dict[str, Any],
    rows: Iterable[tuple[Any, ...]],
    responses: list[list[Any]],
    dims: tuple[Any, ...],
    calendar: business_hours.BusinessCalendar | None,
    zone: tzinfo,
    *,
    resolved_at: datetime | None,
) -> None:
    resolution_met: bool | None = None
    resolution_due: datetime | None = None  # the last resolution's target, when missed
    resolved_by: int | None = None
    first_resolved: datetime | None = None  # the first resolution, whatever came after
    reopens = breaches = 0
    first_due: datetime | None = None  # the first-response target that passed unanswered
    # The resolution target of the round running now (from creation or the last reopening)
    # that passed unresolved.
    round_due: datetime | None = None
    for _, kind, data, actor_id, created_at in rows:
        if kind == EventKind.REPLY_SENT:
            data = _json(data) or {}
            waited = data.get("response_seconds")
            if waited is None:
                continue
            at = _utc(created_at)
            is_first = bool(data.get("first_response")) and fact["first_response_at"] is None
            business = _business(calendar, at - timedelta(seconds=waited), at)
            met = data.get("sla_met")
            responses.append(
                [
                    fact["conversation_id"],
                    at,
                    at.astimezone(zone).date(),
                    is_first,
                    waited,
                    business,
                    met,
                    actor_id,
                    *dims,
                ]
            )
            if is_first:
                fact["first_response_at"] = at
                fact["first_response_seconds"] = waited
                fact["first_response_business_seconds"] = business
                fact["first_response_met"] = met
                if met is not None:
                    due = None if met else _moment(data.get("sla_due_at"))
                    fact["first_response_sla_day"] = (due or at).astimezone(zone).date()
        elif kind == EventKind.STATUS_CHANGED:
            data = _json(data) or {}
            previous, status = data.get("previous"), data.get("status")
            if status in ENDED and previous not in ENDED:
                if first_resolved is None:
                    first_resolved = _utc(created_at)
                resolved_by = actor_id
                resolution_met = data.get("sla_met")
                resolution_due = (
                    (_moment(data.get("sla_due_at")) or round_due)
                    if resolution_met is False
                    else None
                )
                round_due = None
            elif previous in ENDED and status not in ENDED:
                reopens += 1
                round_due = None
        elif kind == EventKind.REOPENED:
            reopens += 1
            round_due = None
        elif kind == EventKind.SLA_BREACHED:
            breaches += 1
            data = _json(data) or {}
            target = data.get("target")
            if (
                target == SlaTarget.FIRST_RESPONSE
                and fact["first_response_at"] is None
                and first_due is None
            ):
                first_due = _moment(data.get("due_at"))
            elif target == SlaTarget.RESOLUTION and round_due is None:
                round_due = _moment(data.get("due_at"))
    if fact["first_response_at"] is None and first_due is not None:
        # Still unanswered: missed on the day it fell due, where a late reply counts it too.
        fact["first_response_met"] = False
        fact["first_response_sla_day"] = first_due.astimezone(zone).date()
    fact["reopens"] = reopens
    fact["breaches"] = breaches
    if first_resolved is None and fact["status"] in ENDED:
        first_resolved = resolved_at  # resolved with no status change on its timeline
    if first_resolved is not None:
        # The reopen rate's day: whether the first resolution held is counted there.
        fact["first_resolved_day"] = first_resolved.astimezone(zone).date()
    if fact["status"] in ENDED and resolved_at is not None:
        started_at = fact["started_at"]
        fact["resolved_at"] = resolved_at
        fact["resolved_day"] = resolved_at.astimezone(zone).date()
        fact["resolution_seconds"] = max(0.0, (resolved_at - started_at).total_seconds())
        fact["resolution_business_seconds"] = _business(calendar, started_at, resolved_at)
        fact["resolution_met"] = resolution_met
        fact["resolved_by_id"] = resolved_by
        if resolution_met is not None:
            # Met on the resolution's day; missed on the day it fell due, however late the
            # resolution came.
            settled = resolved_at if resolution_met else (resolution_due or resolved_at)
            fact["resolution_sla_day"] = settled.astimezone(zone).date()
    elif fact["status"] not in ENDED and round_due is not None:
        # Still unresolved past the target: missed on the day it fell due, where a late
        # resolution counts it too.
        fact["resolution_met"] = False
        fact["resolution_sla_day"] = round_due.astimezone(zone).date()


def _escalations(fact: dict[str, Any], rows: Sequence[tuple[Any, ...]]) -> None:
    fact["escalations"] = len(rows)
    _, department_id, outcome = rows[-1]
    fact["escalation_department_id"] = department_id
    fact["escalation_outcome"] = outcome or ""


class _Histories:
    """Contacts' conversations in order of start, then id: on any channel, and per channel."""

    def __init__(self, rows: Iterable[tuple[Any, ...]]) -> None:
        self.anywhere: dict[int, list[tuple[datetime, int]]] = defaultdict(list)
        self.here: dict[tuple[int, int], list[tuple[datetime, int]]] = defaultdict(list)
        for contact_id, created_at, pk, channel_id in sorted(
            (contact_id, _utc(created_at), pk, channel_id)
            for contact_id, created_at, pk, channel_id in rows
        ):
            self.anywhere[contact_id].append((created_at, pk))
            self.here[contact_id, channel_id].append((created_at, pk))

    def before(
        self, contact_id: int, channel_id: int, started_at: datetime, pk: int
    ) -> tuple[list[datetime], list[datetime]]:
        """When the two conversations before this one started, latest first: on any channel,
        and on its channel."""
        found = []
        for conversations in (self.anywhere[contact_id], self.here[contact_id, channel_id]):
            at = bisect.bisect_left(conversations, (started_at, pk))
            found.append([moment for moment, _ in conversations[max(0, at - 2) : at][::-1]])
        return found[0], found[1]

    def next(self, contact_id: int, channel_id: int, started_at: datetime, pk: int) -> set[int]:
        """The ids of the two conversations after this place, on any channel and on this
        channel, but for the conversation itself."""
        found = set()
        for conversations in (self.anywhere[contact_id], self.here[contact_id, channel_id]):
            at = bisect.bisect_right(conversations, (started_at, pk))
            found.update([other for _, other in conversations[at : at + 3] if other != pk][:2])
        return found


def _history(fact: dict[str, Any], history: _Histories, zone: tzinfo, *, is_social: bool) -> None:
    anywhere, here = history.before(
        fact["contact_id"], fact["channel_id"], fact["started_at"], fact["conversation_id"]
    )
    if not anywhere:
        fact["new_contact"] = is_social
    else:
        fact["days_since_previous"] = (fact["started_at"] - anywhere[0]).total_seconds() / 86400
    for name, moments, i in (
        ("previous_day", anywhere, 0),
        ("second_previous_day", anywhere, 1),
        ("channel_previous_day", here, 0),
        ("channel_second_previous_day", here, 1),
    ):
        if len(moments) > i:
            fact[name] = moments[i].astimezone(zone).date()


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
        facts = _facts_build([pk for pk, _ in chunk], calendars)
        # A short transaction per chunk, computed before it starts: SQLite lets no other
        # writer in while one lasts.
        with transaction.atomic():
            if facts is not None:
                if _facts_store(facts):
                    _facts_changed()
                done += len(facts.conversations)
            _unmark(chunk)
    return done


def _unmark(marks: Sequence[tuple[int, int]]) -> None:
    if not marks:
        return
    table = connection.ops.quote_name(StaleConversation._meta.db_table)
    # Integers written into the statement, as pairs: a condition per mark would go past
    # SQLite's limit on the depth of an expression.
    pairs = ", ".join(f"({int(pk)}, {int(version)})" for pk, version in marks)
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table} WHERE (conversation_id, version) IN (VALUES {pairs})")


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
        done += facts_compute(ids, calendars=calendars, mark_next=False)
        last = ids[-1]
    # Facts of conversations that were deleted since (NOT EXISTS: an anti-join, fast however
    # many conversations there are).
    ConversationFact.objects.filter(
        ~Exists(Conversation.objects.filter(pk=OuterRef("conversation_id")))
    ).delete()
    counts_rebuild()
    return done


# The counts' definitions, frozen in the migrations whose triggers keep them.
_DAY_COUNTS = importlib.import_module("kpis.migrations.0022_first_resolved_day")
_DURATION_COUNTS = importlib.import_module("kpis.migrations.0008_duration_counts")
_CONTACT_COUNTS = importlib.import_module("kpis.migrations.0012_contact_counts")
_AGENT_COUNTS = importlib.import_module("kpis.migrations.0013_agent_counts")
_ESCALATION_COUNTS = importlib.import_module("kpis.migrations.0016_escalation_counts")
_AGENT_DURATIONS = importlib.import_module("kpis.migrations.0017_agent_durations")


def counts_rebuild() -> None:
    """Compute the day, duration, contact, agent, agent duration and escalation counts anew
    from the facts, by the definitions the triggers that keep them follow: the same counts,
    without rows that came to hold only zeros."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {connection.ops.quote_name(DayCounts._meta.db_table)}")
        cursor.execute(_DAY_COUNTS.fill_sql())
        cursor.execute(f"DELETE FROM {connection.ops.quote_name(DurationCounts._meta.db_table)}")
        cursor.execute(_DURATION_COUNTS.fill_sql(connection.vendor))
        cursor.execute(f"DELETE FROM {connection.ops.quote_name(ContactCounts._meta.db_table)}")
        cursor.execute(_CONTACT_COUNTS.fill_sql())
        cursor.execute(f"DELETE FROM {connection.ops.quote_name(AgentCounts._meta.db_table)}")
        cursor.execute(_AGENT_COUNTS.fill_sql())
        cursor.execute(f"DELETE FROM {connection.ops.quote_name(EscalationCounts._meta.db_table)}")
        cursor.execute(_ESCALATION_COUNTS.fill_sql())
        cursor.execute(f"DELETE FROM {connection.ops.quote_name(AgentDurations._meta.db_table)}")
        cursor.execute(_AGENT_DURATIONS.fill_sql(connection.vendor))
    _facts_changed()
