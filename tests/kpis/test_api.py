"""KPIs over the API: the same figures as the reports, with a token, for managers and admins."""

from datetime import date

import pytest
from rest_framework.test import APIClient

from governance.api_tokens import api_token_create
from governance.models import Role
from kpis.metrics import summary
from kpis.models import KpiTarget, Metric, Period
from tests.factories import UserFactory
from tests.kpis.conftest import WEEK

pytestmark = pytest.mark.django_db

WEEK_QUERY = {"range": "custom", "start": "2026-01-09", "end": "2026-01-15"}


def client_for(user) -> APIClient:
    _, key = api_token_create(user=user, name="BI export")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def test_the_summary_is_the_reports_figures(history):
    manager = history["manager"]
    response = client_for(manager).get("/api/v1/kpis/summary/", WEEK_QUERY)
    assert response.status_code == 200
    current = response.json()["current"]
    expected = summary(user=manager, range_=WEEK)
    assert current["range"] == {"start": "2026-01-09", "end": "2026-01-15"}
    assert current["new_conversations"] == expected.new_conversations == 4
    assert current["speed"]["first_response"]["median"] == pytest.approx(18600)
    assert current["speed"]["resolution_business"]["median"] == pytest.approx((5400 + 43200) / 2)
    assert current["outcomes"]["in_channel_rate"] == 50
    assert current["outcomes"]["by_department"] == [{"name": "Billing", "count": 1}]
    assert current["first_response_sla"] == 50
    assert current["loyalty"]["returning_30"] == 1
    assert response.json()["previous"]["range"] == {"start": "2026-01-02", "end": "2026-01-08"}


def test_filters_series_agents_backlog_and_targets(history):
    client = client_for(history["manager"])
    on_x = client.get("/api/v1/kpis/summary/", {**WEEK_QUERY, "channel": history["x"].pk})
    assert on_x.json()["current"]["new_conversations"] == 3

    days = client.get("/api/v1/kpis/series/", {**WEEK_QUERY, "grain": "day"}).json()
    assert [p["new_conversations"] for p in days] == [1, 0, 0, 0, 1, 2, 0]

    agents = {r["name"]: r for r in client.get("/api/v1/kpis/agents/", WEEK_QUERY).json()}
    assert agents["Alice"]["first_response_median"] == 1200
    assert agents["Bob"]["sla_compliance"] == 50

    backlog = client.get("/api/v1/kpis/backlog/").json()
    assert sum(row["open"] for row in backlog) == 2

    KpiTarget.objects.create(
        metric=Metric.IN_CHANNEL_RESOLUTION,
        value=70,
        period=Period.WEEK,
        valid_from=date(2026, 1, 1),
    )
    [target] = client.get("/api/v1/kpis/targets/").json()
    assert target["metric"] == "in_channel_resolution"
    assert target["scope"] == "All channels"
    # The history is in January: this week has nothing resolved to measure.
    assert (target["value"], target["status"]) == (None, "no_data")


def test_bad_ranges_are_field_errors(history):
    client = client_for(history["manager"])
    response = client.get(
        "/api/v1/kpis/summary/", {"range": "custom", "start": "2026-01-15", "end": "2026-01-09"}
    )
    assert response.status_code == 400
    assert "start date must be on or before" in response.content.decode()
    other = client.get("/api/v1/kpis/summary/", {"channel": 999999})
    assert other.status_code == 400


@pytest.mark.parametrize("role, status", [(Role.AGENT, 403), (Role.ADMIN, 200)])
def test_kpis_are_for_managers_and_admins(history, role, status):
    user = UserFactory(role=role)
    for path in ("summary", "series", "agents", "backlog", "targets"):
        assert client_for(user).get(f"/api/v1/kpis/{path}/").status_code == status, path
    assert APIClient().get("/api/v1/kpis/summary/").status_code == 401
