"""Admins' resources: channels (secrets write-only), teams and users, routing rules, SLA
policies, the audit log (read-only) and dead letters."""

import json

import pytest
from django.contrib.auth.models import User

from channels_ingest.models import ChannelAccount, DeadLetter, DeadLetterStatus
from conversations.models import RoutingRule, SlaPolicy
from governance.models import AuditEntry, TeamMembership
from tests.factories import RoutingRuleFactory, SlaPolicyFactory

pytestmark = pytest.mark.django_db


def test_channel_secrets_are_accepted_but_never_returned(world, api):
    client = api("admin")
    made = client.post(
        "/api/v1/channels/",
        {
            "platform": "x",
            "name": "Acme on X",
            "handle": "@acme",
            "credentials": {"bearer_token": "AAAA-very-secret-token-1234"},
        },
        format="json",
    )
    assert made.status_code == 201, made.json()
    assert "AAAA-very-secret" not in json.dumps(made.json())
    assert made.json()["credentials_set"]["bearer_token"] == "set, ends …1234"
    channel = ChannelAccount.objects.get(pk=made.json()["id"])
    assert channel.credentials["bearer_token"] == "AAAA-very-secret-token-1234"
    listed = client.get("/api/v1/channels/").content.decode()
    assert "very-secret" not in listed
    # A patch without credentials keeps them; another platform's secret is refused.
    client.patch(f"/api/v1/channels/{channel.pk}/", {"handle": "@acme2"}, format="json")
    channel.refresh_from_db()
    assert channel.credentials["bearer_token"] == "AAAA-very-secret-token-1234"
    wrong = client.patch(
        f"/api/v1/channels/{channel.pk}/", {"credentials": {"app_secret": "x"}}, format="json"
    )
    assert wrong.status_code == 400
    audit = AuditEntry.objects.filter(object_type="channels_ingest.channelaccount")
    assert audit.exists() and "very-secret" not in json.dumps(
        list(audit.values("before", "after", "data"))
    )


def test_teams_and_users_are_managed_by_admins(world, api):
    client = api("admin")
    team = client.post(
        "/api/v1/teams/",
        {"name": "Tier 2", "slug": "tier-2", "members": [world.agent_b.pk]},
        format="json",
    )
    assert team.status_code == 201, team.json()
    assert TeamMembership.objects.filter(team_id=team.json()["id"], user=world.agent_b).exists()
    user = client.post(
        "/api/v1/users/",
        {
            "username": "dora",
            "email": "dora@example.com",
            "role": "manager",
            "teams": [team.json()["id"]],
        },
        format="json",
    )
    assert user.status_code == 201, user.json()
    assert user.json()["role"] == "manager"
    dora = User.objects.get(username="dora")
    assert not dora.has_usable_password()
    demoted = client.patch(
        f"/api/v1/users/{dora.pk}/", {"role": "agent", "is_active": False}, format="json"
    )
    assert demoted.json()["role"] == "agent" and demoted.json()["is_active"] is False
    assert (
        AuditEntry.objects.filter(action__startswith="user.").exists()
        or AuditEntry.objects.filter(object_type="auth.user").exists()
    )
    assert client.delete(f"/api/v1/users/{dora.pk}/").status_code == 405


def test_routing_rules_are_checked_when_saved(world, api):
    client = api("admin")
    bad = client.post(
        "/api/v1/routing-rules/",
        {"name": "Bad", "events": ["message_received"], "actions": [{"type": "nope"}]},
        format="json",
    )
    assert bad.status_code == 400
    good = client.post(
        "/api/v1/routing-rules/",
        {
            "name": "Refunds are urgent",
            "events": ["message_received"],
            "conditions": [{"field": "text", "op": "contains_any", "value": ["refund"]}],
            "actions": [{"type": "set_priority", "value": 4}],
        },
        format="json",
    )
    assert good.status_code == 201, good.json()
    rule = RoutingRule.objects.get(pk=good.json()["id"])
    assert rule.created_by == world.admin
    assert AuditEntry.objects.filter(object_type="conversations.routingrule").exists()
    assert client.delete(f"/api/v1/routing-rules/{rule.pk}/").status_code == 204


def test_sla_policies_need_a_target(world, api):
    client = api("admin")
    assert client.post("/api/v1/sla-policies/", {"name": "Empty"}, format="json").status_code == 400
    made = client.post(
        "/api/v1/sla-policies/", {"name": "Gold", "first_response_minutes": 30}, format="json"
    )
    assert made.status_code == 201
    assert SlaPolicy.objects.get(name="Gold").first_response_minutes == 30
    policy = SlaPolicyFactory()
    cleared = client.patch(
        f"/api/v1/sla-policies/{policy.pk}/", {"first_response_minutes": None}, format="json"
    )
    assert cleared.status_code == 400


def test_the_audit_log_is_read_only_and_filtered(world, api):
    client = api("admin")
    client.post("/api/v1/tokens/", {"name": "x"}, format="json")
    entries = client.get("/api/v1/audit-log/?action=api_token").json()["results"]
    assert entries and all(e["action"].startswith("api_token") for e in entries)
    pk = entries[0]["id"]
    for method in ("put", "patch", "delete"):
        assert getattr(client, method)(f"/api/v1/audit-log/{pk}/").status_code == 405
    assert client.post("/api/v1/audit-log/", {}).status_code == 405


def test_dead_letters_are_retried_and_discarded(world, api):
    client = api("admin")
    letter = DeadLetter.objects.create(
        channel=world.channel_a, source="webhook", raw="not json", error="Not JSON"
    )
    retried = client.post(f"/api/v1/dead-letters/{letter.pk}/retry/")
    assert retried.status_code == 200 and retried.json()["status"] == "new"
    assert retried.json()["error"].startswith("Retry failed")
    discarded = client.post(f"/api/v1/dead-letters/{letter.pk}/discard/")
    assert discarded.json()["status"] == DeadLetterStatus.DISCARDED
    assert client.post(f"/api/v1/dead-letters/{letter.pk}/retry/").status_code == 409
    listed = client.get("/api/v1/dead-letters/?status=discarded").json()["results"]
    assert [row["id"] for row in listed] == [letter.pk]


def test_a_rule_placed_by_the_api_records_the_rules_it_moved_down(api, world):
    """Placing a rule moves the ones after it: each such change is in the audit log."""
    first, second = RoutingRuleFactory(name="First"), RoutingRuleFactory(name="Second")
    RoutingRule.objects.filter(pk=first.pk).update(position=0)
    RoutingRule.objects.filter(pk=second.pk).update(position=1)
    client = api("admin")
    response = client.patch(f"/api/v1/routing-rules/{second.pk}/", {"position": 0}, format="json")
    assert response.status_code == 200, response.content
    [passed] = AuditEntry.objects.filter(action="routing_rule.updated", object_id=str(first.pk))
    assert (passed.before, passed.after, passed.actor) == (
        {"position": 0},
        {"position": 1},
        world.admin,
    )
    response = client.post(f"/api/v1/routing-rules/{second.pk}/move/", {"direction": "down"})
    assert response.status_code == 200, response.content
    assert [
        (e.object_id, e.before, e.after)
        for e in AuditEntry.objects.filter(action="routing_rule.updated").order_by("pk")
    ][-2:] == [
        (str(first.pk), {"position": 1}, {"position": 0}),
        (str(second.pk), {"position": 0}, {"position": 1}),
    ]
