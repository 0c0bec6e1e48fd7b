"""The rules' REST API on rules naming something deleted since they were saved."""

import pytest

from conversations.models import RoutingRule
from tests.factories import TeamFactory

pytestmark = pytest.mark.django_db


def _rule_naming_a_deleted_team():
    team = TeamFactory()
    rule = RoutingRule.objects.create(
        name="To billing",
        events=["message_received"],
        conditions=[],
        actions=[{"type": "set_team", "value": team.pk}],
    )
    team.delete()
    return rule


def test_a_rule_naming_a_deleted_team_can_be_switched_off_through_the_api(world, api):
    rule = _rule_naming_a_deleted_team()
    response = api("admin").patch(
        f"/api/v1/routing-rules/{rule.pk}/", {"is_active": False}, format="json"
    )
    assert response.status_code == 200, response.content
    rule.refresh_from_db()
    assert rule.is_active is False


def test_the_page_switches_the_same_rule_off(world, login):
    rule = _rule_naming_a_deleted_team()
    response = login(world.admin).post(f"/routing/rules/{rule.pk}/toggle/", {"active": "0"})
    assert response.status_code == 302
    rule.refresh_from_db()
    assert rule.is_active is False
