"""The KPI digest: the last week's (or month's, quarter's: SCRM_DIGEST_PERIOD) figures against
the period before and every target's status, emailed to managers and admins (each sees the
channels they may see).

Due once the organisation's period has turned (for weeks Monday, SCRM_DIGEST_HOUR o'clock local
time, by default 07:00). The beat asks every hour; a `DigestRun` row per period makes a second
ask, a retried task or a second beat send nothing twice, and remembers who already got it when
a failure stopped a run part-way.
"""

import logging
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.contrib.auth.models import User
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.db.models import Q, QuerySet
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from governance.models import Role
from kpis.facts import facts_refresh
from kpis.metrics import LOWER_IS_BETTER, DateRange, Summary, summary
from kpis.models import DigestRun, Metric, Period
from kpis.targets import (
    TargetStatus,
    format_value,
    period_start,
    previous_period,
    targets_status,
)

logger = logging.getLogger(__name__)

# The figures of the digest, in its order.
HEADLINES = (
    Metric.INBOUND,
    Metric.NEW_CONVERSATIONS,
    Metric.NEW_CONTACTS,
    Metric.FIRST_RESPONSE_MEDIAN,
    Metric.FIRST_RESPONSE_P90,
    Metric.RESOLUTION_MEDIAN,
    Metric.FIRST_RESPONSE_SLA,
    Metric.RESOLUTION_SLA,
    Metric.BREACHES,
    Metric.IN_CHANNEL_RESOLUTION,
    Metric.ESCALATION_RATE,
    Metric.REOPEN_RATE,
    Metric.NEGATIVE_SHARE,
    Metric.BACKLOG,
)


@dataclass(frozen=True)
class Headline:
    label: str
    value: str
    previous: str
    better: bool | None


def recipients() -> QuerySet[User]:
    """Active managers and admins with an email address."""
    return (
        User.objects.filter(is_active=True)
        .exclude(email="")
        .filter(Q(is_superuser=True) | Q(groups__name__in=[Role.ADMIN, Role.MANAGER]))
        .distinct()
        .order_by("pk")
    )


def due_period(now: datetime, period: str = Period.WEEK) -> DateRange | None:
    """The last whole period (week, month, quarter) whose digest is due at this moment: from
    the digest hour of the next period's first day."""
    local = timezone.localtime(now, timezone.get_default_timezone())
    today = local.date()
    if today == period_start(period, today) and local.hour < settings.SCRM_DIGEST_HOUR:
        return None
    return previous_period(period, today)


def _title(period: str, range_: DateRange) -> str:
    if period == Period.WEEK:
        return f"week of {range_.start:%b %-d}"
    if period == Period.MONTH:
        return f"{range_.start:%B %Y}"
    return f"quarter {range_.start:%b %-d} to {range_.end:%b %-d %Y}"


def headlines(current: Summary, previous: Summary) -> list[Headline]:
    rows = []
    for metric in HEADLINES:
        value, before = current.value(metric), previous.value(metric)
        better = None
        if value is not None and before is not None and value != before:
            better = (value < before) if metric in LOWER_IS_BETTER else (value > before)
        rows.append(
            Headline(
                label=Metric(metric).label,
                value=format_value(metric, value),
                previous=format_value(metric, before),
                better=better,
            )
        )
    return rows


def digest_render(user: User, week: DateRange, period: str = Period.WEEK) -> EmailMultiAlternatives:
    current = summary(user=user, range_=week)
    previous = summary(user=user, range_=previous_period(period, week.start))
    statuses: list[TargetStatus] = targets_status(user=user, today=week.end)
    context = {
        "user": user,
        "week": week,
        "title": _title(period, week),
        "headlines": headlines(current, previous),
        "targets": statuses,
        "missed": sum(1 for s in statuses if s.status == "missed"),
        "url": settings.SITE_URL + reverse("kpis:overview"),
    }
    subject = f"Social customer service, {_title(period, week)}: KPIs against targets"
    email = EmailMultiAlternatives(
        subject=subject,
        body=render_to_string("kpis/email/digest.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[user.email],
    )
    email.attach_alternative(render_to_string("kpis/email/digest.html", context), "text/html")
    return email


def digest_send(*, now: datetime | None = None) -> int:
    """Send the digest that is due, to whoever has not had it yet. Returns emails sent."""
    if not settings.SCRM_DIGEST_ENABLED:
        return 0
    now = now or timezone.now()
    period = settings.SCRM_DIGEST_PERIOD
    week = due_period(now, period)
    if week is None:
        return 0
    run, _ = DigestRun.objects.get_or_create(
        period=period, period_start=week.start, defaults={"period_end": week.end}
    )
    if run.sent_at is not None:
        return 0
    while facts_refresh():  # the latest changes count too
        pass
    sent = 0
    for user in recipients():
        with transaction.atomic():
            # Locked while one recipient is written to: two workers never both send.
            run = DigestRun.objects.select_for_update().get(pk=run.pk)
            if user.pk in run.sent_to:
                continue
            digest_render(user, week, period).send()
            run.sent_to = [*run.sent_to, user.pk]
            run.save(update_fields=["sent_to"])
            sent += 1
    DigestRun.objects.filter(pk=run.pk).update(sent_at=now)
    logger.info("KPI digest for %s sent to %d people", week.start, sent)
    return sent
