"""Figures for the reports page, read with aggregate queries over indexed time ranges."""

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from statistics import median

from django.db.models import Count, Q
from django.db.models.functions import TruncDate
from django.utils import timezone

from conversations.models import ACTIVE_STATUSES, Direction, MessageKind
from conversations.selectors import conversations_visible_to, messages_visible_to
from scrm.types import AnyUser


@dataclass(frozen=True)
class ChannelFigures:
    name: str
    platform: str
    conversations: int
    inbound: int
    outbound: int


@dataclass(frozen=True)
class Overview:
    since: datetime
    days: int
    new_conversations: int
    inbound: int
    outbound: int
    resolved: int
    backlog: int
    unassigned: int
    median_first_response: timedelta | None
    daily: list[tuple[date, int, int]]  # day, inbound, outbound
    per_channel: list[ChannelFigures]

    @property
    def daily_peak(self) -> int:
        return max((max(i, o) for _, i, o in self.daily), default=0) or 1


def overview(*, user: AnyUser, days: int = 30) -> Overview:
    now = timezone.now()
    since = now - timedelta(days=days)
    conversations = conversations_visible_to(user=user)
    messages = (
        messages_visible_to(user=user).filter(created_at__gte=since).exclude(kind=MessageKind.NOTE)
    )

    totals = messages.aggregate(
        inbound=Count("pk", filter=Q(direction=Direction.IN)),
        outbound=Count("pk", filter=Q(direction=Direction.OUT)),
    )
    state = conversations.aggregate(
        new=Count("pk", filter=Q(created_at__gte=since)),
        resolved=Count("pk", filter=Q(resolved_at__gte=since)),
        backlog=Count("pk", filter=Q(status__in=ACTIVE_STATUSES, is_monitoring=False)),
        unassigned=Count(
            "pk",
            filter=Q(status__in=ACTIVE_STATUSES, is_monitoring=False, assignee__isnull=True),
        ),
    )
    waits = [
        (first - created).total_seconds()
        for created, first in conversations.filter(
            created_at__gte=since, first_response_at__isnull=False
        ).values_list("created_at", "first_response_at")
        if first is not None
    ]
    by_day: dict[date, list[int]] = {}
    for day, direction, n in (
        messages.annotate(day=TruncDate("created_at", tzinfo=timezone.get_current_timezone()))
        .values("day", "direction")
        .annotate(n=Count("pk"))
        .values_list("day", "direction", "n")
    ):
        by_day.setdefault(day, [0, 0])[0 if direction == Direction.IN else 1] += n
    today = timezone.localdate()
    daily = [
        (d, *by_day.get(d, [0, 0]))
        for d in (today - timedelta(days=offset) for offset in range(days - 1, -1, -1))
    ]
    per_channel = [
        ChannelFigures(
            name=row["channel__name"],
            platform=row["channel__platform"],
            conversations=row["conversations"],
            inbound=row["inbound"],
            outbound=row["outbound"],
        )
        for row in messages.values("channel__name", "channel__platform")
        .annotate(
            conversations=Count("conversation", distinct=True),
            inbound=Count("pk", filter=Q(direction=Direction.IN)),
            outbound=Count("pk", filter=Q(direction=Direction.OUT)),
        )
        .order_by("channel__name")
    ]
    return Overview(
        since=since,
        days=days,
        new_conversations=state["new"],
        inbound=totals["inbound"],
        outbound=totals["outbound"],
        resolved=state["resolved"],
        backlog=state["backlog"],
        unassigned=state["unassigned"],
        median_first_response=timedelta(seconds=median(waits)) if waits else None,
        daily=daily,  # type: ignore[arg-type]
        per_channel=per_channel,
    )
