"""The KPI figures, read from the fact tables (`kpis.facts`).

Everything here is exact: medians and percentiles are the values of the individual responses
and conversations (linear interpolation between the two nearest values, as PostgreSQL's
`percentile_cont` and the usual spreadsheet PERCENTILE do), picked from the facts of the one
bucket of the duration counts that holds each rank, or, for scopes the counts are not kept
by, from all the facts sorted (on PostgreSQL in the database, on SQLite in Python). Counted
figures come from the day counts where they serve the scope. Pages, CSV exports, targets, the
digest and the API read the same functions, so a figure is the same wherever it is shown.

Which period a figure belongs to:
- messages: the day they were written; new conversations and contacts: the day it started;
- responses (first and next) and SLA on first responses: the day of the reply;
- SLA breaches: the day the conversation started;
- resolution time, outcomes: the day of the (last) resolution; SLA on resolution: the day
  its target was settled;
- reopenings: the day of the first resolution, whether it held or not;
- backlog: now, whatever the range.
"""

import bisect
import hashlib
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from django.core.cache import cache
from django.core.exceptions import EmptyResultSet, FullResultSet
from django.db import connection, transaction
from django.db.models import (
    Aggregate,
    Avg,
    BooleanField,
    Count,
    ExpressionWrapper,
    F,
    FloatField,
    Q,
    QuerySet,
    Sum,
)
from django.db.models.functions import TruncMonth, TruncWeek
from django.utils import timezone

from conversations.models import ACTIVE_STATUSES, Conversation, Department, EscalationOutcome
from governance.selectors import seen_channel_ids
from kpis.models import (
    DURATION_BUCKETS,
    DURATION_EDGES,
    SWITCHED_CHANNEL,
    AgentCounts,
    AgentDurations,
    ContactCounts,
    ConversationFact,
    DayCounts,
    DurationCounts,
    DurationMeasure,
    EscalationCounts,
    MessageDay,
    Metric,
    ResponseFact,
)
from scrm.types import AnyUser

T = TypeVar("T")

GRAINS = ("day", "week", "month")

# Lower is better for these; higher for every other metric.
LOWER_IS_BETTER = frozenset(
    {
        Metric.FIRST_RESPONSE_MEDIAN,
        Metric.FIRST_RESPONSE_P90,
        Metric.NEXT_RESPONSE_MEDIAN,
        Metric.RESOLUTION_MEDIAN,
        Metric.RESOLUTION_P90,
        Metric.BREACHES,
        Metric.ESCALATION_RATE,
        Metric.REOPEN_RATE,
        Metric.NEGATIVE_SHARE,
        Metric.BACKLOG,
        Metric.UNASSIGNED,
    }
)
TIME_METRICS = frozenset(
    {
        Metric.FIRST_RESPONSE_MEDIAN,
        Metric.FIRST_RESPONSE_P90,
        Metric.NEXT_RESPONSE_MEDIAN,
        Metric.RESOLUTION_MEDIAN,
        Metric.RESOLUTION_P90,
    }
)
SHARE_METRICS = frozenset(
    {
        Metric.FIRST_RESPONSE_SLA,
        Metric.RESOLUTION_SLA,
        Metric.IN_CHANNEL_RESOLUTION,
        Metric.ESCALATION_RATE,
        Metric.REOPEN_RATE,
        Metric.POSITIVE_SHARE,
        Metric.NEGATIVE_SHARE,
        Metric.RETURNING_30,
        Metric.VIP_COVERAGE,
    }
)
# Figures of "now", which a date range does not change.
SNAPSHOT_METRICS = frozenset({Metric.BACKLOG, Metric.UNASSIGNED})

# Response time distribution: upper bounds in minutes, the last bucket is open.
RESPONSE_BUCKETS: tuple[tuple[str, float], ...] = (
    ("under 5 min", 5),
    ("5-15 min", 15),
    ("15-60 min", 60),
    ("1-4 h", 240),
    ("4-24 h", 1440),
    ("over 24 h", math.inf),
)
# Backlog age buckets: upper bounds in hours.
BACKLOG_BUCKETS: tuple[tuple[str, float], ...] = (
    ("under 1 h", 1),
    ("1-4 h", 4),
    ("4-24 h", 24),
    ("1-3 days", 72),
    ("3-7 days", 168),
    ("over 7 days", math.inf),
)


@dataclass(frozen=True)
class Filters:
    channel: int | None = None
    platform: str = ""
    team: int | None = None
    agent: int | None = None
    priority: int | None = None
    tag: int | None = None

    def q(self, *, agent_field: str | None) -> Q:
        q = Q()
        if self.channel is not None:
            q &= Q(channel_id=self.channel)
        if self.platform:
            q &= Q(platform=self.platform)
        if self.team is not None:
            q &= Q(team_id=self.team)
        if self.priority is not None:
            q &= Q(priority=self.priority)
        if self.agent is not None and agent_field is not None:
            q &= Q(**{f"{agent_field}_id": self.agent})
        if self.tag is not None:
            # A subquery, not a join: each fact row stays one row, so no DISTINCT is needed
            # (which would also fold equal values together when values are read).
            q &= Q(conversation_id__in=_tagged(self.tag))
        return q


def _tagged(tag: int) -> QuerySet:
    return Conversation.tags.through.objects.filter(tag_id=tag).values("conversation_id")


@dataclass(frozen=True)
class DateRange:
    start: date
    end: date  # inclusive

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def previous(self) -> "DateRange":
        return DateRange(self.start - timedelta(days=self.days), self.start - timedelta(days=1))

    @classmethod
    def last(cls, days: int, *, today: date | None = None) -> "DateRange":
        today = today or timezone.localdate(timezone.now(), timezone.get_default_timezone())
        return cls(today - timedelta(days=days - 1), today)


@dataclass(frozen=True)
class Spread:
    """Median, 90th percentile and mean of a set of durations, in seconds."""

    n: int
    median: float | None
    p90: float | None
    mean: float | None


@dataclass(frozen=True)
class Speed:
    first_response: Spread
    first_response_business: Spread
    next_response: Spread
    next_response_business: Spread
    resolution: Spread
    resolution_business: Spread


@dataclass(frozen=True)
class Outcomes:
    resolved: int
    in_channel: int
    escalated: int
    # Of the conversations first resolved in the range (not those resolved), those reopened
    # since: a resolution counts as failed once its conversation reopens, resolved again or not.
    first_resolved: int
    reopened: int
    by_outcome: list[tuple[str, int]]  # escalated conversations by how they ended
    by_department: list[tuple[str, int]]

    @property
    def in_channel_rate(self) -> float | None:
        return _share(self.in_channel, self.resolved)

    @property
    def escalation_rate(self) -> float | None:
        return _share(self.escalated, self.resolved)

    @property
    def reopen_rate(self) -> float | None:
        return _share(self.reopened, self.first_resolved)


@dataclass(frozen=True)
class Sentiment:
    positive: int
    neutral: int
    negative: int
    conversations: int  # with a first and a last scored message
    improved: int
    worsened: int
    mean_change: float | None

    @property
    def scored(self) -> int:
        return self.positive + self.neutral + self.negative

    @property
    def positive_share(self) -> float | None:
        return _share(self.positive, self.scored)

    @property
    def neutral_share(self) -> float | None:
        return _share(self.neutral, self.scored)

    @property
    def negative_share(self) -> float | None:
        return _share(self.negative, self.scored)


@dataclass(frozen=True)
class Loyalty:
    conversations: int
    contacts: int
    repeat_contacts: int  # with two or more conversations started in the range
    returning_30: int  # conversations whose contact had one in the 30 days before
    returning_90: int
    vip_conversations: int
    vip_answered: int

    @property
    def returning_30_share(self) -> float | None:
        return _share(self.returning_30, self.conversations)

    @property
    def returning_90_share(self) -> float | None:
        return _share(self.returning_90, self.conversations)

    @property
    def vip_coverage(self) -> float | None:
        return _share(self.vip_answered, self.vip_conversations)


@dataclass(frozen=True)
class Summary:
    """Every figure of one date range and scope."""

    range: DateRange
    inbound: int
    outbound: int
    new_conversations: int
    new_contacts: int
    speed: Speed
    first_response_met: int
    first_response_missed: int
    resolution_met: int
    resolution_missed: int
    breaches: int
    outcomes: Outcomes
    sentiment: Sentiment
    loyalty: Loyalty
    backlog: int
    unassigned: int

    @property
    def first_response_sla(self) -> float | None:
        return _share(self.first_response_met, self.first_response_met + self.first_response_missed)

    @property
    def resolution_sla(self) -> float | None:
        return _share(self.resolution_met, self.resolution_met + self.resolution_missed)

    def value(self, metric: str) -> float | None:
        """One figure by its Metric name: minutes for times, percent for shares."""
        minutes: dict[str, float | None] = {
            Metric.FIRST_RESPONSE_MEDIAN: self.speed.first_response.median,
            Metric.FIRST_RESPONSE_P90: self.speed.first_response.p90,
            Metric.NEXT_RESPONSE_MEDIAN: self.speed.next_response.median,
            Metric.RESOLUTION_MEDIAN: self.speed.resolution.median,
            Metric.RESOLUTION_P90: self.speed.resolution.p90,
        }
        if metric in minutes:
            seconds = minutes[metric]
            return None if seconds is None else seconds / 60
        values: dict[str, float | None] = {
            Metric.INBOUND: self.inbound,
            Metric.OUTBOUND: self.outbound,
            Metric.NEW_CONVERSATIONS: self.new_conversations,
            Metric.NEW_CONTACTS: self.new_contacts,
            Metric.FIRST_RESPONSE_SLA: self.first_response_sla,
            Metric.RESOLUTION_SLA: self.resolution_sla,
            Metric.BREACHES: self.breaches,
            Metric.IN_CHANNEL_RESOLUTION: self.outcomes.in_channel_rate,
            Metric.ESCALATION_RATE: self.outcomes.escalation_rate,
            Metric.REOPEN_RATE: self.outcomes.reopen_rate,
            Metric.POSITIVE_SHARE: self.sentiment.positive_share,
            Metric.NEGATIVE_SHARE: self.sentiment.negative_share,
            Metric.BACKLOG: self.backlog,
            Metric.UNASSIGNED: self.unassigned,
            Metric.RETURNING_30: self.loyalty.returning_30_share,
            Metric.VIP_COVERAGE: self.loyalty.vip_coverage,
        }
        return values[metric]


# What a baseline holds: every figure but the 90th percentiles.
BASELINE_METRICS = tuple(
    m for m in Metric if m not in (Metric.FIRST_RESPONSE_P90, Metric.RESOLUTION_P90)
)


@dataclass(frozen=True)
class Baseline:
    """The figures of a range that another range's are compared with: every figure
    `Summary.value` gives but the 90th percentiles, and the medians of the calendar-time
    speeds (seconds), each equal to the summary's. Read instead of a whole summary for the
    period before a report's: it leaves out what a comparison does not show (the contacts,
    business-time spreads, percentiles, where escalations went)."""

    range: DateRange
    values: dict[str, float | None]
    first_response_median: float | None
    next_response_median: float | None
    resolution_median: float | None

    def value(self, metric: str) -> float | None:
        return self.values[metric]


@dataclass(frozen=True)
class Point:
    """One bucket of a time series."""

    start: date
    inbound: int = 0
    outbound: int = 0
    new_conversations: int = 0
    resolved: int = 0
    first_response_median: float | None = None  # seconds
    positive: int = 0
    neutral: int = 0
    negative: int = 0
    by_channel: dict[str, int] = field(default_factory=dict)  # inbound messages


@dataclass(frozen=True)
class AgentRow:
    agent_id: int
    name: str
    handled: int  # conversations they resolved
    responses: int
    first_response_median: float | None
    resolution_median: float | None
    sla_met: int
    sla_missed: int

    @property
    def sla_compliance(self) -> float | None:
        return _share(self.sla_met, self.sla_met + self.sla_missed)


def _share(part: int, whole: int) -> float | None:
    return None if whole == 0 else 100.0 * part / whole


# --- Caching ------------------------------------------------------------------------------
# Figures change only when facts do. Every computation of facts moves a version number on, so
# a cached figure is used until then: a dashboard reloaded, the previous period, and the
# targets that share a range and scope are read once. Keyed by the channels the user may see.

_VERSION_KEY = "kpis:facts-version"
CACHE_SECONDS = 600


def facts_changed() -> None:
    """Called whenever facts were written: cached figures are no longer used."""
    try:
        cache.incr(_VERSION_KEY)
    except ValueError:
        cache.set(_VERSION_KEY, _new_version(), None)


def _new_version() -> int:
    """A version no cached figure was keyed by: the cache may drop the version (a file cache
    culls entries at random, Redis may evict it), and starting again from 1 would bring back
    figures cached under an earlier 1."""
    return time.time_ns()


def _cached(
    name: str, user: AnyUser, compute: Callable[[], T], *parts: object, sorts: bool = False
) -> T:
    """The cached figure, else ``compute()``'s (with ``sorts``: it sorts many values)."""
    version = cache.get_or_set(_VERSION_KEY, _new_version, None)
    raw = repr((name, version, _scope_key(user), *parts)).encode()
    key = "kpis:" + hashlib.sha256(raw).hexdigest()
    value = cache.get(key)
    if value is None:
        if sorts:
            with _sort_memory():
                value = compute()
        else:
            value = compute()
        cache.set(key, value, CACHE_SECONDS)
    return value


# Memory for each sort of a report's values on PostgreSQL. The default work_mem (4 MB) holds
# about 170,000 values; a percentile over more spilled to disk and took twice as long.
SORT_MEMORY = "64MB"


@contextmanager
def _sort_memory() -> Iterator[None]:
    """On PostgreSQL: the sort memory, and one snapshot for the whole computation, so the
    duration counts and the facts it reads by separate statements agree."""
    if connection.vendor != "postgresql":
        yield
        return
    outermost = not connection.in_atomic_block
    with transaction.atomic(), connection.cursor() as cursor:
        if outermost:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cursor.execute(f"SET LOCAL work_mem = '{SORT_MEMORY}'")
        yield


def _scope_key(user: AnyUser) -> str:
    """The channels the user may see, as part of a cache key; read once per user object (a
    request's)."""
    ids = seen_channel_ids(user=user)
    return "all" if ids is None else ",".join(map(str, ids))


def summary(*, user: AnyUser, range_: DateRange, filters: Filters | None = None) -> Summary:
    """Every figure of a range and scope (cached until facts change)."""
    filters = filters or Filters()
    return _cached(
        "summary",
        user,
        lambda: _summary(user=user, range_=range_, filters=filters),
        range_,
        filters,
        sorts=True,
    )


def baseline(*, user: AnyUser, range_: DateRange, filters: Filters | None = None) -> Baseline:
    """The figures of a range a comparison reads (cached until facts change)."""
    filters = filters or Filters()
    return _cached(
        "baseline",
        user,
        lambda: _baseline(user=user, range_=range_, filters=filters),
        range_,
        filters,
        sorts=True,
    )


def series(
    *, user: AnyUser, range_: DateRange, filters: Filters | None = None, grain: str = "day"
) -> list["Point"]:
    """Figures per day, week or month of the range (cached until facts change)."""
    filters = filters or Filters()
    return _cached(
        "series",
        user,
        lambda: _series(user=user, range_=range_, filters=filters, grain=grain),
        range_,
        filters,
        grain,
        sorts=True,
    )


def response_distribution(
    *, user: AnyUser, range_: DateRange, filters: Filters | None = None
) -> list[tuple[str, int, int]]:
    """First and next responses per time bucket: (label, first, next)."""
    filters = filters or Filters()
    return _cached(
        "distribution",
        user,
        lambda: _response_distribution(user=user, range_=range_, filters=filters),
        range_,
        filters,
    )


def agents(*, user: AnyUser, range_: DateRange, filters: Filters | None = None) -> list["AgentRow"]:
    """Per agent: conversations resolved, responses, medians and SLA compliance."""
    filters = filters or Filters()
    return _cached(
        "agents",
        user,
        lambda: _agents(user=user, range_=range_, filters=filters),
        range_,
        filters,
        sorts=True,
    )


def metric_value(
    *, user: AnyUser, range_: DateRange, filters: Filters | None = None, metric: str
) -> float | None:
    """One figure, equal to ``summary(...).value(metric)`` but computed from only what it
    depends on (cached until facts change): what a target reads."""
    filters = filters or Filters()
    return _cached(
        "metric",
        user,
        lambda: _metric_value(user=user, range_=range_, filters=filters, metric=metric),
        range_,
        filters,
        metric,
        sorts=metric in TIME_METRICS,
    )


def metric_values(
    *, user: AnyUser, wanted: Iterable[tuple[DateRange, Filters, str]]
) -> dict[tuple[DateRange, Filters, str], float | None]:
    """``metric_value`` of each (range, filters, metric), computed together and cached as one
    (until facts change): what the targets of a page read."""
    keys = list(dict.fromkeys(wanted))
    return _cached(
        "metrics",
        user,
        lambda: {
            (range_, filters, metric): _metric_value(
                user=user, range_=range_, filters=filters, metric=metric
            )
            for range_, filters, metric in keys
        },
        tuple(keys),
        sorts=any(metric in TIME_METRICS for _, _, metric in keys),
    )


# --- Scoping ------------------------------------------------------------------------------


def _scoped(model: Any, user: AnyUser, filters: Filters, *, agent_field: str | None) -> QuerySet:
    qs = model.objects.filter(filters.q(agent_field=agent_field))
    ids = seen_channel_ids(user=user)
    if ids is not None:
        qs = qs.filter(channel_id__in=ids)
    return qs


def conversation_facts(user: AnyUser, filters: Filters) -> QuerySet[ConversationFact]:
    return _scoped(ConversationFact, user, filters, agent_field="assignee")


def response_facts(user: AnyUser, filters: Filters) -> QuerySet[ResponseFact]:
    return _scoped(ResponseFact, user, filters, agent_field="agent")


def message_days(user: AnyUser, filters: Filters) -> QuerySet[MessageDay]:
    return _scoped(MessageDay, user, filters, agent_field="assignee")


def day_counts(user: AnyUser, filters: Filters) -> QuerySet[DayCounts] | None:
    """The day counts of a scope, or None if it is filtered by what they are not kept by (an
    agent, a tag): the figures then come from the facts."""
    if filters.agent is not None or filters.tag is not None:
        return None
    q = Q()
    if filters.channel is not None:
        q &= Q(channel_id=filters.channel)
    if filters.platform:
        q &= Q(platform=filters.platform)
    if filters.team is not None:
        q &= Q(team_key=filters.team)
    if filters.priority is not None:
        q &= Q(priority=filters.priority)
    qs = DayCounts.objects.filter(q)
    ids = seen_channel_ids(user=user)
    if ids is not None:
        qs = qs.filter(channel_id__in=ids)
    return qs


def contact_counts(
    user: AnyUser, filters: Filters
) -> tuple[QuerySet[ContactCounts], str, bool] | None:
    """The contact counts of a scope, which of them serve it ("" for those of every channel
    together, "channel_" for those of each channel), and whether the scope holds several
    channels but not all (a contact on more than one is then counted once per channel, and
    the few contacts who changed channels in a range are counted again from their facts).
    None if filtered by team, priority, agent or tag: the contacts then come from the facts."""
    if any(v is not None for v in (filters.team, filters.priority, filters.agent, filters.tag)):
        return None
    qs = ContactCounts.objects.all()
    seen = seen_channel_ids(user=user)
    if filters.channel is None and seen is None and not filters.platform:
        return qs, "", False
    if filters.channel is not None:
        qs = qs.filter(channel_id=filters.channel)
    if filters.platform:
        qs = qs.filter(platform=filters.platform)
    if seen is not None:
        qs = qs.filter(channel_id__in=seen)
    several = filters.channel is None and (seen is None or len(seen) > 1)
    return qs, "channel_", several


def duration_counts(user: AnyUser, filters: Filters) -> QuerySet[DurationCounts] | None:
    """The duration counts of a scope, or None if it is filtered by what they are not kept by
    (a team, a priority, an agent, a tag): the spreads then come from the facts alone."""
    if any(v is not None for v in (filters.team, filters.priority, filters.agent, filters.tag)):
        return None
    q = Q()
    if filters.channel is not None:
        q &= Q(channel_id=filters.channel)
    if filters.platform:
        q &= Q(platform=filters.platform)
    qs = DurationCounts.objects.filter(q)
    ids = seen_channel_ids(user=user)
    if ids is not None:
        qs = qs.filter(channel_id__in=ids)
    return qs


def _in(range_: DateRange, field_name: str = "day") -> Q:
    return Q(**{f"{field_name}__gte": range_.start, f"{field_name}__lte": range_.end})


# --- Percentiles --------------------------------------------------------------------------


class _PercentileCont(Aggregate):
    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()


def interpolated(values: Sequence[float], fraction: float) -> float | None:
    """The percentile of sorted values by linear interpolation (percentile_cont)."""
    if not values:
        return None
    position = fraction * (len(values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


def spread(qs: QuerySet, column: str) -> Spread:
    """Median, p90, mean and count of a column over the rows it is not empty in."""
    return figures(qs, spreads={"x": (Q(), column)})[1]["x"]


def figures(
    qs: QuerySet,
    *,
    counts: Mapping[str, Aggregate] | None = None,
    spreads: Mapping[str, tuple[Q, str]],
) -> tuple[dict[str, Any], dict[str, Spread]]:
    """Aggregates and the spreads of columns over subsets of the rows, ``{name: (subset,
    column)}``, each over the rows of its subset the column is not empty in, in one pass
    over the rows: one query on PostgreSQL, where ordered-set aggregates with FILTER clauses
    sort each subset's values; on SQLite the aggregates and then the values, in two."""
    counts = counts or {}
    wanted = {
        name: subset & Q(**{f"{column}__isnull": False})
        for name, (subset, column) in spreads.items()
    }
    if connection.vendor == "postgresql":
        aggregates: dict[str, Aggregate] = dict(counts)
        for name, (_, column) in spreads.items():
            where = wanted[name]
            aggregates[f"{name}__n"] = Count(column, filter=where)
            aggregates[f"{name}__mean"] = Avg(column, filter=where)
            aggregates[f"{name}__median"] = _PercentileCont(column, fraction=0.5, filter=where)
            aggregates[f"{name}__p90"] = _PercentileCont(column, fraction=0.9, filter=where)
        row = qs.aggregate(**aggregates)
        return row, {
            name: Spread(
                n=row[f"{name}__n"],
                median=row[f"{name}__median"],
                p90=row[f"{name}__p90"],
                mean=row[f"{name}__mean"],
            )
            for name in spreads
        }
    row = qs.aggregate(**counts) if counts else {}
    names = list(spreads)
    columns = sorted({column for _, column in spreads.values()})
    flags = {
        f"_in_{i}": ExpressionWrapper(wanted[name], output_field=BooleanField())
        for i, name in enumerate(names)
    }
    values: dict[str, list[float]] = {name: [] for name in names}
    slots = [(name, len(names) + columns.index(spreads[name][1])) for name in names]
    either = Q()
    for where in wanted.values():
        either |= where
    for found in qs.filter(either).annotate(**flags).values_list(*flags, *columns):
        for i, (name, slot) in enumerate(slots):
            if found[i]:
                values[name].append(found[slot])
    return row, {name: _spread_of(sorted(v)) for name, v in values.items()}


def _spread_of(values: Sequence[float]) -> Spread:
    return Spread(
        n=len(values),
        median=interpolated(values, 0.5),
        p90=interpolated(values, 0.9),
        mean=sum(values) / len(values) if values else None,
    )


def grouped_spread(qs: QuerySet, group: str, column: str) -> dict[Any, Spread]:
    """Spread of a column per value of another (a day bucket, an agent)."""
    qs = qs.filter(**{f"{column}__isnull": False})
    if connection.vendor == "postgresql":
        return {
            row[group]: Spread(n=row["n"], median=row["median"], p90=row["p90"], mean=row["mean"])
            for row in qs.values(group)
            .annotate(
                n=Count(column),
                mean=Avg(column),
                median=_PercentileCont(column, fraction=0.5),
                p90=_PercentileCont(column, fraction=0.9),
            )
            .order_by()
        }
    values: dict[Any, list[float]] = defaultdict(list)
    for key, value in qs.values_list(group, column):
        values[key].append(value)
    return {key: _spread_of(sorted(v)) for key, v in values.items()}


# --- Spreads from the duration counts -----------------------------------------------------
# The counts say how many durations of a range fall in each bucket, so the bucket that holds
# the value of a rank is known without reading the facts; then only that bucket's facts are
# read, in order, to pick the value. The result is what sorting every fact of the range gives.

# Which facts each measure is read from: (model, column, day column, first responses or
# next ones).
_MEASURE_FACTS: dict[
    int, tuple[type[ResponseFact] | type[ConversationFact], str, str, bool | None]
] = {
    DurationMeasure.FIRST_RESPONSE: (ResponseFact, "seconds", "day", True),
    DurationMeasure.FIRST_RESPONSE_BUSINESS: (
        ResponseFact,
        "business_seconds",
        "day",
        True,
    ),
    DurationMeasure.NEXT_RESPONSE: (ResponseFact, "seconds", "day", False),
    DurationMeasure.NEXT_RESPONSE_BUSINESS: (
        ResponseFact,
        "business_seconds",
        "day",
        False,
    ),
    DurationMeasure.RESOLUTION: (ConversationFact, "resolution_seconds", "resolved_day", None),
    DurationMeasure.RESOLUTION_BUSINESS: (
        ConversationFact,
        "resolution_business_seconds",
        "resolved_day",
        None,
    ),
}
# The spreads of a summary, by measure.
_SPEED_FIELDS = {
    DurationMeasure.FIRST_RESPONSE: "first_response",
    DurationMeasure.FIRST_RESPONSE_BUSINESS: "first_response_business",
    DurationMeasure.NEXT_RESPONSE: "next_response",
    DurationMeasure.NEXT_RESPONSE_BUSINESS: "next_response_business",
    DurationMeasure.RESOLUTION: "resolution",
    DurationMeasure.RESOLUTION_BUSINESS: "resolution_business",
}
_FRACTIONS = (0.5, 0.9)
_NO_SPREAD = Spread(n=0, median=None, p90=None, mean=None)


ZERO_BUCKET = 1


def bucket_of(seconds: float) -> int:
    """The bucket of a duration, as the triggers that keep the duration counts find it."""
    if seconds < 0:
        return 0
    if seconds == 0:
        return ZERO_BUCKET
    return 2 + bisect.bisect_right(DURATION_EDGES, seconds)


def bucket_bounds(bucket: int) -> tuple[float | None, float | None, bool]:
    """The durations a bucket holds (see DURATION_EDGES): from the lower bound, below the
    upper (None: open), and whether the lower bound itself is left out."""
    if bucket == 0:
        return None, 0.0, False
    if bucket == ZERO_BUCKET:
        return 0.0, 0.0, False
    if bucket == 2:
        return 0.0, float(DURATION_EDGES[0]), True
    edge = bucket - 2
    upper = float(DURATION_EDGES[edge]) if edge < len(DURATION_EDGES) else None
    return float(DURATION_EDGES[edge - 1]), upper, False


def _ranks(n: int, fraction: float) -> tuple[int, int, float]:
    """The two ranks (from 0) a percentile interpolates between, and its position."""
    position = fraction * (n - 1)
    low = math.floor(position)
    return low, min(low + 1, n - 1), position


@dataclass
class _Band:
    """Ranks wanted from one bucket of one group's durations: ``count`` values in order from
    ``offset`` within the bucket."""

    group: Any
    measure: int
    bucket: int
    offset: int
    count: int
    first_rank: int


def _bands(counts: Sequence[int], ranks: Iterable[int]) -> list[tuple[int, int, int, int]]:
    """(bucket, offset in it, count, first rank) of runs of consecutive ranks per bucket."""
    found: list[tuple[int, int, int, int]] = []
    bucket, before = 0, 0
    for rank in sorted(set(ranks)):
        while before + counts[bucket] <= rank:
            before += counts[bucket]
            bucket += 1
        last = found[-1] if found else None
        if last and last[0] == bucket and last[3] + last[2] == rank:
            found[-1] = (bucket, last[1], last[2] + 1, last[3])
        else:
            found.append((bucket, rank - before, 1, rank))
    return found


def _where(qs: QuerySet) -> tuple[str, list[Any]]:
    """SQL of a queryset's conditions (its own columns, and subqueries), with parameters."""
    compiler = qs.query.get_compiler(using=qs.db)
    try:
        sql, params = compiler.compile(qs.query.where)
    except FullResultSet:  # no conditions
        return "1 = 1", []
    except EmptyResultSet:  # conditions nothing meets
        return "1 = 0", []
    return sql or "1 = 1", list(params)


def _sums(qs: QuerySet, columns: Sequence[str], group_by: Sequence[str] = ()) -> list[tuple]:
    """The sums of columns over a queryset's rows, per group: plain SQL, as building a
    hundred aggregates through the ORM costs more than running them."""
    where, params = _where(qs)
    table = connection.ops.quote_name(qs.model._meta.db_table)
    keys = [connection.ops.quote_name(c) for c in group_by]
    sums = [f"SUM({connection.ops.quote_name(c)})" for c in columns]
    sql = f"SELECT {', '.join([*keys, *sums])} FROM {table} WHERE {where}"
    if keys:
        sql += f" GROUP BY {', '.join(keys)}"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


_HISTOGRAM = ("n", "total", *(f"b{i}" for i in range(DURATION_BUCKETS)))


def duration_spreads(
    user: AnyUser,
    filters: Filters,
    range_: DateRange,
    measures: Iterable[int],
    *,
    grain: str | None = None,
    fractions: Sequence[float] = _FRACTIONS,
) -> dict[tuple[Any, int], Spread] | None:
    """Spreads of durations by (group, measure), the group a bucket of ``grain`` (None: the
    whole range), from the duration counts and the facts of the buckets that hold the
    percentiles; None if the counts do not serve the scope. A group and measure with no
    durations is left out. Only the ``fractions`` asked for (of the median, 0.5, and the
    90th percentile, 0.9) are found; the others are None."""
    counts = duration_counts(user, filters)
    if counts is None:
        return None
    rows = counts.filter(_in(range_), measure__in=list(measures))
    # Per day when grouped (a few hundred rows at most), added up per group here.
    histograms: dict[tuple[Any, int], list[int]] = {}
    for row in _sums(rows, _HISTOGRAM, ["measure", "day"] if grain else ["measure"]):
        if grain is not None:
            group: Any = _bucket(_as_date(_day(row[1])), grain)
            sums = row[2:]
        else:
            group, sums = None, row[1:]
        found = histograms.get((group, row[0]))
        if found is None:
            histograms[(group, row[0])] = [int(v or 0) for v in sums]
        else:
            for i, v in enumerate(sums):
                found[i] += int(v or 0)
    histograms = {key: h for key, h in histograms.items() if h[0]}
    bands: list[_Band] = []
    for (group, measure), histogram in histograms.items():
        n, buckets = histogram[0], histogram[2:]
        if sum(buckets) != n:
            return None
        wanted = [r for f in fractions for r in _ranks(n, f)[:2]]
        bands += [_Band(group, measure, *band) for band in _bands(buckets, wanted)]
    values = _band_values(user, filters, range_, grain, bands)
    if values is None:
        return None
    spreads = {}
    for key, histogram in histograms.items():
        n, total = histogram[0], histogram[1]
        at = values[key]
        percentiles = {}
        for fraction in fractions:
            low, high, position = _ranks(n, fraction)
            percentiles[fraction] = at[low] + (at[high] - at[low]) * (position - low)
        spreads[key] = Spread(
            n=n,
            median=percentiles.get(0.5),
            p90=percentiles.get(0.9),
            mean=total / 1_000_000 / n,
        )
    return spreads


def _day(value: Any) -> date:
    """A date column's value (SQLite gives text through a plain cursor)."""
    return date.fromisoformat(value) if isinstance(value, str) else value


def _band_values(
    user: AnyUser, filters: Filters, range_: DateRange, grain: str | None, bands: list[_Band]
) -> dict[tuple[Any, int], dict[int, float]] | None:
    """The durations at the ranks the bands ask for, by (group, measure) and rank, read in
    one statement: each band's facts of its days and bucket, in order (plain SQL: it is
    built for every band). None if a band did not find what the counts said it holds."""
    found: dict[tuple[Any, int], dict[int, float]] = defaultdict(dict)
    if not bands:
        return found
    days: dict[Any, list[date]] = defaultdict(list)
    day = range_.start
    while day <= range_.end:
        days[_bucket(day, grain) if grain is not None else None].append(day)
        day += timedelta(days=1)
    scopes = {
        model: _where(_scoped(model, user, filters, agent_field=None))
        for model in (ResponseFact, ConversationFact)
    }
    quote = connection.ops.quote_name
    parts, params = [], []
    for i, band in enumerate(bands):
        if band.bucket == ZERO_BUCKET:  # zero alone: nothing to read
            for k in range(band.count):
                found[(band.group, band.measure)][band.first_rank + k] = 0.0
            continue
        model, column, day_field, is_first = _MEASURE_FACTS[band.measure]
        scope, scope_params = scopes[model]
        column, listed = quote(column), days[band.group]
        where = [
            scope,
            f"{quote(day_field)} IN ({', '.join(['%s'] * len(listed))})",
            f"{column} IS NOT NULL",
        ]
        params += [*scope_params, *listed]
        if is_first is not None:
            where.append(f"{quote('is_first')} = %s")
            params.append(is_first)
        lower, upper, above = bucket_bounds(band.bucket)
        if lower is not None:
            where.append(f"{column} {'>' if above else '>='} %s")
            params.append(lower)
        if upper is not None:
            where.append(f"{column} < %s")
            params.append(upper)
        parts.append(
            f"SELECT {i} AS band, v.value FROM (SELECT {column} AS value"
            f" FROM {quote(model._meta.db_table)} WHERE {' AND '.join(where)}"
            f" ORDER BY {column} LIMIT {band.count} OFFSET {band.offset}) v"
        )
    rows: dict[int, list[float]] = defaultdict(list)
    if parts:
        with connection.cursor() as cursor:
            cursor.execute(" UNION ALL ".join(parts), params)
            for i, value in cursor.fetchall():
                rows[i].append(value)
    for i, band in enumerate(bands):
        if band.bucket == ZERO_BUCKET:
            continue
        values = sorted(rows[i])
        if len(values) != band.count:
            return None  # the facts changed since the counts were read
        for k, value in enumerate(values):
            found[(band.group, band.measure)][band.first_rank + k] = value
    return found


# --- The figures --------------------------------------------------------------------------


def _volume(days: QuerySet) -> dict[str, Any]:
    return days.aggregate(
        inbound=Sum("inbound"),
        outbound=Sum("outbound"),
        positive=Sum("positive"),
        neutral=Sum("neutral"),
        negative=Sum("negative"),
    )


def _volume_in(user: AnyUser, filters: Filters, range_: DateRange) -> dict[str, Any]:
    counts = day_counts(user, filters)
    return _volume(
        (counts if counts is not None else message_days(user, filters)).filter(_in(range_))
    )


def _starts_in(user: AnyUser, filters: Filters, range_: DateRange) -> dict[str, int]:
    """Counts of the conversations started in a range, with their SLA breaches."""
    counts = day_counts(user, filters)
    if counts is None:
        return _starts(conversation_facts(user, filters).filter(_in(range_)))
    row = counts.filter(_in(range_)).aggregate(
        new=Sum("started"),
        new_contacts=Sum("new_contacts"),
        returning_30=Sum("returning_30"),
        returning_90=Sum("returning_90"),
        vip=Sum("vip"),
        vip_answered=Sum("vip_answered"),
        breaches=Sum("breaches"),
    )
    return {name: value or 0 for name, value in row.items()}


def _starts(started: QuerySet) -> dict[str, int]:
    row = started.aggregate(
        new=Count("pk"),
        new_contacts=Count("pk", filter=Q(new_contact=True)),
        returning_30=Count("pk", filter=Q(days_since_previous__lte=30)),
        returning_90=Count("pk", filter=Q(days_since_previous__lte=90)),
        vip=Count("pk", filter=Q(is_vip=True, is_monitoring=False)),
        vip_answered=Count(
            "pk",
            filter=Q(is_vip=True, is_monitoring=False, first_response_at__isnull=False),
        ),
        breaches=Sum("breaches"),
    )
    row["breaches"] = row["breaches"] or 0
    return row


def _contacts_in(
    user: AnyUser, filters: Filters, range_: DateRange, started: QuerySet, n: int
) -> tuple[int, int]:
    """Contacts with a conversation started in a range (``n`` of them, ``started`` the facts
    of those), and those with two or more: from the contact counts where they serve the
    scope. A contact counts for its first conversation in the range, and has two or more if
    its second one's previous started in the range (on the same channel, for a scope of
    some channels)."""
    if not n:
        return 0, 0
    counts = contact_counts(user, filters)
    if counts is None:
        return _contacts(started)
    rows, prefix, several = counts
    previous, second = _sums(
        rows.filter(_in(range_), earlier_day__gte=range_.start),
        [f"{prefix}previous", f"{prefix}second_previous"],
    )[0]
    previous, second = int(previous or 0), int(second or 0)
    contacts, repeat = n - previous, previous - second
    if several:
        # Counted per channel, a contact on k channels of the scope counts k times, and one
        # with a conversation on each of two channels has none with two. Each such contact
        # has a conversation whose previous one started in the range on another channel.
        start = range_.start
        switched = started.filter(
            # The predicate of their partial index, which the planner must find written out.
            SWITCHED_CHANNEL,
            previous_day__gte=start,
        ).filter(Q(channel_previous_day__isnull=True) | Q(channel_previous_day__lt=start))
        # Their conversations of the range, by contact and channel, from the contact index.
        pairs = (
            started.filter(contact_id__in=switched.values("contact_id"))
            .values("contact_id", "channel_id")
            .annotate(n=Count("*"))
            .order_by()
        )
        try:
            sql, params = pairs.query.sql_with_params()
        except EmptyResultSet:  # a scope of no channel
            return contacts, repeat
        # A contact on k channels counted k times; two or more conversations in all counts
        # once, where each channel's own two or more counted already.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT COALESCE(SUM(k - 1), 0), COALESCE(SUM(CASE WHEN total >= 2 THEN 1 ELSE 0"
                " END - twos), 0) FROM (SELECT contact_id, COUNT(*) AS k, SUM(n) AS total,"
                " SUM(CASE WHEN n >= 2 THEN 1 ELSE 0 END) AS twos"
                f" FROM ({sql}) pairs GROUP BY contact_id) contacts",
                params,
            )
            extra, repeated = cursor.fetchone()
        contacts -= int(extra)
        repeat += int(repeated)
    return contacts, repeat


def _contacts(started: QuerySet) -> tuple[int, int]:
    """Contacts with a conversation started in a range, and those with two or more."""
    row = (
        started.values("contact")
        .annotate(n=Count("*"))
        .order_by()
        .aggregate(contacts=Count("n"), repeat=Count("n", filter=Q(n__gte=2)))
    )
    return row["contacts"], row["repeat"]


_BOTH_SENTIMENTS = Q(sentiment_first__isnull=False, sentiment_last__isnull=False)
_END_COUNTS = {
    "n": Count("pk"),
    "in_channel": Count(
        "pk",
        filter=Q(escalations=0) | Q(escalation_outcome=EscalationOutcome.RESOLVED_IN_CHANNEL),
    ),
    "escalated": Count("pk", filter=Q(escalations__gt=0)),
    "changed": Count("pk", filter=_BOTH_SENTIMENTS),
}
_RESOLUTION_SPREADS = {
    "resolution": (Q(), "resolution_seconds"),
    "resolution_business": (Q(), "resolution_business_seconds"),
}


def _ends(resolved: QuerySet) -> tuple[dict[str, Any], dict[str, Spread]]:
    """Counts of the conversations resolved in a range, the change of their customers'
    sentiment, and the spreads of their resolution times: one pass."""
    counts: dict[str, Aggregate] = {
        **_END_COUNTS,
        "improved": Count(
            "pk", filter=_BOTH_SENTIMENTS & Q(sentiment_last__gt=F("sentiment_first"))
        ),
        "worsened": Count(
            "pk", filter=_BOTH_SENTIMENTS & Q(sentiment_last__lt=F("sentiment_first"))
        ),
        "last": Avg("sentiment_last", filter=_BOTH_SENTIMENTS),
        "first": Avg("sentiment_first", filter=_BOTH_SENTIMENTS),
    }
    return figures(resolved, counts=counts, spreads=_RESOLUTION_SPREADS)


_RESPONSE_SPREADS = {
    "first_response": (Q(is_first=True), "seconds"),
    "first_response_business": (Q(is_first=True), "business_seconds"),
    "next_response": (Q(is_first=False), "seconds"),
    "next_response_business": (Q(is_first=False), "business_seconds"),
}


def _settled_in(user: AnyUser, filters: Filters, range_: DateRange) -> dict[str, int]:
    counts = day_counts(user, filters)
    if counts is None:
        return _settled(conversation_facts(user, filters), range_)
    # Aggregates named apart from the columns they sum, which the ORM would take for them.
    row = counts.filter(_in(range_)).aggregate(
        **{f"sum_{key}": Sum(name) for key, name in _SETTLED_SUMS.items()}
    )
    return {key: row[f"sum_{key}"] or 0 for key in _SETTLED_SUMS}


def _settled(conversations: QuerySet, range_: DateRange) -> dict[str, int]:
    """Conversations whose first-response or resolution target was settled in a range: met
    (by the reply, by the resolution) or missed (late, or passed with nothing done yet), each
    on the day it was settled; and those first resolved in the range, with how many of them
    reopened since."""
    first = _in(range_, "first_response_sla_day")
    resolution = _in(range_, "resolution_sla_day")
    first_resolved = _in(range_, "first_resolved_day")
    row = conversations.filter(first | resolution | first_resolved).aggregate(
        met=Count("pk", filter=first & Q(first_response_met=True)),
        missed=Count("pk", filter=first & Q(first_response_met=False)),
        # Named apart from the columns, which the ORM would take for the aggregates.
        resolutions_met=Count("pk", filter=resolution & Q(resolution_met=True)),
        resolutions_missed=Count("pk", filter=resolution & Q(resolution_met=False)),
        resolved_first=Count("pk", filter=first_resolved),
        reopened_since=Count("pk", filter=first_resolved & Q(reopens__gt=0)),
    )
    return {
        "met": row["met"],
        "missed": row["missed"],
        "resolution_met": row["resolutions_met"],
        "resolution_missed": row["resolutions_missed"],
        "first_resolved": row["resolved_first"],
        "reopened": row["reopened_since"],
    }


def _ends_in(user: AnyUser, filters: Filters, range_: DateRange) -> dict[str, int]:
    """How many conversations were resolved in a range, and how."""
    counts = day_counts(user, filters)
    if counts is None:
        resolved = conversation_facts(user, filters).filter(_in(range_, "resolved_day"))
        return resolved.aggregate(**_END_COUNTS)
    row = counts.filter(_in(range_)).aggregate(
        n=Sum("resolved"),
        in_channel=Sum("in_channel"),
        escalated=Sum("escalated"),
    )
    return {name: value or 0 for name, value in row.items()}


def _open_now(user: AnyUser, filters: Filters) -> dict[str, int]:
    """The backlog and the unassigned in it, whatever the range: read once for the summaries
    of a range and the one before, and the targets on them (cached until facts change)."""
    return _cached("now", user, lambda: _now(user, filters), filters)


def _now(user: AnyUser, filters: Filters) -> dict[str, int]:
    counts = day_counts(user, filters)
    if counts is not None:
        backlog, unassigned = _sums(counts, ["open", "open_unassigned"])[0]
        return {"backlog": int(backlog or 0), "unassigned": int(unassigned or 0)}
    open_ = conversation_facts(user, filters).filter(
        status__in=ACTIVE_STATUSES, is_monitoring=False
    )
    return open_.aggregate(
        backlog=Count("pk"), unassigned=Count("pk", filter=Q(assignee__isnull=True))
    )


def _loyalty(start: dict[str, int], contacts: int, repeat: int) -> Loyalty:
    return Loyalty(
        conversations=start["new"],
        contacts=contacts,
        repeat_contacts=repeat,
        returning_30=start["returning_30"],
        returning_90=start["returning_90"],
        vip_conversations=start["vip"],
        vip_answered=start["vip_answered"],
    )


def _summary(
    *, user: AnyUser, range_: DateRange, filters: Filters | None = None, compared: bool = False
) -> Summary:
    """Every figure of a range: the day counts and the spreads from the duration counts (or
    the facts, filtered by what the counts are not kept by), the contacts of the
    conversations started, the escalations of those resolved, and the backlog. With
    ``compared``, only what a `Baseline` holds: the contacts, the escalations by outcome and
    department, the business-time spreads and the 90th percentiles are then left empty."""
    filters = filters or Filters()
    conversations = conversation_facts(user, filters)
    started = conversations.filter(_in(range_))
    resolved = conversations.filter(_in(range_, "resolved_day"))
    responses = response_facts(user, filters).filter(_in(range_))

    counts = day_counts(user, filters)
    if counts is None:
        volume = _volume(message_days(user, filters).filter(_in(range_)))
        start = _starts(started)
        end, resolution = _ends(resolved)
        reply = _settled(conversations, range_)
        _, response = figures(responses, spreads=_RESPONSE_SPREADS)
        speed = Speed(**response, **resolution)
    else:
        volume, start, reply, end = _counted(counts.filter(_in(range_)))
        measures = _CALENDAR_MEASURES if compared else _SPEED_FIELDS
        speeds = duration_spreads(
            user, filters, range_, measures, fractions=(0.5,) if compared else _FRACTIONS
        )
        if speeds is None:
            _, resolution = figures(resolved, spreads=_RESOLUTION_SPREADS)
            _, response = figures(responses, spreads=_RESPONSE_SPREADS)
            speed = Speed(**response, **resolution)
        else:
            speed = Speed(
                **{name: speeds.get((None, m), _NO_SPREAD) for m, name in _SPEED_FIELDS.items()}
            )
    if compared:
        contacts, repeat, escalations = 0, 0, []
    else:
        if counts is None:
            contacts, repeat = _contacts(started) if start["new"] else (0, 0)
        else:
            contacts, repeat = _contacts_in(user, filters, range_, started, start["new"])
        escalations = _escalations(user, filters, range_, resolved)
    now = _open_now(user, filters)
    return Summary(
        range=range_,
        inbound=volume["inbound"] or 0,
        outbound=volume["outbound"] or 0,
        new_conversations=start["new"],
        new_contacts=start["new_contacts"],
        speed=speed,
        first_response_met=reply["met"],
        first_response_missed=reply["missed"],
        resolution_met=reply["resolution_met"],
        resolution_missed=reply["resolution_missed"],
        breaches=start["breaches"],
        outcomes=_outcomes(escalations, end, reply),
        sentiment=_sentiment(volume, end),
        loyalty=_loyalty(start, contacts, repeat),
        backlog=now["backlog"],
        unassigned=now["unassigned"],
    )


# The speeds a baseline holds the medians of.
_CALENDAR_MEASURES = (
    DurationMeasure.FIRST_RESPONSE,
    DurationMeasure.NEXT_RESPONSE,
    DurationMeasure.RESOLUTION,
)


def _baseline(*, user: AnyUser, range_: DateRange, filters: Filters) -> Baseline:
    found = _summary(user=user, range_=range_, filters=filters, compared=True)
    return Baseline(
        range=range_,
        values={metric: found.value(metric) for metric in BASELINE_METRICS},
        first_response_median=found.speed.first_response.median,
        next_response_median=found.speed.next_response.median,
        resolution_median=found.speed.resolution.median,
    )


# What a summary reads from the day counts, by the name its figures take.
_START_SUMS = {
    "new": "started",
    "new_contacts": "new_contacts",
    "returning_30": "returning_30",
    "returning_90": "returning_90",
    "vip": "vip",
    "vip_answered": "vip_answered",
    "breaches": "breaches",
}
_END_SUMS = {
    "n": "resolved",
    "in_channel": "in_channel",
    "escalated": "escalated",
    "changed": "changed",
    "improved": "improved",
    "worsened": "worsened",
}
# Targets settled: first response ("met", "missed") and resolution; first resolutions, and
# whether they held.
_SETTLED_SUMS = {
    "met": "first_response_met",
    "missed": "first_response_missed",
    "resolution_met": "resolution_met",
    "resolution_missed": "resolution_missed",
    "first_resolved": "first_resolved",
    "reopened": "reopened",
}


def _counted(counts: QuerySet) -> tuple[dict[str, Any], ...]:
    """The volume, starts, settled SLA targets and ends of a range from its day counts, in one
    query, as the facts give them."""
    names = {
        *_MESSAGE_SUMS,
        *_START_SUMS.values(),
        *_END_SUMS.values(),
        *_SETTLED_SUMS.values(),
        "sentiment_first_total",
        "sentiment_last_total",
    }
    columns = sorted(names)
    row = {
        name: int(value or 0)
        for name, value in zip(columns, _sums(counts, columns)[0], strict=True)
    }
    volume = {name: row[name] for name in _MESSAGE_SUMS}
    start = {key: row[name] for key, name in _START_SUMS.items()}
    reply = {key: row[name] for key, name in _SETTLED_SUMS.items()}
    end: dict[str, Any] = {key: row[name] for key, name in _END_SUMS.items()}
    changed = end["changed"]
    end["first"] = row["sentiment_first_total"] / 1_000_000 / changed if changed else None
    end["last"] = row["sentiment_last_total"] / 1_000_000 / changed if changed else None
    return volume, start, reply, end


_TIME_MEASURES: dict[str, int] = {
    Metric.FIRST_RESPONSE_MEDIAN: DurationMeasure.FIRST_RESPONSE,
    Metric.FIRST_RESPONSE_P90: DurationMeasure.FIRST_RESPONSE,
    Metric.NEXT_RESPONSE_MEDIAN: DurationMeasure.NEXT_RESPONSE,
    Metric.RESOLUTION_MEDIAN: DurationMeasure.RESOLUTION,
    Metric.RESOLUTION_P90: DurationMeasure.RESOLUTION,
}


def _metric_value(*, user: AnyUser, range_: DateRange, filters: Filters, metric: str) -> Any:
    """What ``Summary.value(metric)`` gives, from the one or two aggregates it depends on."""
    conversations = conversation_facts(user, filters)
    if metric in (Metric.BACKLOG, Metric.UNASSIGNED):
        return _open_now(user, filters)[metric]
    resolved = conversations.filter(_in(range_, "resolved_day"))
    responses = response_facts(user, filters).filter(_in(range_))
    seconds: Spread | None = None
    measure = _TIME_MEASURES.get(metric)
    p90 = metric in (Metric.FIRST_RESPONSE_P90, Metric.RESOLUTION_P90)
    if measure is not None:
        spreads = duration_spreads(
            user, filters, range_, [measure], fractions=(0.9 if p90 else 0.5,)
        )
        if spreads is not None:
            seconds = spreads.get((None, measure), _NO_SPREAD)
        elif measure == DurationMeasure.RESOLUTION:
            seconds = spread(resolved, "resolution_seconds")
        else:
            first = measure == DurationMeasure.FIRST_RESPONSE
            seconds = spread(responses.filter(is_first=first), "seconds")
    if seconds is not None:
        value = seconds.p90 if p90 else seconds.median
        return None if value is None else value / 60
    if metric in (Metric.INBOUND, Metric.OUTBOUND, Metric.POSITIVE_SHARE, Metric.NEGATIVE_SHARE):
        volume = _volume_in(user, filters, range_)
        if metric in (Metric.INBOUND, Metric.OUTBOUND):
            return volume[metric] or 0
        mood = Sentiment(
            positive=volume["positive"] or 0,
            neutral=volume["neutral"] or 0,
            negative=volume["negative"] or 0,
            conversations=0,
            improved=0,
            worsened=0,
            mean_change=None,
        )
        return mood.positive_share if metric == Metric.POSITIVE_SHARE else mood.negative_share
    if metric == Metric.FIRST_RESPONSE_SLA:
        reply = _settled_in(user, filters, range_)
        return _share(reply["met"], reply["met"] + reply["missed"])
    if metric == Metric.RESOLUTION_SLA:
        reply = _settled_in(user, filters, range_)
        return _share(reply["resolution_met"], reply["resolution_met"] + reply["resolution_missed"])
    if metric == Metric.BREACHES:
        return _starts_in(user, filters, range_)["breaches"]
    if metric in (Metric.NEW_CONVERSATIONS, Metric.NEW_CONTACTS, Metric.RETURNING_30):
        start = _starts_in(user, filters, range_)
        if metric == Metric.NEW_CONVERSATIONS:
            return start["new"]
        if metric == Metric.NEW_CONTACTS:
            return start["new_contacts"]
        return _loyalty(start, 0, 0).returning_30_share
    if metric == Metric.VIP_COVERAGE:
        return _loyalty(_starts_in(user, filters, range_), 0, 0).vip_coverage
    if metric == Metric.REOPEN_RATE:
        settled = _settled_in(user, filters, range_)
        return _share(settled["reopened"], settled["first_resolved"])
    end = _ends_in(user, filters, range_)
    outcomes = Outcomes(
        resolved=end["n"],
        in_channel=end["in_channel"],
        escalated=end["escalated"],
        first_resolved=0,
        reopened=0,
        by_outcome=[],
        by_department=[],
    )
    rates: dict[str, float | None] = {
        Metric.IN_CHANNEL_RESOLUTION: outcomes.in_channel_rate,
        Metric.ESCALATION_RATE: outcomes.escalation_rate,
    }
    if metric not in rates:
        raise ValueError(f"Unknown metric {metric!r}")
    return rates[metric]


# The escalation counts' columns, by the outcome they count ("": none yet).
_ESCALATION_OUTCOMES = {
    "still_open": "",
    "resolved_in_channel": EscalationOutcome.RESOLVED_IN_CHANNEL.value,
    "resolved_by_department": EscalationOutcome.RESOLVED_BY_DEPARTMENT.value,
    "moved_offline": EscalationOutcome.MOVED_OFFLINE.value,
    "abandoned": EscalationOutcome.ABANDONED.value,
}


def escalation_counts(user: AnyUser, filters: Filters) -> QuerySet[EscalationCounts] | None:
    """The escalation counts of a scope, or None if it is filtered by what they are not kept by
    (a team, a priority, an agent, a tag): the escalations then come from the facts."""
    if any(v is not None for v in (filters.team, filters.priority, filters.agent, filters.tag)):
        return None
    q = Q()
    if filters.channel is not None:
        q &= Q(channel_id=filters.channel)
    if filters.platform:
        q &= Q(platform=filters.platform)
    qs = EscalationCounts.objects.filter(q)
    ids = seen_channel_ids(user=user)
    if ids is not None:
        qs = qs.filter(channel_id__in=ids)
    return qs


def _escalations(
    user: AnyUser, filters: Filters, range_: DateRange, resolved: QuerySet
) -> list[tuple[str, str | None, int]]:
    """The escalated conversations resolved in a range: (outcome, department's name, how
    many), from the escalation counts where they serve the scope, else from the facts."""
    counts = escalation_counts(user, filters)
    if counts is None:
        return [
            (row["escalation_outcome"], row["escalation_department__name"], row["n"])
            for row in resolved.filter(escalations__gt=0)
            .values("escalation_outcome", "escalation_department__name")
            .annotate(n=Count("pk"))
            .order_by()
        ]
    rows = _sums(counts.filter(_in(range_)), list(_ESCALATION_OUTCOMES), ["department_key"])
    keys = {row[0] for row in rows} - {0}
    names = dict(Department.objects.filter(pk__in=keys).values_list("pk", "name")) if keys else {}
    return [
        (outcome, names.get(row[0]), int(n))
        for row in rows
        for outcome, n in zip(_ESCALATION_OUTCOMES.values(), row[1:], strict=True)
        if n
    ]


def _outcomes(
    escalations: list[tuple[str, str | None, int]], end: dict[str, int], settled: dict[str, int]
) -> Outcomes:
    """The counts of resolved conversations, and the escalated among them by how their
    escalation ended and where it went; the first resolutions, and those reopened since."""
    labels = dict(EscalationOutcome.choices)
    outcomes: dict[str, int] = defaultdict(int)
    departments: dict[str | None, int] = defaultdict(int)
    for outcome, department, n in escalations:
        outcomes[outcome] += n
        departments[department] += n
    by_department = sorted(departments.items(), key=lambda kv: (-kv[1], kv[0] is None, kv[0] or ""))
    return Outcomes(
        resolved=end["n"],
        in_channel=end["in_channel"],
        escalated=end["escalated"],
        first_resolved=settled["first_resolved"],
        reopened=settled["reopened"],
        by_outcome=[(labels.get(code, "Still open"), n) for code, n in sorted(outcomes.items())],
        by_department=[(name or "A manager", n) for name, n in by_department],
    )


def _sentiment(volume: dict[str, Any], end: dict[str, Any]) -> Sentiment:
    changed = end["changed"]
    return Sentiment(
        positive=volume["positive"] or 0,
        neutral=volume["neutral"] or 0,
        negative=volume["negative"] or 0,
        conversations=changed,
        improved=end["improved"] if changed else 0,
        worsened=end["worsened"] if changed else 0,
        mean_change=end["last"] - end["first"] if changed else None,
    )


def _bucket(day: date, grain: str) -> date:
    if grain == "week":
        return day - timedelta(days=day.weekday())
    if grain == "month":
        return day.replace(day=1)
    return day


def buckets(range_: DateRange, grain: str) -> list[date]:
    starts: list[date] = []
    day = range_.start
    while day <= range_.end:
        start = _bucket(day, grain)
        if not starts or starts[-1] != start:
            starts.append(start)
        day += timedelta(days=1)
    return starts


def _trunc(grain: str) -> Any:
    if grain == "week":
        return TruncWeek("day")
    if grain == "month":
        return TruncMonth("day")
    return None


def _by_bucket(qs: QuerySet, grain: str, day_field: str = "day") -> QuerySet:
    trunc = _trunc(grain)
    if trunc is None:
        return qs.annotate(bucket=F(day_field))
    trunc.source_expressions = [F(day_field)]
    return qs.annotate(bucket=trunc)


def _as_date(value: date | datetime) -> date:
    return value.date() if isinstance(value, datetime) else value


def _series(
    *, user: AnyUser, range_: DateRange, filters: Filters | None = None, grain: str = "day"
) -> list[Point]:
    """Figures per day, week or month of the range, every bucket present."""
    filters = filters or Filters()
    if grain not in GRAINS:
        raise ValueError(f"Unknown grain {grain!r}")
    points: dict[date, dict[str, Any]] = {
        start: {"start": start, "by_channel": {}} for start in buckets(range_, grain)
    }
    counts = day_counts(user, filters)
    if counts is not None:
        _counts_by_bucket(points, _by_bucket(counts.filter(_in(range_)), grain))
    else:
        _facts_by_bucket(points, user, filters, range_, grain)
    first_response = DurationMeasure.FIRST_RESPONSE
    spreads = duration_spreads(
        user, filters, range_, [first_response], grain=grain, fractions=(0.5,)
    )
    if spreads is not None:
        medians = {group: value.median for (group, _), value in spreads.items()}
    else:
        first = _by_bucket(response_facts(user, filters).filter(_in(range_), is_first=True), grain)
        medians = {
            _as_date(key): value.median
            for key, value in grouped_spread(first, "bucket", "seconds").items()
        }
    for start, median in medians.items():
        points[start]["first_response_median"] = median
    return [Point(**points[start]) for start in sorted(points)]


_MESSAGE_SUMS = ("inbound", "outbound", "positive", "neutral", "negative")


def _counts_by_bucket(points: dict[date, dict[str, Any]], counts: QuerySet) -> None:
    for row in (
        counts.values("bucket", "channel__name")
        .annotate(
            **{name: Sum(name) for name in _MESSAGE_SUMS},
            started=Sum("started"),
            resolved=Sum("resolved"),
        )
        .order_by()
    ):
        point = points[_as_date(row["bucket"])]
        point["new_conversations"] = point.get("new_conversations", 0) + row["started"]
        point["resolved"] = point.get("resolved", 0) + row["resolved"]
        if not (row["inbound"] or row["outbound"]):
            continue  # no messages of the channel: as no message day of it
        for name in _MESSAGE_SUMS:
            point[name] = point.get(name, 0) + row[name]
        name = row["channel__name"]
        point["by_channel"][name] = point["by_channel"].get(name, 0) + row["inbound"]


def _facts_by_bucket(
    points: dict[date, dict[str, Any]],
    user: AnyUser,
    filters: Filters,
    range_: DateRange,
    grain: str,
) -> None:
    days = _by_bucket(message_days(user, filters).filter(_in(range_)), grain)
    for row in (
        days.values("bucket", "channel__name")
        .annotate(**{name: Sum(name) for name in _MESSAGE_SUMS})
        .order_by()
    ):
        point = points[_as_date(row["bucket"])]
        for name in _MESSAGE_SUMS:
            point[name] = point.get(name, 0) + (row[name] or 0)
        point["by_channel"][row["channel__name"]] = (
            point["by_channel"].get(row["channel__name"], 0) + row["inbound"]
        )
    conversations = conversation_facts(user, filters)
    for row in (
        _by_bucket(conversations.filter(_in(range_)), grain)
        .values("bucket")
        .annotate(n=Count("pk"))
        .order_by()
    ):
        points[_as_date(row["bucket"])]["new_conversations"] = row["n"]
    for row in (
        _by_bucket(conversations.filter(_in(range_, "resolved_day")), grain, "resolved_day")
        .values("bucket")
        .annotate(n=Count("pk"))
        .order_by()
    ):
        points[_as_date(row["bucket"])]["resolved"] = row["n"]


def _response_distribution(
    *, user: AnyUser, range_: DateRange, filters: Filters | None = None
) -> list[tuple[str, int, int]]:
    """First and next responses per time bucket: (label, first, next)."""
    filters = filters or Filters()
    counts = day_counts(user, filters)
    if counts is not None:
        row = counts.filter(_in(range_)).aggregate(
            **{
                f"{kind}{i}": Sum(f"{kind}{i}")
                for kind in "fn"
                for i in range(len(RESPONSE_BUCKETS))
            }
        )
        return [
            (label, row[f"f{i}"] or 0, row[f"n{i}"] or 0)
            for i, (label, _) in enumerate(RESPONSE_BUCKETS)
        ]
    responses = response_facts(user, filters).filter(_in(range_))
    bounds = [0.0, *(b for _, b in RESPONSE_BUCKETS)]
    aggregates = {}
    for i, (_, upper) in enumerate(RESPONSE_BUCKETS):
        lower = bounds[i] * 60
        window = Q(seconds__gte=lower)
        if upper != math.inf:
            window &= Q(seconds__lt=upper * 60)
        aggregates[f"f{i}"] = Count("pk", filter=window & Q(is_first=True))
        aggregates[f"n{i}"] = Count("pk", filter=window & Q(is_first=False))
    row = responses.aggregate(**aggregates)
    return [(label, row[f"f{i}"], row[f"n{i}"]) for i, (label, _) in enumerate(RESPONSE_BUCKETS)]


def backlog_by_age(
    *, user: AnyUser, filters: Filters | None = None, now: datetime | None = None
) -> list[tuple[str, int, int]]:
    """Open conversations per age bucket: (label, open, unassigned). Ages are taken at the
    minute (the facts are refreshed about once a minute), so the figures are cached for it
    until facts change."""
    filters = filters or Filters()
    at = (now or timezone.now()).replace(second=0, microsecond=0)
    return _cached(
        "backlog", user, lambda: _backlog_by_age(user=user, filters=filters, now=at), filters, at
    )


def _backlog_by_age(
    *, user: AnyUser, filters: Filters, now: datetime
) -> list[tuple[str, int, int]]:
    """The open conversations by age: those started in the last days from the facts (a few
    through the index of open conversations), the older ones, all in the last bucket, from
    the day counts of the days they started."""
    open_ = conversation_facts(user, filters).filter(
        status__in=ACTIVE_STATUSES, is_monitoring=False
    )
    older = (0, 0)
    counts = day_counts(user, filters)
    if counts is not None:
        zone = timezone.get_default_timezone()
        oldest = timezone.localdate(now - timedelta(hours=BACKLOG_BUCKETS[-2][1]), zone)
        # The day bounds the rows exactly; the moment a day earlier, what the index reads.
        recent = datetime.combine(oldest - timedelta(days=1), datetime.min.time(), UTC)
        open_ = open_.filter(day__gte=oldest, started_at__gte=recent)
        found = _sums(counts.filter(day__lt=oldest), ["open", "open_unassigned"])[0]
        older = (int(found[0] or 0), int(found[1] or 0))
    aggregates = {}
    previous = 0.0
    for i, (_, upper) in enumerate(BACKLOG_BUCKETS):
        # The youngest bucket has no lower bound on the age: ``now`` is taken at the minute,
        # and a conversation started since belongs there too, as in the backlog's total.
        window = Q(started_at__lte=now - timedelta(hours=previous)) if previous else Q()
        if upper != math.inf:
            window &= Q(started_at__gt=now - timedelta(hours=upper))
        aggregates[f"o{i}"] = Count("pk", filter=window)
        aggregates[f"u{i}"] = Count("pk", filter=window & Q(assignee__isnull=True))
        previous = upper
    row = open_.aggregate(**aggregates)
    last = len(BACKLOG_BUCKETS) - 1
    row[f"o{last}"] += older[0]
    row[f"u{last}"] += older[1]
    return [(label, row[f"o{i}"], row[f"u{i}"]) for i, (label, _) in enumerate(BACKLOG_BUCKETS)]


def _agents(*, user: AnyUser, range_: DateRange, filters: Filters | None = None) -> list[AgentRow]:
    """Per agent: conversations resolved, responses, medians and SLA compliance."""
    from django.contrib.auth import get_user_model

    filters = replace(filters or Filters(), agent=None)
    responses = response_facts(user, filters).filter(_in(range_), agent__isnull=False)
    resolved = conversation_facts(user, filters).filter(
        _in(range_, "resolved_day"), resolved_by__isnull=False
    )
    counts: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    kept = agent_counts(user, filters)
    if kept is None:
        _agent_counts(counts, responses, resolved)
    else:
        for pk, *sums in _sums(kept.filter(_in(range_)), _AGENT_SUMS, ["agent_id"]):
            n, met, missed, handled, handled_met, handled_missed = (int(v or 0) for v in sums)
            if n or handled:
                c = counts[pk]
                c.update(responses=n, handled=handled)
                c.update(met=met + handled_met, missed=missed + handled_missed)
    medians = agent_medians(user, filters, range_)
    if medians is None:
        medians = {
            DurationMeasure.FIRST_RESPONSE: {
                pk: s.median
                for pk, s in grouped_spread(
                    responses.filter(is_first=True), "agent", "seconds"
                ).items()
            },
            DurationMeasure.RESOLUTION: {
                pk: s.median
                for pk, s in grouped_spread(resolved, "resolved_by", "resolution_seconds").items()
            },
        }
    first = medians[DurationMeasure.FIRST_RESPONSE]
    resolution = medians[DurationMeasure.RESOLUTION]
    names = {
        u.pk: (u.get_full_name() or u.get_username())
        for u in get_user_model().objects.filter(pk__in=counts)
    }
    rows = [
        AgentRow(
            agent_id=pk,
            name=names.get(pk, f"#{pk}"),
            handled=c["handled"],
            responses=c["responses"],
            first_response_median=first.get(pk),
            resolution_median=resolution.get(pk),
            sla_met=c["met"],
            sla_missed=c["missed"],
        )
        for pk, c in counts.items()
    ]
    return sorted(rows, key=lambda r: (-r.handled, -r.responses, r.name))


_AGENT_SUMS = [
    "responses",
    "responses_met",
    "responses_missed",
    "resolved",
    "resolved_met",
    "resolved_missed",
]


def agent_counts(user: AnyUser, filters: Filters) -> QuerySet[AgentCounts] | None:
    """The agent counts of a scope, or None if it is filtered by what they are not kept by (a
    team, a priority, a tag): the agents' figures then come from the facts."""
    return _agent_scope(AgentCounts, user, filters)


def agent_durations(user: AnyUser, filters: Filters) -> QuerySet[AgentDurations] | None:
    """The agents' duration counts of a scope, or None if it is filtered by what they are not
    kept by (a team, a priority, a tag): the agents' medians then come from the facts."""
    return _agent_scope(AgentDurations, user, filters)


_AgentRows = TypeVar("_AgentRows", AgentCounts, AgentDurations)


def _agent_scope(
    model: type[_AgentRows], user: AnyUser, filters: Filters
) -> QuerySet[_AgentRows] | None:
    """The rows of a per-agent count table (by day, agent, channel and platform) a scope sees."""
    if any(v is not None for v in (filters.team, filters.priority, filters.tag)):
        return None
    q = Q()
    if filters.channel is not None:
        q &= Q(channel_id=filters.channel)
    if filters.platform:
        q &= Q(platform=filters.platform)
    if filters.agent is not None:
        q &= Q(agent_id=filters.agent)
    qs = model._default_manager.filter(q)
    ids = seen_channel_ids(user=user)
    if ids is not None:
        qs = qs.filter(channel_id__in=ids)
    return qs


# What the agents' medians are read from, by measure: (model, column, day column, agent
# column, first responses only).
_AGENT_FACTS: dict[int, tuple[type[ResponseFact] | type[ConversationFact], str, str, str, bool]] = {
    DurationMeasure.FIRST_RESPONSE: (ResponseFact, "seconds", "day", "agent_id", True),
    DurationMeasure.RESOLUTION: (
        ConversationFact,
        "resolution_seconds",
        "resolved_day",
        "resolved_by_id",
        False,
    ),
}


def agent_medians(
    user: AnyUser, filters: Filters, range_: DateRange
) -> dict[int, dict[int, float | None]] | None:
    """Each agent's median first response and resolution in a range, by measure and agent,
    from the agents' duration counts and the facts of the buckets that hold the medians;
    None if the counts do not serve the scope or disagree with the facts. The facts of one
    bucket are read once for every agent whose median it holds, numbered per agent."""
    counts = agent_durations(user, filters)
    if counts is None:
        return None
    rows = counts.filter(_in(range_), measure__in=list(_AGENT_FACTS))
    columns = ["n", *(f"b{i}" for i in range(DURATION_BUCKETS))]
    # (measure, bucket) -> {agent: (offset in the bucket, count)}, and the ranks per agent.
    wanted: dict[tuple[int, int], dict[int, tuple[int, int, int]]] = defaultdict(dict)
    sizes: dict[tuple[int, int], int] = {}
    for measure, agent, n, *buckets in _sums(rows, columns, ["measure", "agent_id"]):
        n, buckets = int(n or 0), [int(v or 0) for v in buckets]
        if not n:
            continue
        if sum(buckets) != n:
            return None
        sizes[(measure, agent)] = n
        low, high, _ = _ranks(n, 0.5)
        for bucket, offset, count, first_rank in _bands(buckets, [low, high]):
            wanted[(measure, bucket)][agent] = (offset, count, first_rank)
    values: dict[tuple[int, int], dict[int, float]] = defaultdict(dict)
    days = [range_.start + timedelta(days=i) for i in range(range_.days)]
    quote = connection.ops.quote_name
    parts, params = [], []
    for (measure, bucket), agents in wanted.items():
        if bucket == ZERO_BUCKET:  # zero alone: nothing to read
            for agent, (_, count, first_rank) in agents.items():
                for k in range(count):
                    values[(measure, agent)][first_rank + k] = 0.0
            continue
        model, column, day_field, agent_field, first_only = _AGENT_FACTS[measure]
        scope, scope_params = _where(_scoped(model, user, filters, agent_field=None))
        column, agent_column = quote(column), quote(agent_field)
        where = [
            scope,
            f"{quote(day_field)} IN ({', '.join(['%s'] * len(days))})",
            f"{column} IS NOT NULL",
            f"{agent_column} IN ({', '.join(['%s'] * len(agents))})",
        ]
        params += [*scope_params, *days, *agents]
        if first_only:
            where.append(f"{quote('is_first')} = %s")
            params.append(True)
        lower, upper, above = bucket_bounds(bucket)
        if lower is not None:
            where.append(f"{column} {'>' if above else '>='} %s")
            params.append(lower)
        if upper is not None:
            where.append(f"{column} < %s")
            params.append(upper)
        # The ranks within the bucket (from 1) each agent needs.
        ranks = [
            (agent, offset + 1 + k)
            for agent, (offset, count, _) in agents.items()
            for k in range(count)
        ]
        parts.append(
            f"SELECT {measure} AS measure, {bucket} AS bucket, w.agent, w.place, w.value FROM ("
            f"SELECT {agent_column} AS agent, {column} AS value, ROW_NUMBER() OVER"
            f" (PARTITION BY {agent_column} ORDER BY {column}) AS place"
            f" FROM {quote(model._meta.db_table)} WHERE {' AND '.join(where)}) w"
            f" WHERE (w.agent, w.place) IN (VALUES {', '.join(['(%s, %s)'] * len(ranks))})"
        )
        params += [v for pair in ranks for v in pair]
    if parts:
        found: dict[tuple[int, int, int], dict[int, float]] = defaultdict(dict)
        with connection.cursor() as cursor:
            cursor.execute(" UNION ALL ".join(parts), params)
            for measure, bucket, agent, place, value in cursor.fetchall():
                found[(measure, bucket, agent)][place - 1] = value
        for (measure, bucket), agents in wanted.items():
            if bucket == ZERO_BUCKET:
                continue
            for agent, (offset, count, first_rank) in agents.items():
                at = found[(measure, bucket, agent)]
                if len(at) != count:
                    return None  # the facts changed since the counts were read
                for k in range(count):
                    values[(measure, agent)][first_rank + k] = at[offset + k]
    medians: dict[int, dict[int, float | None]] = {measure: {} for measure in _AGENT_FACTS}
    for (measure, agent), n in sizes.items():
        at = values[(measure, agent)]
        low, high, position = _ranks(n, 0.5)
        medians[measure][agent] = at[low] + (at[high] - at[low]) * (position - low)
    return medians


def _agent_counts(
    counts: dict[int, dict[str, int]], responses: QuerySet, resolved: QuerySet
) -> None:
    """Per agent, responses and conversations resolved, and how many met their SLA, from the
    facts."""
    for row in (
        responses.values("agent")
        .annotate(
            n=Count("pk"),
            met=Count("pk", filter=Q(sla_met=True)),
            missed=Count("pk", filter=Q(sla_met=False)),
        )
        .order_by()
    ):
        counts[row["agent"]].update(responses=row["n"], met=row["met"], missed=row["missed"])
    for resolver in (
        resolved.values("resolved_by")
        .annotate(
            n=Count("pk"),
            met=Count("pk", filter=Q(resolution_met=True)),
            missed=Count("pk", filter=Q(resolution_met=False)),
        )
        .order_by()
    ):
        c = counts[resolver["resolved_by"]]
        c["handled"] = resolver["n"]
        c["met"] += resolver["met"]
        c["missed"] += resolver["missed"]


def per_dimension(
    *,
    user: AnyUser,
    range_: DateRange,
    filters: Filters | None = None,
    dimension: str,
    values: Iterable[tuple[Any, str]],
) -> list[tuple[str, Any, Summary]]:
    """The summary for each value of a dimension (channel, team): (label, value, summary)."""
    filters = filters or Filters()
    return [
        (
            label,
            value,
            summary(user=user, range_=range_, filters=replace(filters, **{dimension: value})),
        )
        for value, label in values
    ]
