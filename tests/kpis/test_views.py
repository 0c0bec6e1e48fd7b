"""The report pages: who may open them, what they show, bad input, and a fixed query count."""

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.utils import timezone

from channels_ingest.pipeline import ingest
from conversations.models import Conversation, Status
from conversations.services import conversation_reply_create, conversation_status_set
from governance.models import AuditEntry
from kpis.facts import facts_refresh
from kpis.metrics import DateRange, Filters, summary
from kpis.models import KpiTarget, Metric, Period
from kpis.targets import format_value
from tests.factories import post

PAGES = ["/reports/", "/reports/channels/", "/reports/teams/", "/reports/agents/"]
TARGET_PAGES = ["/reports/targets/", "/reports/targets/new/"]
REPORTS = {"admin": 200, "manager": 200, "agent_a": 403, "agent_b": 403}


def conversation_story(
    channel,
    agent,
    *,
    key: str,
    days_ago: int = 1,
    reply_minutes: float | None = 10,
    resolve_minutes: float | None = 60,
    body: str = "Where is my order?",
) -> Conversation:
    """A customer writes on the channel; an agent replies and resolves, as asked."""
    start = timezone.now() - timedelta(days=days_ago, hours=2)
    ingest(channel=channel, posts=[post(key, author=f"author-{key}", body=body, at=start)])
    conversation = Conversation.objects.get(messages__external_id=key)
    if reply_minutes is not None:
        conversation_reply_create(
            conversation=conversation,
            author=agent,
            body="We are on it.",
            at=start + timedelta(minutes=reply_minutes),
        )
    if resolve_minutes is not None:
        conversation_status_set(
            conversation=conversation,
            status=Status.RESOLVED,
            actor=agent,
            at=start + timedelta(minutes=resolve_minutes),
        )
    return conversation


def stories(world, n: int, *, prefix: str = "s") -> None:
    for i in range(n):
        conversation_story(
            world.channel_a if i % 2 == 0 else world.channel_b,
            world.agent_a if i % 2 == 0 else world.agent_b,
            key=f"{prefix}-{i}",
            days_ago=1 + i % 5,
            reply_minutes=5 + i,
            resolve_minutes=None if i % 3 == 0 else 90 + i,
        )
    facts_refresh()


@pytest.mark.django_db
@pytest.mark.parametrize("persona", REPORTS)
def test_report_pages_are_for_managers_and_admins(login, world, persona):
    client = login(world.persona(persona))
    for url in [*PAGES, *TARGET_PAGES, "/reports/export/summary.csv"]:
        assert client.get(url).status_code == REPORTS[persona], url


@pytest.mark.django_db
def test_agents_cannot_see_the_agent_comparison(login, world):
    stories(world, 2)
    response = login(world.agent_a).get("/reports/agents/")
    assert response.status_code == 403
    assert login(world.agent_a).get("/reports/export/agents.csv").status_code == 403
    assert "bob" not in response.content.decode()


@pytest.mark.django_db
def test_anonymous_visitors_are_sent_to_the_login(client, world):
    for url in [*PAGES, *TARGET_PAGES, "/reports/export/conversations.csv"]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/accounts/login/")


@pytest.mark.django_db
def test_the_dashboard_shows_the_figures_of_the_metrics(login, world):
    stories(world, 6)
    response = login(world.admin).get("/reports/?days=30")
    assert response.status_code == 200
    content = response.content.decode()
    figures = summary(user=world.admin, range_=DateRange.last(30))
    assert figures.inbound == 6 + 2  # with the first messages of the two conversations of `world`
    headline = {c.label: c for c in response.context["headline"]}
    assert headline["Inbound messages"].value == format_value(Metric.INBOUND, figures.inbound)
    assert headline["Median first response"].value == format_value(
        Metric.FIRST_RESPONSE_MEDIAN, figures.value(Metric.FIRST_RESPONSE_MEDIAN)
    )
    # The previous period had nothing: counts went up, which is better.
    assert headline["New conversations"].trend == "better"
    assert headline["Open conversations"].snapshot
    for chart in ("volume", "channels", "first-response", "distribution", "sentiment", "backlog"):
        assert f'data-chart="{chart}"' in content
    assert 'id="report-data"' in content
    assert content.count("Show as a table") == 6
    assert "chart.umd.js" in content and "js/reports.js" in content
    data = response.context["chart_data"]
    assert sum(data["volume"]["inbound"]) == figures.inbound
    assert sum(sum(c["inbound"]) for c in data["channels"]) == figures.inbound


@pytest.mark.django_db
def test_a_manager_sees_only_their_teams_channels(login, world):
    stories(world, 6)
    response = login(world.manager).get("/reports/")
    data = response.context["chart_data"]
    assert [c["name"] for c in data["channels"]] == ["Channel A"]
    options = response.context["form"].fields["channel"].queryset
    assert list(options) == [world.channel_a]
    # Channel B is not a choice for them: asking for it is refused, not answered.
    refused = login(world.manager).get(f"/reports/?channel={world.channel_b.pk}")
    assert refused.status_code == 400
    assert "Select a valid choice" in refused.content.decode()


@pytest.mark.django_db
def test_filters_narrow_the_figures(login, world):
    stories(world, 6)
    client = login(world.admin)
    whole = client.get("/reports/").context["summary"]
    by_channel = client.get(f"/reports/?channel={world.channel_a.pk}").context["summary"]
    assert by_channel.inbound == 3 + 1 < whole.inbound  # with conversation_a's first message
    by_agent = client.get(f"/reports/?agent={world.agent_b.pk}&grain=week")
    assert by_agent.status_code == 200
    assert by_agent.context["form"].filters == Filters(agent=world.agent_b.pk)
    assert "Filtered by" in by_agent.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("start=2025-03-10&end=2025-03-01", "The start date must be on or before the end date."),
        ("start=2024-01-01&end=2025-06-30", "at most 400 days"),
        ("range=custom&start=2025-03-01", "needs both a start and an end date"),
        ("start=yesterday&end=2025-03-01", "Enter a valid date."),
        ("range=forever", "Select a valid choice"),
        ("grain=hour", "Select a valid choice"),
        ("priority=9", "Select a valid choice"),
        ("team=abc", "Select a valid choice"),
    ],
)
def test_bad_input_is_explained_not_a_server_error(login, world, query, message):
    response = login(world.manager).get(f"/reports/?{query}")
    assert response.status_code == 400
    assert message in response.content.decode()
    export = login(world.manager).get(f"/reports/export/summary.csv?{query}")
    assert export.status_code == 400


@pytest.mark.django_db
def test_a_custom_range_and_its_previous_period(login, world):
    response = login(world.manager).get("/reports/?start=2025-03-01&end=2025-03-31")
    assert response.status_code == 200
    assert response.context["range"] == DateRange(
        timezone.datetime(2025, 3, 1).date(), timezone.datetime(2025, 3, 31).date()
    )
    assert response.context["previous_range"].end == timezone.datetime(2025, 2, 28).date()
    assert response.context["form"].bucket == "day"
    assert "Mar 1, 2025" in response.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("preset", ["7", "30", "90", "this_month", "last_month", "this_quarter"])
def test_every_preset_renders(login, world, preset):
    response = login(world.manager).get(f"/reports/?range={preset}")
    assert response.status_code == 200
    current = [label for label, _, chosen in response.context["range_links"] if chosen]
    assert len(current) == 1


@pytest.mark.django_db
def test_the_dashboard_reads_a_fixed_number_of_queries(login, world, django_assert_max_num_queries):
    KpiTarget.objects.create(metric=Metric.FIRST_RESPONSE_MEDIAN, value=30, period=Period.MONTH)
    KpiTarget.objects.create(
        metric=Metric.INBOUND, value=100, period=Period.WEEK, channel=world.channel_a
    )
    client = login(world.manager)
    stories(world, 6, prefix="few")
    client.get("/reports/")  # sessions and roles settle
    cache.clear()  # figures are cached until facts change: measure them computed
    # Each target in force reads its period and the one before. Counted figures come from the
    # day counts; on PostgreSQL a computation that sorts also sets its sort memory (a
    # transaction and SET LOCAL).
    limit = 50 if connection.vendor == "postgresql" else 40
    with django_assert_max_num_queries(limit) as few:
        assert client.get("/reports/?range=90&grain=week").status_code == 200
    # Five times the data on the same days: the same queries (a few are skipped when a
    # period has nothing to count, so both sets have something on each day).
    stories(world, 30, prefix="many")
    cache.clear()
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert client.get("/reports/?range=90&grain=week").status_code == 200


@pytest.mark.django_db
def test_per_channel_and_team_pages_link_to_the_filtered_dashboard(login, world):
    stories(world, 4)
    client = login(world.admin)
    channels = client.get("/reports/channels/?days=7")
    assert channels.status_code == 200
    labels = [row[0] for row in channels.context["rows"]]
    assert labels == ["Channel A", "Channel B"]
    assert f"/reports/?range=7&amp;channel={world.channel_a.pk}" in channels.content.decode()
    teams = client.get("/reports/teams/")
    assert [row[0] for row in teams.context["rows"]] == ["Team A", "Team B"]
    a = teams.context["rows"][0][2]
    assert (
        a.inbound
        == summary(
            user=world.admin, range_=DateRange.last(30), filters=Filters(team=world.team_a.pk)
        ).inbound
    )
    # A manager sees their own channels only.
    assert [r[0] for r in login(world.manager).get("/reports/channels/").context["rows"]] == [
        "Channel A"
    ]


@pytest.mark.django_db
def test_a_page_does_not_name_the_filter_it_splits_its_figures_by(login, world):
    stories(world, 2)
    client = login(world.admin)
    a, team = world.channel_a.pk, world.team_a.pk
    channels = client.get(f"/reports/channels/?channel={a}&team={team}")
    assert channels.context["filter_labels"] == ["Team A"]
    teams = client.get(f"/reports/teams/?channel={a}&team={team}")
    assert teams.context["filter_labels"] == ["Channel A"]
    agents = client.get(f"/reports/agents/?agent={world.agent_a.pk}&channel={a}")
    assert agents.context["filter_labels"] == ["Channel A"]
    overview = client.get(f"/reports/?agent={world.agent_a.pk}&channel={a}")
    assert len(overview.context["filter_labels"]) == 2


@pytest.mark.django_db
def test_the_agents_page_compares_agents(login, world):
    stories(world, 6)
    response = login(world.manager).get("/reports/agents/")
    assert response.status_code == 200
    names = [row[0].name for row in response.context["rows"]]
    # The manager sees channel A only, where bob works.
    assert names == [world.agent_a.get_full_name() or "bob"]
    assert "SLA compliance" in response.content.decode()


@pytest.mark.django_db
def test_managers_set_change_and_delete_targets_with_an_audit_record(login, world):
    client = login(world.manager)
    form = {
        "metric": Metric.FIRST_RESPONSE_MEDIAN,
        "value": "15",
        "period": Period.MONTH,
        "channel": world.channel_a.pk,
        "platform": "",
        "team": "",
        "at_risk_margin": "10",
        "valid_from": "2025-01-01",
        "note": "=HYPERLINK(1)",
    }
    response = client.post("/reports/targets/new/", form)
    assert response.status_code == 302
    target = KpiTarget.objects.get()
    assert (target.value, target.channel, target.created_by) == (15, world.channel_a, world.manager)
    assert AuditEntry.objects.filter(action="kpi_target.created", actor=world.manager).exists()

    listing = client.get("/reports/targets/").content.decode()
    assert "Median first response" in listing and "Channel A" in listing

    response = client.post(f"/reports/targets/{target.pk}/", {**form, "value": "20"})
    assert response.status_code == 302
    target.refresh_from_db()
    assert target.value == 20
    updated = AuditEntry.objects.get(action="kpi_target.updated")
    assert (updated.before, updated.after) == ({"value": 15.0}, {"value": 20.0})

    assert client.get(f"/reports/targets/{target.pk}/delete/").status_code == 200
    assert client.post(f"/reports/targets/{target.pk}/delete/").status_code == 302
    assert not KpiTarget.objects.exists()
    assert AuditEntry.objects.filter(action="kpi_target.deleted").exists()


@pytest.mark.django_db
def test_a_bad_target_is_refused_with_a_message(login, world):
    client = login(world.manager)
    response = client.post(
        "/reports/targets/new/",
        {
            "metric": Metric.FIRST_RESPONSE_SLA,
            "value": "120",
            "period": Period.WEEK,
            "at_risk_margin": "10",
            "valid_from": "2025-01-01",
        },
    )
    assert response.status_code == 400
    assert "at most 100" in response.content.decode()
    assert not KpiTarget.objects.exists()
    # Channels the manager does not see are not a choice.
    response = client.post(
        "/reports/targets/new/",
        {
            "metric": Metric.INBOUND,
            "value": "10",
            "period": Period.WEEK,
            "channel": world.channel_b.pk,
            "at_risk_margin": "10",
            "valid_from": "2025-01-01",
        },
    )
    assert response.status_code == 400
    assert not KpiTarget.objects.exists()


@pytest.mark.django_db
def test_agents_cannot_change_targets(login, world):
    target = KpiTarget.objects.create(metric=Metric.INBOUND, value=10)
    client = login(world.agent_a)
    assert client.post(f"/reports/targets/{target.pk}/delete/").status_code == 403
    assert client.post("/reports/targets/new/", {"metric": "inbound"}).status_code == 403
    assert KpiTarget.objects.count() == 1


@pytest.mark.django_db
def test_the_dashboard_shows_targets_with_their_status(login, world):
    stories(world, 4)
    KpiTarget.objects.create(
        metric=Metric.FIRST_RESPONSE_MEDIAN, value=1000, period=Period.MONTH, note="Fast"
    )
    response = login(world.admin).get("/reports/")
    (status, scope), *_ = response.context["targets"]
    assert scope == "All channels"
    content = response.content.decode()
    assert f"target-{status.status}" in content
    assert "Manage targets" in content


@pytest.mark.django_db
def test_a_manager_neither_sees_nor_changes_targets_of_another_teams_channel(login, world):
    theirs = KpiTarget.objects.create(metric=Metric.INBOUND, value=10, channel=world.channel_b)
    ours = KpiTarget.objects.create(metric=Metric.INBOUND, value=20, channel=world.channel_a)
    client = login(world.manager)
    rows = client.get("/reports/targets/").context["rows"]
    assert [target for target, _, _ in rows] == [ours]
    assert client.get(f"/reports/targets/{theirs.pk}/").status_code == 404
    assert client.post(f"/reports/targets/{theirs.pk}/delete/").status_code == 404
    assert KpiTarget.objects.filter(pk=theirs.pk).exists()
    assert login(world.admin).get(f"/reports/targets/{theirs.pk}/").status_code == 200


def test_a_change_too_small_to_show_is_no_change():
    from kpis.views import compare

    class Figures:
        def __init__(self, minutes: float) -> None:
            self.minutes = minutes

        def value(self, metric: str) -> float:
            return self.minutes

    same = compare(Metric.FIRST_RESPONSE_MEDIAN, Figures(37.71), Figures(37.69))
    assert (same.trend, same.arrow) == ("same", "=")
    faster = compare(Metric.FIRST_RESPONSE_MEDIAN, Figures(30), Figures(37.7))
    assert (faster.trend, faster.arrow, faster.change) == ("better", "▼", "-7.7 min")
    more = compare(Metric.REOPEN_RATE, Figures(25.9), Figures(18.2))
    assert (more.trend, more.arrow, more.change) == ("worse", "▲", "+7.7 pts")
