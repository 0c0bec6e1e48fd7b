"""Governance settings through the API (admins): publishing policies and their test box,
retention policies and runs, and which teams see and reply on each channel. The same checks
and audit entries as the Publishing policies and Retention pages and the Django admin."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from conversations.models import Message
from governance.models import (
    AuditEntry,
    ChannelAccess,
    PublishingPolicy,
    RetentionPolicy,
    RetentionRun,
)
from governance.retention import REMOVED
from tests.factories import ChannelFactory, MessageFactory, UserFactory

pytestmark = pytest.mark.django_db

NOT_ADMINS = {"manager": 403, "agent_a": 403, "agent_b": 403, "anonymous": 401}


def _entries(action: str, *, after: int = 0) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(action=action, pk__gt=after).order_by("pk"))


def _last_entry() -> int:
    return AuditEntry.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


# --- Publishing policies ---------------------------------------------------------------------


def test_a_channel_policy_is_made_changed_and_deleted_with_audit(world, api):
    client = api("admin")
    made = client.post(
        "/api/v1/publishing-policies/",
        {
            "channel": world.channel_a.pk,
            "approval": "agents",
            "approvers": [world.manager.pk],
            "banned_terms": [" refund ", "Refund", "free   stuff", ""],
            "banned_patterns": [r"order\s*#\d+", " "],
            "quiet_hours_start": "7:00",
            "quiet_hours_end": "22:00",
            "links_action": "approve",
        },
        format="json",
    )
    assert made.status_code == 201, made.json()
    policy = made.json()
    assert policy == {
        "id": policy["id"],
        "channel": world.channel_a.pk,
        "approval": "agents",
        "approvers": [world.manager.pk],
        "second_level": False,
        "approval_expiry_hours": 24,
        "banned_terms": ["refund", "free stuff"],
        "banned_patterns": [r"order\s*#\d+"],
        "banned_action": "block",
        "pii_action": "block",
        "links_action": "approve",
        "quiet_hours_start": "07:00",
        "quiet_hours_end": "22:00",
        "quiet_hours_action": "approve",
        "updated_at": policy["updated_at"],
    }
    [created] = _entries("policy.created")
    assert (created.actor_id, created.object_id) == (world.admin.pk, str(policy["id"]))
    assert created.after["approvers"] == ["mona"] and created.after["banned_terms"] == [
        "refund",
        "free stuff",
    ]

    url = f"/api/v1/publishing-policies/{policy['id']}/"
    changed = client.patch(url, {"pii_action": "approve"}, format="json")
    assert changed.status_code == 200
    assert changed.json()["pii_action"] == "approve"
    assert changed.json()["approvers"] == [world.manager.pk]  # left out, kept
    [updated] = _entries("policy.updated")
    assert updated.before["pii_action"] == "block" and updated.after["pii_action"] == "approve"
    assert updated.actor_id == world.admin.pk

    assert client.delete(url).status_code == 204
    assert not PublishingPolicy.objects.exists()
    [deleted] = _entries("policy.deleted")
    assert (deleted.actor_id, deleted.object_repr) == (
        world.admin.pk,
        "Publishing policy of Channel A",
    )
    assert client.get(url).status_code == 404


@pytest.mark.parametrize(
    "payload, errors",
    [
        ({"banned_patterns": ["("]}, {"banned_patterns": ["Line 1, “(”, is not a valid pattern"]}),
        (
            {"quiet_hours_start": "22:00"},
            {"quiet_hours_end": ["Give both the start and the end of quiet hours, or neither."]},
        ),
        (
            {"quiet_hours_start": "25:00", "quiet_hours_end": "07:00"},
            {"quiet_hours_start": ["Write a time of day as HH:MM, such as 22:00."]},
        ),
        (
            {"quiet_hours_start": "7:00", "quiet_hours_end": "07:00"},
            {"quiet_hours_end": ["Quiet hours need an end different from start."]},
        ),
        (
            {"approval_expiry_hours": 721},
            {"approval_expiry_hours": ["Ensure this value is less than or equal to 720."]},
        ),
        ({"approval": "sometimes"}, {"approval": ['"sometimes" is not a valid choice.']}),
    ],
)
def test_a_policy_is_checked_as_on_the_policy_form(world, api, payload, errors):
    response = api("admin").post(
        "/api/v1/publishing-policies/", {"channel": world.channel_a.pk, **payload}, format="json"
    )
    assert response.status_code == 400
    fields = response.json()["fields"]
    assert set(fields) == set(errors)
    for name, messages in errors.items():
        assert fields[name][0].startswith(messages[0])
    assert not PublishingPolicy.objects.exists()
    assert not _entries("policy.created")


def test_a_policy_names_its_channel_once_and_active_approvers(world, api):
    client = api("admin")
    url = "/api/v1/publishing-policies/"
    assert client.post(url, {"approval": "agents"}, format="json").json()["fields"] == {
        "channel": ["Choose a channel; the default policy is publishing-policies/default/."]
    }
    gone = UserFactory(is_active=False)
    refused = client.post(
        url, {"channel": world.channel_a.pk, "approvers": [gone.pk]}, format="json"
    )
    assert refused.json()["fields"] == {
        "approvers": [f'Invalid pk "{gone.pk}" - object does not exist.']
    }
    made = client.post(url, {"channel": world.channel_a.pk}, format="json").json()
    again = client.post(url, {"channel": world.channel_a.pk}, format="json")
    assert again.json()["fields"] == {
        "channel": ["Channel A has a policy of its own already: change that one."]
    }
    moved = client.patch(f"{url}{made['id']}/", {"channel": world.channel_b.pk}, format="json")
    assert moved.json()["fields"] == {"channel": ["A policy's channel is fixed."]}
    assert PublishingPolicy.objects.get().channel_id == world.channel_a.pk


def test_the_default_policy_replaces_the_built_in_one_when_first_saved(world, api):
    client = api("admin")
    builtin = client.get("/api/v1/publishing-policies/default/").json()
    assert (builtin["id"], builtin["channel"], builtin["approvers"]) == (None, None, [])
    assert (builtin["pii_action"], builtin["banned_terms"]) == ("block", [])

    saved = client.patch(
        "/api/v1/publishing-policies/default/", {"banned_terms": ["refund"]}, format="json"
    )
    assert saved.status_code == 200, saved.json()
    default = PublishingPolicy.objects.get(channel__isnull=True)
    assert saved.json()["id"] == default.pk and default.banned_terms == ["refund"]
    assert [e.object_id for e in _entries("policy.created")] == [str(default.pk)]

    again = client.patch(
        "/api/v1/publishing-policies/default/", {"links_action": "block"}, format="json"
    )
    assert again.json()["id"] == default.pk and again.json()["banned_terms"] == ["refund"]
    assert PublishingPolicy.objects.count() == 1
    [updated] = _entries("policy.updated")
    assert updated.after == {**updated.after, "links_action": "block"}
    fixed = client.patch(
        "/api/v1/publishing-policies/default/", {"channel": world.channel_a.pk}, format="json"
    )
    assert fixed.status_code == 400
    listed = client.get("/api/v1/publishing-policies/").json()["results"]
    assert [row["id"] for row in listed] == [default.pk]


def _test(client, **payload):
    return client.post("/api/v1/publishing-policies/test/", payload, format="json")


def test_a_text_is_tested_as_the_sender_would_send_it(world, api):
    default = PublishingPolicy.objects.create(banned_terms=["refund"])
    client = api("admin")
    before = AuditEntry.objects.count()
    refused = _test(client, channel=world.channel_a.pk, sender=world.agent_a.pk, text="A refund?")
    assert refused.status_code == 200
    assert refused.json() == {
        "verdict": "refused",
        "reasons": ["It contains the banned term “refund”."],
        "policy": default.pk,
    }
    other_team = _test(client, channel=world.channel_a.pk, sender=world.agent_b.pk, text="Hi")
    assert other_team.json()["reasons"] == ["Your teams may not reply on Channel A."]
    automatic = _test(client, channel=world.channel_a.pk, text="Hello there")
    assert automatic.json() == {"verdict": "allowed", "reasons": [], "policy": default.pk}
    held = PublishingPolicy.objects.create(channel=world.channel_b, approval="agents")
    agent = _test(client, channel=world.channel_b.pk, sender=world.agent_b.pk, text="Hi")
    assert agent.json() == {
        "verdict": "needs_approval",
        "reasons": ["On Channel B, agents' replies are sent after approval."],
        "policy": held.pk,
    }
    world.channel_a.mode = "listen"
    world.channel_a.save()
    listening = _test(client, channel=world.channel_a.pk, text="Hello")
    assert listening.json()["reasons"] == ["Channel A is listen-only: nothing can be sent from it."]
    assert AuditEntry.objects.count() == before


def test_a_test_needs_a_channel_and_a_text(world, api):
    response = _test(api("admin"), channel=999999, text="")
    assert response.status_code == 400
    assert response.json()["fields"] == {
        "channel": ['Invalid pk "999999" - object does not exist.'],
        "text": ["This field may not be blank."],
    }


@pytest.mark.parametrize("persona", NOT_ADMINS)
def test_only_admins_set_or_test_publishing_policies(world, api, persona):
    client = api(persona)
    expected = NOT_ADMINS[persona]
    made = client.post(
        "/api/v1/publishing-policies/", {"channel": world.channel_a.pk}, format="json"
    )
    default = client.patch(
        "/api/v1/publishing-policies/default/", {"banned_terms": ["x"]}, format="json"
    )
    tested = _test(client, channel=world.channel_a.pk, text="Hello")
    assert (made.status_code, default.status_code, tested.status_code) == (expected,) * 3
    assert not PublishingPolicy.objects.exists()


# --- Retention -----------------------------------------------------------------------------------


def test_retention_policies_are_set_changed_and_removed_with_audit(world, api):
    client = api("admin")
    url = "/api/v1/retention-policies/"
    default = client.post(
        url, {"channel": None, "keep_days": 400, "action": "anonymise"}, format="json"
    )
    assert default.status_code == 201, default.json()
    assert default.json() == {
        "id": default.json()["id"],
        "channel": None,
        "keep_days": 400,
        "action": "anonymise",
        "is_active": True,
        "updated_at": default.json()["updated_at"],
    }
    own = client.post(
        url, {"channel": world.channel_a.pk, "keep_days": 120, "action": "delete"}, format="json"
    )
    assert own.status_code == 201
    created = _entries("retention_policy.created")
    assert [(e.actor_id, e.after) for e in created] == [
        (world.admin.pk, {"keep_days": 400, "action": "anonymise", "is_active": True}),
        (world.admin.pk, {"keep_days": 120, "action": "delete", "is_active": True}),
    ]
    twice = client.post(
        url, {"channel": world.channel_a.pk, "keep_days": 200, "action": "delete"}, format="json"
    )
    assert twice.json()["fields"] == {
        "channel": ["Channel A has its own retention already: change that one."]
    }

    channel_url = f"{url}{own.json()['id']}/"
    too_soon = client.patch(channel_url, {"keep_days": 30}, format="json")
    assert too_soon.status_code == 400
    assert too_soon.json()["fields"]["keep_days"][0].startswith(
        "Deleting needs at least 90 days: the reports count messages that far back."
    )
    changed = client.patch(channel_url, {"keep_days": 180, "is_active": False}, format="json")
    assert changed.status_code == 200
    assert (changed.json()["keep_days"], changed.json()["is_active"]) == (180, False)
    [updated] = _entries("retention_policy.updated")
    assert (updated.before["keep_days"], updated.after["keep_days"]) == (120, 180)
    assert client.patch(channel_url, {"channel": world.channel_b.pk}, format="json").json()[
        "fields"
    ] == {"channel": ["A policy's channel is fixed."]}

    assert client.delete(channel_url).status_code == 204
    assert list(RetentionPolicy.objects.values_list("channel", flat=True)) == [None]
    [removed] = _entries("retention_policy.deleted")
    assert (removed.actor_id, removed.before["keep_days"]) == (world.admin.pk, 180)
    kept = client.delete(f"{url}{default.json()['id']}/")
    assert kept.status_code == 409 and RetentionPolicy.objects.count() == 1


def test_retention_runs_now_and_its_runs_are_listed(world, api):
    RetentionPolicy.objects.create(keep_days=30, action="anonymise")
    old = MessageFactory(conversation=world.conversation_a, body="My card is 4111")
    Message.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=60))
    client = api("admin")
    ran = client.post("/api/v1/retention-runs/run/")
    assert ran.status_code == 200
    by_channel = {row["channel"]: row for row in ran.json()}
    assert set(by_channel) == {world.channel_a.pk, world.channel_b.pk}
    assert (
        by_channel[world.channel_a.pk]["messages"],
        by_channel[world.channel_b.pk]["messages"],
    ) == (
        1,
        0,
    )
    assert by_channel[world.channel_a.pk]["action"] == "anonymise"
    old.refresh_from_db()
    assert old.body == REMOVED
    applied = _entries("retention.applied")
    assert [(e.actor_id, e.data["channel"], e.data["messages"]) for e in applied] == [
        (world.admin.pk, world.channel_a.pk, 1),
        (world.admin.pk, world.channel_b.pk, 0),
    ]
    listed = client.get("/api/v1/retention-runs/").json()["results"]
    assert {row["id"] for row in listed} == {row["id"] for row in ran.json()}
    assert client.post("/api/v1/retention-runs/run/").json()[0]["messages"] == 0


@pytest.mark.parametrize("persona", NOT_ADMINS)
def test_only_admins_set_or_run_retention(world, api, persona):
    client = api(persona)
    expected = NOT_ADMINS[persona]
    made = client.post(
        "/api/v1/retention-policies/",
        {"channel": None, "keep_days": 30, "action": "anonymise"},
        format="json",
    )
    ran = client.post("/api/v1/retention-runs/run/")
    listed = client.get("/api/v1/retention-runs/")
    assert (made.status_code, ran.status_code, listed.status_code) == (expected,) * 3
    assert not RetentionPolicy.objects.exists() and not RetentionRun.objects.exists()


# --- Channel access --------------------------------------------------------------------------


def _access(response) -> list[tuple[int, bool]]:
    return sorted((row["team"], row["can_reply"]) for row in response.json()["access"])


def test_channel_access_is_set_with_the_channel_and_audited(world, api):
    mark = _last_entry()
    client = api("admin")
    url = f"/api/v1/channels/{world.channel_a.pk}/"
    changed = client.patch(
        url,
        {"access": [{"team": world.team_a.pk, "can_reply": False}, {"team": world.team_b.pk}]},
        format="json",
    )
    assert changed.status_code == 200, changed.json()
    assert _access(changed) == [(world.team_a.pk, False), (world.team_b.pk, True)]
    [updated] = _entries("channel_access.updated", after=mark)
    assert (updated.actor_id, updated.before, updated.after) == (
        world.admin.pk,
        {"can_reply": True},
        {"can_reply": False},
    )
    [created] = _entries("channel_access.created", after=mark)
    assert (created.actor_id, created.after["team"]) == (world.admin.pk, world.team_b.pk)

    # Team B now sees channel A's conversation; team A sees it but may not reply.
    conversation = f"/api/v1/conversations/{world.conversation_a.pk}/"
    assert api("agent_b").get(conversation).status_code == 200
    reply = api("agent_a").post(f"{conversation}messages/", {"body": "Hello"}, format="json")
    assert reply.status_code == 422
    assert reply.json()["fields"]["body"] == ["Your teams may not reply on Channel A."]

    # Left out, access stays; an empty list leaves the channel to admins.
    assert _access(client.patch(url, {"name": "Channel A2"}, format="json")) == _access(changed)
    emptied = client.patch(url, {"access": []}, format="json")
    assert emptied.json()["access"] == []
    deleted = _entries("channel_access.deleted", after=mark)
    assert [(e.actor_id, e.before["team"]) for e in deleted] == [
        (world.admin.pk, world.team_a.pk),
        (world.admin.pk, world.team_b.pk),
    ]
    assert api("agent_a").get(conversation).status_code == 404


def test_channel_access_is_checked(world, api):
    mark = _last_entry()
    client = api("admin")
    url = f"/api/v1/channels/{world.channel_a.pk}/"
    twice = client.patch(
        url,
        {"access": [{"team": world.team_b.pk}, {"team": world.team_b.pk, "can_reply": False}]},
        format="json",
    )
    assert twice.status_code == 400
    assert twice.json()["fields"] == {"access": ["Name each team once: Team B more than once."]}
    unknown = client.patch(url, {"access": [{"team": 999999}]}, format="json")
    assert unknown.json()["fields"] == {
        "access": ['0: team: Invalid pk "999999" - object does not exist.']
    }
    rows = ChannelAccess.objects.filter(channel=world.channel_a)
    assert [(r.team_id, r.can_reply) for r in rows] == [(world.team_a.pk, True)]
    assert not AuditEntry.objects.filter(action__startswith="channel", pk__gt=mark).exists()


def test_a_new_channel_is_made_with_its_teams(world, api):
    mark = _last_entry()
    made = api("admin").post(
        "/api/v1/channels/",
        {
            "platform": "demo",
            "name": "Support",
            "mode": "listen",
            "access": [{"team": world.team_b.pk, "can_reply": False}],
        },
        format="json",
    )
    assert made.status_code == 201, made.json()
    assert _access(made) == [(world.team_b.pk, False)]
    [created] = _entries("channel_access.created", after=mark)
    assert (created.actor_id, created.after["channel"]) == (world.admin.pk, made.json()["id"])
    assert [e.actor_id for e in _entries("channel.created", after=mark)] == [world.admin.pk]


@pytest.mark.parametrize("persona", NOT_ADMINS)
def test_only_admins_change_channel_access(world, api, persona):
    response = api(persona).patch(
        f"/api/v1/channels/{world.channel_a.pk}/",
        {"access": [{"team": world.team_b.pk}]},
        format="json",
    )
    assert response.status_code == NOT_ADMINS[persona]
    rows = ChannelAccess.objects.filter(channel=world.channel_a)
    assert [r.team_id for r in rows] == [world.team_a.pk]


def test_the_policy_lists_cost_the_same_queries_however_long(world, api):
    client = api("admin")
    client.get("/api/v1/me/")  # a token's first use is recorded

    def queries() -> list[int]:
        counts = []
        for url in ("/api/v1/publishing-policies/", "/api/v1/retention-policies/"):
            with CaptureQueriesContext(connection) as captured:
                assert client.get(url).status_code == 200
            counts.append(len(captured.captured_queries))
        return counts

    def add(n):
        for _ in range(n):
            channel = ChannelFactory()
            policy = PublishingPolicy.objects.create(channel=channel)
            policy.approvers.set([world.manager, world.admin])
            RetentionPolicy.objects.create(channel=channel)

    add(1)
    few = queries()
    add(12)
    assert queries() == few
