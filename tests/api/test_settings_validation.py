"""What admins cannot save, through the API and the pages alike: SLA policies that could
never apply or would be at risk from the start, targets too long to compute, weekdays that
do not exist; and a team still used by a department is not deleted."""

import pytest

from conversations.models import Department, SlaPolicy
from governance.models import Team
from tests.factories import (
    BusinessCalendarFactory,
    DepartmentFactory,
    SlaPolicyFactory,
    TeamFactory,
    WebhookEndpointFactory,
)

pytestmark = pytest.mark.django_db


def _sla_page(**extra):
    return {
        "name": "Urgent",
        "priority": "4",
        "channel": "",
        "calendar": "",
        "first_response_amount": "10",
        "first_response_unit": "minutes",
        "next_response_unit": "hours",
        "resolution_unit": "hours",
        "at_risk_minutes": "5",
        "is_active": "on",
        **extra,
    }


def test_a_team_used_by_a_department_is_not_deleted_over_the_api(world, api):
    team = TeamFactory(name="Tier 2")
    DepartmentFactory(name="Second line", team=team)
    response = api("admin").delete(f"/api/v1/teams/{team.pk}/")
    assert response.status_code == 409
    assert "Second line" in response.json()["detail"]
    assert Team.objects.filter(pk=team.pk).exists()


def test_a_second_active_policy_for_the_same_scope_is_refused_over_the_api(world, api):
    client = api("admin")
    first = {"name": "Urgent", "priority": 4, "first_response_minutes": 30}
    assert client.post("/api/v1/sla-policies/", first, format="json").status_code == 201
    second = {"name": "Urgent (new)", "priority": 4, "first_response_minutes": 10}
    response = client.post("/api/v1/sla-policies/", second, format="json")
    assert response.status_code == 400
    assert "“Urgent” already applies" in str(response.json())
    # Switched off, or for another scope, it may be saved.
    assert (
        client.post("/api/v1/sla-policies/", {**second, "is_active": False}, format="json")
    ).status_code == 201
    other = {**second, "name": "Urgent VIP", "vip_only": True}
    assert client.post("/api/v1/sla-policies/", other, format="json").status_code == 201
    # The inactive one cannot be switched on while the first is active.
    inactive = SlaPolicy.objects.get(name="Urgent (new)")
    response = client.patch(
        f"/api/v1/sla-policies/{inactive.pk}/", {"is_active": True}, format="json"
    )
    assert response.status_code == 400


def test_a_second_active_policy_for_the_same_scope_is_refused_on_the_page(world, login):
    kept = SlaPolicyFactory(name="Urgent", priority=4, first_response_minutes=30)
    client = login(world.admin)
    response = client.post("/routing/sla/new/", _sla_page(name="Urgent (new)"))
    assert response.status_code == 200
    assert "already applies to the same priority" in response.content.decode()
    assert list(SlaPolicy.objects.all()) == [kept]
    # Editing the policy itself is no clash with itself.
    edited = client.post(f"/routing/sla/{kept.pk}/", _sla_page(name="Urgent"))
    assert edited.status_code == 302


def test_an_at_risk_margin_as_long_as_a_target_is_refused(world, api, login):
    response = api("admin").post(
        "/api/v1/sla-policies/",
        {"name": "Fast", "first_response_minutes": 10, "at_risk_minutes": 10},
        format="json",
    )
    assert response.status_code == 400
    assert "shorter than the shortest target (10 minutes)" in str(response.json())
    page = login(world.admin).post("/routing/sla/new/", _sla_page(at_risk_minutes="60"))
    assert page.status_code == 200
    assert not SlaPolicy.objects.exists()


def test_an_at_risk_margin_not_given_is_at_most_half_the_shortest_target(world, api):
    client = api("admin")
    fast = {"name": "Fast", "first_response_minutes": 20}
    assert client.post("/api/v1/sla-policies/", fast, format="json").json()["at_risk_minutes"] == 10
    slow = {"name": "Slow", "priority": 1, "resolution_minutes": 24 * 60}
    assert client.post("/api/v1/sla-policies/", slow, format="json").json()["at_risk_minutes"] == 30


def test_a_target_longer_than_a_year_is_refused(world, api, login):
    calendar = BusinessCalendarFactory()
    response = api("admin").post(
        "/api/v1/sla-policies/",
        {"name": "Forever", "first_response_minutes": 2_147_483_647, "calendar": calendar.pk},
        format="json",
    )
    assert response.status_code == 400
    page = login(world.admin).post(
        "/routing/sla/new/",
        _sla_page(resolution_amount="9000", resolution_unit="hours"),
    )
    assert page.status_code == 200
    assert "Resolution: at most 365 days" in page.content.decode()
    assert not SlaPolicy.objects.exists()


def test_an_unknown_weekday_is_refused_not_dropped(world, api):
    response = api("admin").post(
        "/api/v1/business-hours/",
        {
            "name": "Weekend desk",
            "time_zone": "UTC",
            "weekly_hours": {"0": [["09:00", "17:00"]], "7": [["10:00", "14:00"]]},
        },
        format="json",
    )
    assert response.status_code == 400
    assert "Unknown weekday 7" in str(response.json())


def test_a_webhook_department_needs_an_endpoint_that_is_switched_on(world, api, login):
    off = WebhookEndpointFactory(name="Old hook", is_active=False)
    response = api("admin").post(
        "/api/v1/departments/",
        {"name": "Logistics", "delivery": "webhook", "endpoint": off.pk},
        format="json",
    )
    assert response.status_code == 400
    assert "“Old hook” is switched off" in str(response.json())
    page = login(world.admin).post(
        "/routing/departments/new/",
        {"name": "Logistics", "delivery": "webhook", "endpoint": str(off.pk)},
    )
    assert page.status_code == 200
    assert not Department.objects.exists()


def test_an_endpoint_a_department_is_reached_through_is_not_switched_off(world, api, login):
    endpoint = WebhookEndpointFactory(name="Logistics hook")
    DepartmentFactory(name="Logistics", delivery="webhook", team=None, endpoint=endpoint)
    client = api("admin")
    response = client.patch(
        f"/api/v1/webhook-endpoints/{endpoint.pk}/", {"is_active": False}, format="json"
    )
    assert response.status_code == 400
    assert "Escalations to “Logistics” are posted here" in str(response.json())
    page = login(world.admin).post(
        f"/routing/endpoints/{endpoint.pk}/",
        {"name": "Logistics hook", "url": endpoint.url, "events": []},
    )
    assert page.status_code == 200
    endpoint.refresh_from_db()
    assert endpoint.is_active
    # Renamed, still on: saved.
    assert (
        client.patch(
            f"/api/v1/webhook-endpoints/{endpoint.pk}/", {"name": "Hook"}, format="json"
        ).status_code
        == 200
    )


def test_overlapping_intervals_of_a_day_are_refused_and_adjacent_ones_accepted(world, api):
    client = api("admin")

    def hours(monday):
        return {"name": "Office", "time_zone": "Europe/Berlin", "weekly_hours": {"0": monday}}

    overlapping = client.post(
        "/api/v1/business-hours/", hours([["09:00", "17:00"], ["12:00", "13:00"]]), format="json"
    )
    assert overlapping.status_code == 400
    assert "Monday: the two intervals overlap." in str(overlapping.json())
    adjacent = client.post(
        "/api/v1/business-hours/", hours([["09:00", "12:00"], ["12:00", "17:00"]]), format="json"
    )
    assert adjacent.status_code == 201, adjacent.json()


def test_a_policy_saved_before_the_limits_can_still_be_renamed_and_switched_off(world, api):
    policy = SlaPolicyFactory(name="Legacy", first_response_minutes=15, at_risk_minutes=30)
    client = api("admin")
    url = f"/api/v1/sla-policies/{policy.pk}/"
    assert client.patch(url, {"name": "Old"}, format="json").status_code == 200
    assert client.patch(url, {"is_active": False}, format="json").status_code == 200
    # Switched on again, or given new targets, it is checked.
    assert client.patch(url, {"is_active": True}, format="json").status_code == 400
    assert client.patch(url, {"first_response_minutes": 20}, format="json").status_code == 400
    assert client.patch(url, {"at_risk_minutes": 5}, format="json").status_code == 200


def test_a_one_minute_target_without_an_at_risk_margin_is_accepted(world, api):
    response = api("admin").post(
        "/api/v1/sla-policies/", {"name": "Fast", "first_response_minutes": 1}, format="json"
    )
    assert response.status_code == 201, response.json()
    assert response.json()["at_risk_minutes"] == 0
