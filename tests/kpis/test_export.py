"""CSV exports: the same figures as the metrics, formula text quoted, facts streamed."""

import csv
import io
from datetime import date

import pytest
from django.db import connection
from django.http import StreamingHttpResponse
from django.test.utils import CaptureQueriesContext

from governance.models import AuditEntry
from kpis.export import csv_cell, filename, summary_figures
from kpis.facts import facts_refresh
from kpis.metrics import (
    DateRange,
    Filters,
    agents,
    backlog_by_age,
    response_distribution,
    series,
    summary,
)
from kpis.models import ConversationFact, KpiTarget, Metric, Period, ResponseFact
from tests.kpis.test_views import conversation_story, stories


def _rows(response):
    assert isinstance(response, StreamingHttpResponse)
    text = b"".join(response.streaming_content).decode("utf-8")
    assert text.startswith("\ufeff")
    return list(csv.reader(io.StringIO(text[1:])))


def _number(cell: str) -> float | None:
    return None if cell == "" else float(cell)


@pytest.mark.django_db
def test_the_summary_export_holds_the_figures_and_the_previous_period(login, world):
    stories(world, 6)
    response = login(world.admin).get("/reports/export/summary.csv?days=30")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    range_ = DateRange.last(30)
    assert (
        response["Content-Disposition"] == f'attachment; filename="{filename("summary", range_)}"'
    )
    header, *rows = _rows(response)
    assert header == ["Section", "Figure", "Unit", "Value", "Previous period", "Change"]
    current = summary(user=world.admin, range_=range_)
    previous = summary(user=world.admin, range_=range_.previous())
    expected = summary_figures(current)
    assert [(r[0], r[1], r[2]) for r in rows] == [(s, f, u) for s, f, u, _ in expected]
    by_name = {(r[1], r[2]): r for r in rows}
    assert _number(by_name[("Inbound messages", "count")][3]) == current.inbound
    assert _number(by_name[("Inbound messages", "count")][4]) == previous.inbound
    median = current.speed.first_response.median / 60
    assert _number(by_name[("First response: median (calendar time)", "min")][3]) == round(
        median, 2
    )
    assert _number(by_name[("In-channel resolution rate", "%")][3]) == round(
        current.outcomes.in_channel_rate, 2
    )
    # Backlog is a figure of now: no previous period, no change.
    assert by_name[("Open conversations now", "count")][4:] == ["", ""]


@pytest.mark.django_db
def test_series_distribution_backlog_and_agents_match_the_metrics(login, world):
    stories(world, 6)
    client = login(world.admin)
    range_ = DateRange.last(7)

    header, *rows = _rows(client.get("/reports/export/series.csv?days=7&grain=day"))
    points = series(user=world.admin, range_=range_, grain="day")
    assert len(rows) == len(points) == 7
    assert [int(r[1]) for r in rows] == [p.inbound for p in points]
    assert "Inbound on Channel A" in header

    _, *rows = _rows(client.get("/reports/export/distribution.csv?days=7"))
    expected = response_distribution(user=world.admin, range_=range_)
    assert [(r[0], int(r[1]), int(r[2])) for r in rows] == expected

    _, *rows = _rows(client.get("/reports/export/backlog.csv"))
    assert [(r[0], int(r[1]), int(r[2])) for r in rows] == backlog_by_age(user=world.admin)

    _, *rows = _rows(client.get("/reports/export/agents.csv?days=7"))
    assert [r[0] for r in rows] == [a.name for a in agents(user=world.admin, range_=range_)]


@pytest.mark.django_db
def test_channels_teams_and_targets_exports(login, world):
    stories(world, 4)
    KpiTarget.objects.create(metric=Metric.REOPEN_RATE, value=5, period=Period.WEEK, note="-1")
    client = login(world.manager)
    _, *rows = _rows(client.get("/reports/export/channels.csv"))
    assert [r[0] for r in rows] == ["Channel A"]  # the manager's channels only
    assert (
        int(rows[0][1])
        == summary(
            user=world.manager,
            range_=DateRange.last(30),
            filters=Filters(channel=world.channel_a.pk),
        ).inbound
    )
    _, *rows = _rows(client.get("/reports/export/teams.csv"))
    assert [r[0] for r in rows] == ["Team A", "Team B"]
    header, *rows = _rows(client.get("/reports/export/targets.csv"))
    assert header[0] == "Metric" and rows[0][0] == "Reopen rate (%)"
    assert rows[0][-1] == "'-1"


@pytest.mark.django_db
def test_conversation_and_response_facts_are_streamed_row_by_row(login, world):
    stories(world, 6)
    client = login(world.admin)
    response = client.get("/reports/export/conversations.csv?days=30")
    # The facts are read while the response is written, in chunks, not held in a list.
    assert isinstance(response, StreamingHttpResponse)
    content = iter(response.streaming_content)
    with CaptureQueriesContext(connection) as reading:
        start = [next(content), next(content)]  # the byte order mark and the header
    assert not reading.captured_queries
    with CaptureQueriesContext(connection) as reading:
        text = b"".join([*start, *content]).decode("utf-8")
    assert any("kpis_conversationfact" in q["sql"] for q in reading.captured_queries)
    header, *rows = list(csv.reader(io.StringIO(text[1:])))
    assert header[:3] == ["Conversation", "Channel", "Platform"]
    range_ = DateRange.last(30)
    facts = ConversationFact.objects.filter(day__gte=range_.start, day__lte=range_.end)
    assert sorted(int(r[0]) for r in rows) == sorted(facts.values_list("pk", flat=True))

    header, *rows = _rows(client.get("/reports/export/responses.csv?days=30"))
    assert header[:2] == ["Conversation", "Channel"]
    assert len(rows) == ResponseFact.objects.count()
    assert {r[header.index("First response")] for r in rows} <= {"yes", "no"}
    assert AuditEntry.objects.filter(action="report.exported").count() == 2

    # Filters apply to the facts too.
    _, *rows = _rows(client.get(f"/reports/export/conversations.csv?channel={world.channel_b.pk}"))
    assert {r[1] for r in rows} == {"Channel B"}


@pytest.mark.django_db
def test_a_manager_exports_only_their_channels_facts(login, world):
    stories(world, 6)
    _, *rows = _rows(login(world.manager).get("/reports/export/conversations.csv"))
    assert rows and {r[1] for r in rows} == {"Channel A"}


@pytest.mark.django_db
def test_text_that_a_spreadsheet_would_run_is_quoted(login, world):
    world.channel_a.name = '=HYPERLINK("http://evil")'
    world.channel_a.save(update_fields=["name"])
    world.team_a.name = "@SUM(A1)"
    world.team_a.save(update_fields=["name"])
    conversation_story(world.channel_a, world.agent_a, key="evil")
    facts_refresh()
    client = login(world.admin)
    _, *rows = _rows(client.get("/reports/export/conversations.csv"))
    channels = {r[1] for r in rows}
    assert '\'=HYPERLINK("http://evil")' in channels
    assert not any(c.startswith("=") for c in channels)
    assert "'@SUM(A1)" in {r[3] for r in rows}
    _, *rows = _rows(client.get("/reports/export/channels.csv"))
    assert rows[0][0].startswith("'=")
    header, *rows = _rows(client.get("/reports/export/series.csv"))
    assert not any(h.startswith(("=", "+", "-", "@")) for h in header)


def test_csv_cells():
    assert csv_cell("=1+2") == "'=1+2"
    assert csv_cell("+44") == "'+44"
    assert csv_cell("-x") == "'-x"
    assert csv_cell("@a") == "'@a"
    assert csv_cell("plain") == "plain"
    assert csv_cell(-3) == -3  # numbers are numbers, not formulas
    assert csv_cell(1.23456) == 1.23
    assert csv_cell(None) == ""
    assert csv_cell(True) == "yes"
    assert csv_cell(date(2025, 3, 1)) == "2025-03-01"


@pytest.mark.django_db
def test_an_unknown_report_is_not_found(login, world):
    assert login(world.admin).get("/reports/export/secrets.csv").status_code == 404
