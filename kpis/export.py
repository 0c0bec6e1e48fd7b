"""The reports as CSV: the same figures the pages show (`kpis.metrics`), one table per report,
and the per-conversation and per-response facts they are computed from, streamed.

Times are in minutes and shares in percent, as in targets. Text that a spreadsheet would run
as a formula (names of channels, teams, departments, agents) is quoted.
"""

import csv
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime
from typing import Any

from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from django.utils import timezone

from kpis.metrics import (
    AgentRow,
    DateRange,
    Point,
    Spread,
    Summary,
)
from kpis.models import ConversationFact, ResponseFact
from kpis.targets import TargetStatus, scope_label

Row = Sequence[Any]
# Figures of "now": the previous period has no value of its own for them.
_SNAPSHOT_SECTION = "Backlog"
FACTS_CHUNK_SIZE = 2000
# A spreadsheet runs a cell starting with one of these as a formula.
_FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A value fit for a cell: text that could run as a formula behind a quote mark, dates as
    ISO text, empty for none; numbers as they are."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return timezone.localtime(value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        return round(value, 2)
    if isinstance(value, str):
        return "'" + value if value.startswith(_FORMULA_TRIGGERS) else value
    return value


class _Echo:
    """A file-like object whose write returns the line, so csv.writer can feed a stream."""

    def write(self, value: str) -> str:
        return value


def csv_response(filename: str, header: Row, rows: Iterable[Row]) -> StreamingHttpResponse:
    """Rows written as they are read: an iterator of a million rows never sits in memory."""
    writer = csv.writer(_Echo())

    def lines() -> Iterator[str]:
        yield "\ufeff"  # so spreadsheets read the file as UTF-8
        yield writer.writerow([csv_cell(value) for value in header])
        for row in rows:
            yield writer.writerow([csv_cell(value) for value in row])

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def filename(report: str, range_: DateRange | None) -> str:
    if range_ is None:
        return f"reports-{report}-{timezone.localdate():%Y-%m-%d}.csv"
    return f"reports-{report}-{range_.start:%Y-%m-%d}-to-{range_.end:%Y-%m-%d}.csv"


def minutes(seconds: float | None) -> float | None:
    return None if seconds is None else seconds / 60


# --- The summary, figure by figure --------------------------------------------------------

Figure = tuple[str, str, str, float | int | None]  # section, figure, unit, value


def _spread(section: str, name: str, spread: Spread, time: str) -> list[Figure]:
    return [
        (section, f"{name}: median ({time})", "min", minutes(spread.median)),
        (section, f"{name}: 90th percentile ({time})", "min", minutes(spread.p90)),
        (section, f"{name}: mean ({time})", "min", minutes(spread.mean)),
    ]


def summary_figures(s: Summary) -> list[Figure]:
    """Every figure of a summary, in the order of the dashboard's sections."""
    speed, outcomes, sentiment, loyalty = s.speed, s.outcomes, s.sentiment, s.loyalty
    figures: list[Figure] = [
        ("Volume", "Inbound messages", "count", s.inbound),
        ("Volume", "Outbound messages", "count", s.outbound),
        ("Volume", "New conversations", "count", s.new_conversations),
        ("Volume", "New contacts first seen on social", "count", s.new_contacts),
    ]
    for name, calendar, business in (
        ("First response", speed.first_response, speed.first_response_business),
        ("Next response", speed.next_response, speed.next_response_business),
        ("Resolution", speed.resolution, speed.resolution_business),
    ):
        figures.append(("Speed", f"{name}: count", "count", calendar.n))
        figures += _spread("Speed", name, calendar, "calendar time")
        figures += _spread("Speed", name, business, "business hours")
    figures += [
        ("SLA", "First responses within SLA", "%", s.first_response_sla),
        ("SLA", "First responses within SLA: met", "count", s.first_response_met),
        ("SLA", "First responses within SLA: missed", "count", s.first_response_missed),
        ("SLA", "Resolutions within SLA", "%", s.resolution_sla),
        ("SLA", "Resolutions within SLA: met", "count", s.resolution_met),
        ("SLA", "Resolutions within SLA: missed", "count", s.resolution_missed),
        ("SLA", "SLA breaches", "count", s.breaches),
        ("Outcome", "Resolved conversations", "count", outcomes.resolved),
        ("Outcome", "Resolved in the channel", "count", outcomes.in_channel),
        ("Outcome", "In-channel resolution rate", "%", outcomes.in_channel_rate),
        ("Outcome", "Escalated", "count", outcomes.escalated),
        ("Outcome", "Escalation rate", "%", outcomes.escalation_rate),
        ("Outcome", "First resolved", "count", outcomes.first_resolved),
        ("Outcome", "Reopened since first resolved", "count", outcomes.reopened),
        ("Outcome", "Reopen rate", "%", outcomes.reopen_rate),
    ]
    figures += [("Outcome", f"Escalations ended: {k}", "count", n) for k, n in outcomes.by_outcome]
    figures += [("Outcome", f"Escalations to: {k}", "count", n) for k, n in outcomes.by_department]
    figures += [
        ("Sentiment", "Positive messages", "count", sentiment.positive),
        ("Sentiment", "Neutral messages", "count", sentiment.neutral),
        ("Sentiment", "Negative messages", "count", sentiment.negative),
        ("Sentiment", "Positive share", "%", sentiment.positive_share),
        ("Sentiment", "Neutral share", "%", sentiment.neutral_share),
        ("Sentiment", "Negative share", "%", sentiment.negative_share),
        ("Sentiment", "Conversations scored first and last", "count", sentiment.conversations),
        ("Sentiment", "Improved from first to last message", "count", sentiment.improved),
        ("Sentiment", "Worsened from first to last message", "count", sentiment.worsened),
        ("Sentiment", "Mean change from first to last message", "score", sentiment.mean_change),
        (_SNAPSHOT_SECTION, "Open conversations now", "count", s.backlog),
        (_SNAPSHOT_SECTION, "Open and unassigned now", "count", s.unassigned),
        ("Loyalty", "Conversations started", "count", loyalty.conversations),
        ("Loyalty", "Contacts", "count", loyalty.contacts),
        (
            "Loyalty",
            "Repeat contacts (two or more conversations)",
            "count",
            loyalty.repeat_contacts,
        ),
        ("Loyalty", "Returning within 30 days", "count", loyalty.returning_30),
        ("Loyalty", "Returning within 30 days", "%", loyalty.returning_30_share),
        ("Loyalty", "Returning within 90 days", "count", loyalty.returning_90),
        ("Loyalty", "Returning within 90 days", "%", loyalty.returning_90_share),
        ("Loyalty", "VIP conversations", "count", loyalty.vip_conversations),
        ("Loyalty", "VIP conversations answered", "count", loyalty.vip_answered),
        ("Loyalty", "VIP coverage", "%", loyalty.vip_coverage),
    ]
    return figures


SUMMARY_HEADER = ["Section", "Figure", "Unit", "Value", "Previous period", "Change"]


def summary_rows(current: Summary, previous: Summary) -> list[Row]:
    """Each figure with the previous period's value and the difference."""
    before = {(section, name, unit): v for section, name, unit, v in summary_figures(previous)}
    rows: list[Row] = []
    for section, name, unit, value in summary_figures(current):
        old = None if section == _SNAPSHOT_SECTION else before.get((section, name, unit), 0)
        change = None if value is None or old is None else value - old
        rows.append([section, name, unit, value, old, change])
    return rows


# --- Tables of the other reports -----------------------------------------------------------


def series_table(points: Sequence[Point]) -> tuple[list[str], list[Row]]:
    channels = sorted({name for p in points for name in p.by_channel})
    header = [
        "Period start",
        "Inbound",
        "Outbound",
        "New conversations",
        "Resolved",
        "Median first response (min)",
        "Positive",
        "Neutral",
        "Negative",
        *(f"Inbound on {name}" for name in channels),
    ]
    rows: list[Row] = [
        [
            p.start,
            p.inbound,
            p.outbound,
            p.new_conversations,
            p.resolved,
            minutes(p.first_response_median),
            p.positive,
            p.neutral,
            p.negative,
            *(p.by_channel.get(name, 0) for name in channels),
        ]
        for p in points
    ]
    return header, rows


DISTRIBUTION_HEADER = ["Response time", "First responses", "Next responses"]
BACKLOG_HEADER = ["Age", "Open", "Unassigned"]
AGENTS_HEADER = [
    "Agent",
    "Conversations resolved",
    "Responses",
    "Median first response (min)",
    "Median resolution (min)",
    "Within SLA",
    "Outside SLA",
    "SLA compliance (%)",
]


def agents_rows(rows: Sequence[AgentRow]) -> list[Row]:
    return [
        [
            r.name,
            r.handled,
            r.responses,
            minutes(r.first_response_median),
            minutes(r.resolution_median),
            r.sla_met,
            r.sla_missed,
            r.sla_compliance,
        ]
        for r in rows
    ]


def dimension_header(noun: str) -> list[str]:
    return [
        noun,
        "Inbound",
        "Outbound",
        "New conversations",
        "Median first response (min)",
        "First responses within SLA (%)",
        "Resolved",
        "Median resolution (min)",
        "In-channel resolution (%)",
        "Escalation rate (%)",
        "Negative messages (%)",
        "Open now",
        "Open and unassigned now",
    ]


def dimension_rows(rows: Iterable[tuple[str, Any, Summary]]) -> list[Row]:
    return [
        [
            label,
            s.inbound,
            s.outbound,
            s.new_conversations,
            minutes(s.speed.first_response.median),
            s.first_response_sla,
            s.outcomes.resolved,
            minutes(s.speed.resolution.median),
            s.outcomes.in_channel_rate,
            s.outcomes.escalation_rate,
            s.sentiment.negative_share,
            s.backlog,
            s.unassigned,
        ]
        for label, _, s in rows
    ]


TARGETS_HEADER = [
    "Metric",
    "Scope",
    "Period",
    "Period from",
    "Period to",
    "Target",
    "Goal so far",
    "Value",
    "Previous period",
    "Status",
    "Note",
]


def targets_rows(statuses: Sequence[TargetStatus]) -> list[Row]:
    return [
        [
            t.target.get_metric_display(),
            scope_label(t.target),
            t.target.get_period_display(),
            t.range.start,
            t.range.end,
            t.target.value,
            t.goal,
            t.value,
            t.previous,
            t.status_label,
            t.target.note,
        ]
        for t in statuses
    ]


# --- The facts -------------------------------------------------------------------------------

CONVERSATION_FACT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("conversation_id", "Conversation"),
    ("channel__name", "Channel"),
    ("platform", "Platform"),
    ("team__name", "Team"),
    ("priority", "Priority"),
    ("assignee__username", "Assignee"),
    ("contact_id", "Contact"),
    ("status", "Status"),
    ("is_monitoring", "Monitoring only"),
    ("started_at", "Started at"),
    ("day", "Day"),
    ("inbound", "Inbound messages"),
    ("outbound", "Outbound messages"),
    ("new_contact", "New contact"),
    ("days_since_previous", "Days since previous conversation"),
    ("first_response_at", "First response at"),
    ("first_response_seconds", "First response (s)"),
    ("first_response_business_seconds", "First response, business hours (s)"),
    ("first_response_met", "First response within SLA"),
    ("first_response_sla_day", "First-response SLA settled on"),
    ("resolved_at", "Resolved at"),
    ("resolved_day", "Resolved on"),
    ("resolution_seconds", "Resolution (s)"),
    ("resolution_business_seconds", "Resolution, business hours (s)"),
    ("resolution_met", "Resolution within SLA"),
    ("resolution_sla_day", "Resolution SLA settled on"),
    ("resolved_by__username", "Resolved by"),
    ("first_resolved_day", "First resolved on"),
    ("reopens", "Reopenings"),
    ("breaches", "SLA breaches"),
    ("escalations", "Escalations"),
    ("escalation_department__name", "Escalated to"),
    ("escalation_outcome", "Escalation outcome"),
    ("sentiment_first", "Sentiment of first message"),
    ("sentiment_last", "Sentiment of last message"),
)
RESPONSE_FACT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("conversation_id", "Conversation"),
    ("channel__name", "Channel"),
    ("platform", "Platform"),
    ("team__name", "Team"),
    ("priority", "Priority"),
    ("at", "Replied at"),
    ("day", "Day"),
    ("is_first", "First response"),
    ("seconds", "Wait (s)"),
    ("business_seconds", "Wait, business hours (s)"),
    ("sla_met", "Within SLA"),
    ("agent__username", "Agent"),
)


def facts_rows(qs: QuerySet[Any], columns: Sequence[tuple[str, str]]) -> Iterator[Row]:
    """The facts' rows, read from the database in chunks as the response is written."""
    fields = [name for name, _ in columns]
    yield from (
        qs.order_by(*_order_of(qs)).values_list(*fields).iterator(chunk_size=FACTS_CHUNK_SIZE)
    )


def _order_of(qs: QuerySet[Any]) -> list[str]:
    if qs.model is ConversationFact:
        return ["day", "conversation_id"]
    if qs.model is ResponseFact:
        return ["at", "conversation_id"]
    return ["pk"]
