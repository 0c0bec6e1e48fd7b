"""The report pages for managers and admins: the KPI dashboard, figures per channel, team and
agent, the targets they set, and every report as CSV. Figures come from `kpis.metrics`."""

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_safe

from governance.audit import audit_change, audit_deletion, audit_record
from governance.models import Team
from governance.roles import is_manager_or_admin
from governance.selectors import channels_visible_to
from kpis import export
from kpis.forms import CUSTOM, PRESETS, ROLLING, KpiTargetForm, ReportForm
from kpis.metrics import (
    LOWER_IS_BETTER,
    SHARE_METRICS,
    SNAPSHOT_METRICS,
    TIME_METRICS,
    Baseline,
    DateRange,
    Filters,
    Point,
    Spread,
    Summary,
    agents,
    backlog_by_age,
    baseline,
    conversation_facts,
    per_dimension,
    response_distribution,
    response_facts,
    series,
    summary,
)
from kpis.models import KpiTarget, Metric
from kpis.targets import (
    TargetStatus,
    format_minutes,
    format_value,
    scope_label,
    targets_status,
)
from kpis.targets import targets_visible_to as visible_targets
from scrm.types import AuthedRequest

# The rolling windows of the range picker, in days (the retention rules read the longest).
RANGES = ROLLING
View = Callable[..., HttpResponseBase]

# The headline figures, each with the previous period's value.
HEADLINE = (
    Metric.NEW_CONVERSATIONS,
    Metric.INBOUND,
    Metric.OUTBOUND,
    Metric.NEW_CONTACTS,
    Metric.FIRST_RESPONSE_MEDIAN,
    Metric.RESOLUTION_MEDIAN,
    Metric.FIRST_RESPONSE_SLA,
    Metric.RESOLUTION_SLA,
    Metric.IN_CHANNEL_RESOLUTION,
    Metric.ESCALATION_RATE,
    Metric.REOPEN_RATE,
    Metric.BREACHES,
    Metric.NEGATIVE_SHARE,
    Metric.BACKLOG,
    Metric.UNASSIGNED,
)
# The columns of the channel and team pages, after the volumes.
DIMENSION_FIGURES = (
    Metric.FIRST_RESPONSE_MEDIAN,
    Metric.FIRST_RESPONSE_SLA,
    Metric.RESOLUTION_MEDIAN,
    Metric.IN_CHANNEL_RESOLUTION,
    Metric.ESCALATION_RATE,
    Metric.NEGATIVE_SHARE,
)
TABS = (
    ("overview", "Dashboard", "kpis:overview"),
    ("channels", "Channels", "kpis:channels"),
    ("teams", "Teams", "kpis:teams"),
    ("agents", "Agents", "kpis:agents"),
    ("targets", "Targets", "kpis:targets"),
)
EXPORTS = (
    "summary",
    "series",
    "distribution",
    "backlog",
    "channels",
    "teams",
    "agents",
    "targets",
    "conversations",
    "responses",
)


def managers_only(view: View) -> View:
    @wraps(view)
    def guarded(request: AuthedRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not is_manager_or_admin(request.user):
            raise PermissionDenied("Reports are for managers and admins.")
        return view(request, *args, **kwargs)

    return guarded


def _today() -> date:
    return timezone.localdate(timezone.now(), timezone.get_default_timezone())


def _page(
    request: AuthedRequest, template: str, tab: str, *, status: int = 200, **context: Any
) -> HttpResponse:
    form = context.get("form")
    context.setdefault("hide", [])  # filters a page does not offer: it splits figures by them
    query = form.query() if isinstance(form, ReportForm) and form.is_valid() else ""
    context["tabs"] = [
        (key == tab, label, reverse(name) + (f"?{query}" if query and key != "targets" else ""))
        for key, label, name in TABS
    ]
    return render(request, f"kpis/{template}", context, status=status)


def _report_form(request: AuthedRequest) -> ReportForm:
    return ReportForm(request.GET, user=request.user, today=_today())


def _range_links(form: ReportForm) -> list[tuple[str, str, bool]]:
    """The range picker's presets as links that keep the filters: (label, query, current)."""
    valid = form.is_valid()
    current = form.cleaned_data.get("range") if valid else None
    links = []
    for value, label in PRESETS:
        if value == CUSTOM:
            continue
        preset = {"days": value} if value.isdigit() else {"range": value}
        changes: dict[str, Any] = {"range": None, "start": None, "end": None, **preset}
        query = form.query(**changes) if valid else urlencode(preset)
        links.append((label, query, current == value))
    return links


# --- Figures as the pages show them -------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """A figure, the previous period's and whether the change is for the better."""

    label: str
    value: str
    previous: str
    change: str
    trend: str  # better, worse, same, or empty when there is nothing to compare
    rose: bool = False
    snapshot: bool = False

    @property
    def arrow(self) -> str:
        """Which way the figure went; the colour (trend) says whether that is good."""
        if self.trend in ("", "same"):
            return "=" if self.trend else ""
        return "▲" if self.rose else "▼"

    @property
    def trend_label(self) -> str:
        return {"better": "better", "worse": "worse", "same": "no change"}.get(self.trend, "")


def metric_label(metric: str) -> str:
    """The metric's name without its unit."""
    return re.sub(r" \((min|%)\)$", "", str(Metric(metric).label))


def change_text(metric: str, value: float | None, previous: float | None) -> str:
    if value is None or previous is None:
        return ""
    diff = value - previous
    if diff == 0:
        return "no change"
    if metric in TIME_METRICS:
        return ("+" if diff >= 0 else "-") + format_minutes(abs(diff))
    if metric in SHARE_METRICS:
        return f"{diff:+.1f} pts"
    if previous:
        return f"{100 * diff / previous:+.0f}%"
    return f"{diff:+,.0f}"


def compare(metric: str, current: Summary, previous: Summary | Baseline) -> Comparison:
    value = current.value(metric)
    snapshot = metric in SNAPSHOT_METRICS
    before = None if snapshot else previous.value(metric)
    trend = ""
    if value is not None and before is not None:
        # What reads the same on the page is no change (37.7 min against 37.7 min).
        if format_value(metric, value) == format_value(metric, before):
            trend = "same"
        else:
            better = (value < before) if metric in LOWER_IS_BETTER else (value > before)
            trend = "better" if better else "worse"
    return Comparison(
        label=metric_label(metric),
        value=format_value(metric, value),
        previous=format_value(metric, before) if not snapshot else "",
        change=change_text(metric, value, before),
        trend=trend,
        rose=value is not None and before is not None and value > before,
        snapshot=snapshot,
    )


def duration_text(seconds: float | None) -> str:
    return "n/a" if seconds is None else format_minutes(seconds / 60)


def share_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}%"


@dataclass(frozen=True)
class SpeedRow:
    name: str
    calendar: Spread
    business: Spread
    previous: float | None  # the median of the period before, in seconds

    def texts(self, spread: Spread) -> list[str]:
        return [duration_text(spread.median), duration_text(spread.p90), duration_text(spread.mean)]

    @property
    def calendar_texts(self) -> list[str]:
        return self.texts(self.calendar)

    @property
    def business_texts(self) -> list[str]:
        return self.texts(self.business)

    @property
    def previous_median(self) -> str:
        return duration_text(self.previous)


def speed_rows(current: Summary, previous: Baseline) -> list[SpeedRow]:
    now = current.speed
    return [
        SpeedRow(
            "First response",
            now.first_response,
            now.first_response_business,
            previous.first_response_median,
        ),
        SpeedRow(
            "Next response",
            now.next_response,
            now.next_response_business,
            previous.next_response_median,
        ),
        SpeedRow("Resolution", now.resolution, now.resolution_business, previous.resolution_median),
    ]


def bucket_label(start: date, grain: str) -> str:
    if grain == "month":
        return start.strftime("%b %Y")
    if grain == "week":
        return f"Week of {start:%b} {start.day}"
    return f"{start:%a %b} {start.day}"


def _minutes(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 60, 1)


def _share(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(100 * part / whole, 1)


def chart_data(
    points: list[Point],
    grain: str,
    distribution: list[tuple[str, int, int]],
    backlog: list[tuple[str, int, int]],
) -> dict[str, Any]:
    """What the charts draw; the tables next to them show the same figures."""
    channels = sorted({name for p in points for name in p.by_channel})
    sentiment_totals = [p.positive + p.neutral + p.negative for p in points]
    return {
        "labels": [bucket_label(p.start, grain) for p in points],
        "volume": {
            "inbound": [p.inbound for p in points],
            "outbound": [p.outbound for p in points],
            "new_conversations": [p.new_conversations for p in points],
        },
        "first_response": [_minutes(p.first_response_median) for p in points],
        "channels": [
            {"name": name, "inbound": [p.by_channel.get(name, 0) for p in points]}
            for name in channels
        ],
        "sentiment": {
            kind: [
                _share(getattr(p, kind), t) for p, t in zip(points, sentiment_totals, strict=True)
            ]
            for kind in ("positive", "neutral", "negative")
        },
        "distribution": {
            "labels": [label for label, _, _ in distribution],
            "first": [first for _, first, _ in distribution],
            "next": [following for _, _, following in distribution],
        },
        "backlog": {
            "labels": [label for label, _, _ in backlog],
            "open": [n for _, n, _ in backlog],
            "unassigned": [n for _, _, n in backlog],
        },
    }


def series_rows(points: list[Point], grain: str) -> list[dict[str, Any]]:
    channels = sorted({name for p in points for name in p.by_channel})
    rows = []
    for p in points:
        scored = p.positive + p.neutral + p.negative
        rows.append(
            {
                "label": bucket_label(p.start, grain),
                "point": p,
                "first_response": duration_text(p.first_response_median),
                "by_channel": [p.by_channel.get(name, 0) for name in channels],
                "shares": [
                    share_text(_share(n, scored)) for n in (p.positive, p.neutral, p.negative)
                ],
            }
        )
    return rows


# --- Pages --------------------------------------------------------------------------------


def targets_in_force(request: AuthedRequest, today: date) -> list[TargetStatus]:
    targets = targets_visible_to(request).filter(valid_from__lte=today)
    return targets_status(
        user=request.user, today=today, targets=targets.select_related("channel", "team")
    )


@require_safe
@managers_only
def reports(request: AuthedRequest) -> HttpResponse:
    """The KPI dashboard: headline figures against the previous period, targets, charts."""
    form = _report_form(request)
    if not form.is_valid():
        return _page(
            request,
            "overview.html",
            "overview",
            form=form,
            status=400,
            range_links=_range_links(form),
        )
    user, range_, filters, grain = request.user, form.date_range, form.filters, form.bucket
    previous_range = range_.previous()
    current = summary(user=user, range_=range_, filters=filters)
    previous = baseline(user=user, range_=previous_range, filters=filters)
    points = series(user=user, range_=range_, filters=filters, grain=grain)
    distribution = response_distribution(user=user, range_=range_, filters=filters)
    backlog = backlog_by_age(user=user, filters=filters)
    return _page(
        request,
        "overview.html",
        "overview",
        form=form,
        range_links=_range_links(form),
        range=range_,
        previous_range=previous_range,
        filter_labels=form.filter_labels(),
        summary=current,
        previous=previous,
        headline=[compare(metric, current, previous) for metric in HEADLINE],
        speed=speed_rows(current, previous),
        sla=[
            compare(m, current, previous)
            for m in (Metric.FIRST_RESPONSE_SLA, Metric.RESOLUTION_SLA, Metric.BREACHES)
        ],
        outcome=[
            compare(m, current, previous)
            for m in (Metric.IN_CHANNEL_RESOLUTION, Metric.ESCALATION_RATE, Metric.REOPEN_RATE)
        ],
        sentiment=[
            compare(m, current, previous) for m in (Metric.POSITIVE_SHARE, Metric.NEGATIVE_SHARE)
        ],
        loyalty=[compare(m, current, previous) for m in (Metric.RETURNING_30, Metric.VIP_COVERAGE)],
        targets=[(t, scope_label(t.target)) for t in targets_in_force(request, form.today)],
        series_rows=series_rows(points, grain),
        channel_names=sorted({name for p in points for name in p.by_channel}),
        distribution=distribution,
        backlog=backlog,
        chart_data=chart_data(points, grain, distribution, backlog),
        exports=(exports := _exports(form)),
        export=exports["summary"],
    )


def _exports(form: ReportForm) -> dict[str, str]:
    query = form.query()
    return {name: f"{reverse(f'kpis:export_{name}')}?{query}" for name in EXPORTS}


def _without(filters: Filters, dimension: str) -> Filters:
    """The filters but the one a page splits its figures by."""
    return replace(filters, channel=None) if dimension == "channel" else replace(filters, team=None)


def _dimension_page(
    request: AuthedRequest, *, dimension: str, noun: str, tab: str, values: list[tuple[Any, str]]
) -> HttpResponse:
    form = _report_form(request)
    context: dict[str, Any] = {
        "form": form,
        "noun": noun,
        "dimension": dimension,
        "range_links": _range_links(form),
        "hide": [dimension],
    }
    if not form.is_valid():
        return _page(request, "dimension.html", tab, status=400, **context)
    filters = _without(form.filters, dimension)
    rows = per_dimension(
        user=request.user,
        range_=form.date_range,
        filters=filters,
        dimension=dimension,
        values=values,
    )
    context.update(
        range=form.date_range,
        filter_labels=form.filter_labels(hidden=[dimension]),
        figures=[metric_label(m) for m in DIMENSION_FIGURES],
        rows=[
            (
                label,
                f"{reverse('kpis:overview')}?{form.query(**{dimension: value})}",
                s,
                [format_value(m, s.value(m)) for m in DIMENSION_FIGURES],
            )
            for label, value, s in rows
        ],
        export=_exports(form)[tab],
    )
    return _page(request, "dimension.html", tab, **context)


@require_safe
@managers_only
def channel_report(request: AuthedRequest) -> HttpResponse:
    channels = channels_visible_to(user=request.user).order_by("name")
    return _dimension_page(
        request,
        dimension="channel",
        noun="Channel",
        tab="channels",
        values=[(c.pk, c.name) for c in channels],
    )


@require_safe
@managers_only
def team_report(request: AuthedRequest) -> HttpResponse:
    teams = Team.objects.order_by("name")
    return _dimension_page(
        request, dimension="team", noun="Team", tab="teams", values=[(t.pk, t.name) for t in teams]
    )


@require_safe
@managers_only
def agent_report(request: AuthedRequest) -> HttpResponse:
    """Agents compared: for managers and admins only, like every report."""
    form = _report_form(request)
    context: dict[str, Any] = {"form": form, "range_links": _range_links(form), "hide": ["agent"]}
    if not form.is_valid():
        return _page(request, "agents.html", "agents", status=400, **context)
    rows = agents(user=request.user, range_=form.date_range, filters=form.filters)
    context.update(
        range=form.date_range,
        filter_labels=form.filter_labels(hidden=["agent"]),
        rows=[
            (
                row,
                f"{reverse('kpis:overview')}?{form.query(agent=row.agent_id)}",
                duration_text(row.first_response_median),
                duration_text(row.resolution_median),
                share_text(row.sla_compliance),
            )
            for row in rows
        ],
        export=_exports(form)["agents"],
    )
    return _page(request, "agents.html", "agents", **context)


# --- Targets ------------------------------------------------------------------------------


def targets_visible_to(request: AuthedRequest) -> QuerySet[KpiTarget]:
    return visible_targets(request.user)


@require_safe
@managers_only
def target_list(request: AuthedRequest) -> HttpResponse:
    today = _today()
    targets = targets_visible_to(request).select_related("channel", "team", "created_by")
    statuses = {
        s.target.pk: s
        for s in targets_status(
            user=request.user, today=today, targets=targets.filter(valid_from__lte=today)
        )
    }
    rows = [(target, scope_label(target), statuses.get(target.pk)) for target in targets]
    return _page(
        request,
        "targets.html",
        "targets",
        rows=rows,
        today=today,
        export=reverse("kpis:export_targets"),
    )


@managers_only
def target_edit(request: AuthedRequest, pk: int | None = None) -> HttpResponse:
    target = (
        get_object_or_404(targets_visible_to(request), pk=pk)
        if pk
        else KpiTarget(created_by=request.user)
    )
    form = KpiTargetForm(request.POST or None, instance=target, user=request.user)
    if request.method == "POST" and form.is_valid():
        with audit_change(target, actor=request.user, thing="kpi_target"):
            target = form.save()
        messages.success(request, f"Target “{target}” saved.")
        return redirect("kpis:targets")
    return _page(
        request,
        "target_form.html",
        "targets",
        form=form,
        target=target,
        status=400 if form.errors else 200,
    )


@managers_only
def target_delete(request: AuthedRequest, pk: int) -> HttpResponse:
    target = get_object_or_404(targets_visible_to(request), pk=pk)
    if request.method == "POST":
        name = str(target)
        with audit_deletion(target, actor=request.user, thing="kpi_target"):
            target.delete()
        messages.success(request, f"Target “{name}” deleted.")
        return redirect("kpis:targets")
    return _page(request, "target_delete.html", "targets", target=target, scope=scope_label(target))


# --- CSV ------------------------------------------------------------------------------------


@require_safe
@managers_only
def export_csv(request: AuthedRequest, report: str) -> HttpResponseBase:
    """One report as CSV, with the range and filters of the page it was asked from."""
    if report not in EXPORTS:
        raise Http404("No such report.")
    form = _report_form(request)
    if not form.is_valid():
        errors = " ".join(str(e) for errors in form.errors.values() for e in errors)
        return HttpResponse(errors, status=400, content_type="text/plain; charset=utf-8")
    user, range_, filters = request.user, form.date_range, form.filters
    name = export.filename(report, range_)
    if report == "summary":
        current = summary(user=user, range_=range_, filters=filters)
        previous = summary(user=user, range_=range_.previous(), filters=filters)
        return export.csv_response(
            name, export.SUMMARY_HEADER, export.summary_rows(current, previous)
        )
    if report == "series":
        header, rows = export.series_table(
            series(user=user, range_=range_, filters=filters, grain=form.bucket)
        )
        return export.csv_response(name, header, rows)
    if report == "distribution":
        return export.csv_response(
            name,
            export.DISTRIBUTION_HEADER,
            response_distribution(user=user, range_=range_, filters=filters),
        )
    if report == "backlog":
        return export.csv_response(
            export.filename(report, None),
            export.BACKLOG_HEADER,
            backlog_by_age(user=user, filters=filters),
        )
    if report == "agents":
        return export.csv_response(
            name,
            export.AGENTS_HEADER,
            export.agents_rows(agents(user=user, range_=range_, filters=filters)),
        )
    if report in ("channels", "teams"):
        return _dimension_csv(request, report, form)
    if report == "targets":
        return export.csv_response(
            export.filename(report, None),
            export.TARGETS_HEADER,
            export.targets_rows(targets_in_force(request, form.today)),
        )
    return _facts_csv(request, report, range_, filters, name)


def _dimension_csv(request: AuthedRequest, report: str, form: ReportForm) -> StreamingHttpResponse:
    dimension = "channel" if report == "channels" else "team"
    if dimension == "channel":
        values = [(c.pk, c.name) for c in channels_visible_to(user=request.user).order_by("name")]
    else:
        values = [(t.pk, t.name) for t in Team.objects.order_by("name")]
    rows = per_dimension(
        user=request.user,
        range_=form.date_range,
        filters=_without(form.filters, dimension),
        dimension=dimension,
        values=values,
    )
    return export.csv_response(
        export.filename(report, form.date_range),
        export.dimension_header(dimension.capitalize()),
        export.dimension_rows(rows),
    )


def _facts_csv(
    request: AuthedRequest, report: str, range_: DateRange, filters: Filters, name: str
) -> StreamingHttpResponse:
    """Facts of conversations started, or responses given, in the range: streamed."""
    if report == "conversations":
        qs: Any = conversation_facts(request.user, filters)
        columns = export.CONVERSATION_FACT_COLUMNS
    else:
        qs = response_facts(request.user, filters)
        columns = export.RESPONSE_FACT_COLUMNS
    qs = qs.filter(day__gte=range_.start, day__lte=range_.end)
    audit_record(
        action="report.exported",
        request=request,
        report=report,
        start=range_.start,
        end=range_.end,
        filters=filters.__dict__,
    )
    return export.csv_response(
        name, [label for _, label in columns], export.facts_rows(qs, columns)
    )
