"""KPI targets against the figures: met, at risk or missed, and the trend on the period before.

A target is evaluated over its current period so far (this week from Monday, this month, this
quarter), in its scope, and compared with the whole previous period. Counts that should be
high (messages, new conversations, contacts) are compared with the share of the target that the
elapsed part of the period calls for; everything else with the target as set.

- met: the figure is on the right side of the target;
- at risk: it misses by no more than the target's margin (a percentage of the target);
- missed: it misses by more;
- no data: nothing to measure yet (no responses, no resolutions...).
"""

from dataclasses import dataclass
from datetime import date, timedelta

from django.db.models import Q, QuerySet
from django.utils import timezone

from governance.selectors import channels_visible_to
from kpis.metrics import (
    LOWER_IS_BETTER,
    SHARE_METRICS,
    SNAPSHOT_METRICS,
    TIME_METRICS,
    DateRange,
    Filters,
    metric_value,
    metric_values,
)
from kpis.models import KpiTarget, Metric, Period
from scrm.types import AnyUser

MET, AT_RISK, MISSED, NO_DATA = "met", "at_risk", "missed", "no_data"
STATUS_LABELS = {MET: "Met", AT_RISK: "At risk", MISSED: "Missed", NO_DATA: "No data"}
# Counts that grow through the period; a target on them is prorated while it runs.
_GROWING = frozenset(
    {Metric.INBOUND, Metric.OUTBOUND, Metric.NEW_CONVERSATIONS, Metric.NEW_CONTACTS}
)


def period_start(period: str, day: date) -> date:
    if period == Period.WEEK:
        return day - timedelta(days=day.weekday())
    if period == Period.MONTH:
        return day.replace(day=1)
    if period == Period.QUARTER:
        return day.replace(month=(day.month - 1) // 3 * 3 + 1, day=1)
    raise ValueError(f"Unknown period {period!r}")


def period_range(period: str, today: date) -> DateRange:
    """The period that contains today, from its first day to today."""
    return DateRange(period_start(period, today), today)


def previous_period(period: str, today: date) -> DateRange:
    """The whole period before the one that contains today."""
    end = period_start(period, today) - timedelta(days=1)
    return DateRange(period_start(period, end), end)


def _period_end(period: str, start: date) -> date:
    if period == Period.WEEK:
        return start + timedelta(days=6)
    month = start.month + (1 if period == Period.MONTH else 3)
    year = start.year + (month - 1) // 12
    month = (month - 1) % 12 + 1
    return date(year, month, 1) - timedelta(days=1)


def scope_of(target: KpiTarget) -> Filters:
    return Filters(channel=target.channel_id, platform=target.platform, team=target.team_id)


def scope_label(target: KpiTarget) -> str:
    parts = []
    if target.channel is not None:
        parts.append(target.channel.name)
    if target.platform:
        parts.append(target.platform.capitalize())
    if target.team is not None:
        parts.append(f"team {target.team.name}")
    return ", ".join(parts) or "All channels"


def format_value(metric: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if metric in TIME_METRICS:
        return format_minutes(value)
    if metric in SHARE_METRICS:
        return f"{value:.1f}%"
    return f"{value:,.0f}"


def format_minutes(minutes: float) -> str:
    if minutes < 60:
        return f"{minutes:.1f} min"
    if minutes < 48 * 60:
        return f"{minutes / 60:.1f} h"
    return f"{minutes / 1440:.1f} days"


@dataclass(frozen=True)
class TargetStatus:
    target: KpiTarget
    range: DateRange
    value: float | None
    goal: float  # the target, prorated for growing counts while the period runs
    previous: float | None  # the whole period before
    status: str
    # What the trend compares with: the period before, a growing count prorated to the share
    # of its period gone by, as the goal is (a week's count on its Tuesday against the whole
    # week before would always look worse).
    previous_pace: float | None = None

    @property
    def lower_is_better(self) -> bool:
        return self.target.metric in LOWER_IS_BETTER

    @property
    def change(self) -> float | None:
        before = self.previous if self.previous_pace is None else self.previous_pace
        if self.value is None or before is None:
            return None
        return self.value - before

    @property
    def improved(self) -> bool | None:
        change = self.change
        if change is None or change == 0:
            return None
        return (change < 0) if self.lower_is_better else (change > 0)

    @property
    def scope(self) -> str:
        return scope_label(self.target)

    @property
    def status_label(self) -> str:
        return STATUS_LABELS[self.status]

    @property
    def value_text(self) -> str:
        return format_value(self.target.metric, self.value)

    @property
    def goal_text(self) -> str:
        sign = "≤" if self.lower_is_better else "≥"
        return f"{sign} {format_value(self.target.metric, self.goal)}"

    @property
    def previous_text(self) -> str:
        return format_value(self.target.metric, self.previous)


def judge(metric: str, value: float | None, goal: float, margin: float) -> str:
    if value is None:
        return NO_DATA
    lower = metric in LOWER_IS_BETTER
    if (value <= goal) if lower else (value >= goal):
        return MET
    slack = abs(goal) * margin / 100
    missed_by = (value - goal) if lower else (goal - value)
    return AT_RISK if missed_by <= slack else MISSED


def evaluate(
    target: KpiTarget, *, user: AnyUser, today: date, cache: dict | None = None
) -> TargetStatus:
    cache = {} if cache is None else cache
    current = period_range(target.period, today)
    before = previous_period(target.period, today)
    scope = scope_of(target)

    def figure(range_: DateRange) -> float | None:
        key = (range_, scope, target.metric)
        if key not in cache:
            cache[key] = metric_value(user=user, range_=range_, filters=scope, metric=target.metric)
        return cache[key]

    value = figure(current)
    previous = None if target.metric in SNAPSHOT_METRICS else figure(before)
    goal, pace = target.value, previous
    if target.metric in _GROWING:
        length = (_period_end(target.period, current.start) - current.start).days + 1
        goal = target.value * current.days / length
        if previous is not None:
            pace = previous * current.days / length
    return TargetStatus(
        target=target,
        range=current,
        value=value,
        goal=goal,
        previous=previous,
        status=judge(target.metric, value, goal, target.at_risk_margin),
        previous_pace=pace,
    )


def targets_visible_to(user: AnyUser) -> QuerySet[KpiTarget]:
    """Targets on every channel, or on a channel the user sees: a manager neither reads nor
    changes the targets of another team's channel."""
    return KpiTarget.objects.filter(
        Q(channel__isnull=True) | Q(channel__in=channels_visible_to(user=user))
    )


def active_targets(user: AnyUser, today: date) -> QuerySet[KpiTarget]:
    return (
        targets_visible_to(user)
        .filter(valid_from__lte=today)
        .select_related("channel", "team")
        .order_by("metric", "period", "pk")
    )


def targets_status(
    *, user: AnyUser, today: date | None = None, targets: QuerySet[KpiTarget] | None = None
) -> list[TargetStatus]:
    """Every target in force that the user may see (unless given), evaluated: each reads only
    its own metric, a figure shared between targets is read once, and all are computed (and
    cached) together."""
    today = today or timezone.localdate(timezone.now(), timezone.get_default_timezone())
    in_force = list(targets if targets is not None else active_targets(user, today))
    wanted = []
    for target in in_force:
        ranges = [period_range(target.period, today)]
        if target.metric not in SNAPSHOT_METRICS:
            ranges.append(previous_period(target.period, today))
        wanted += [(range_, scope_of(target), target.metric) for range_ in ranges]
    cache: dict = dict(metric_values(user=user, wanted=wanted))
    return [evaluate(t, user=user, today=today, cache=cache) for t in in_force]
