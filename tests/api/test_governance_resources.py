"""Governance settings through the API (admins): which teams see and reply on each channel,
with the same checks and audit entries as in the Django admin."""

import pytest

from governance.models import (
    AuditEntry,
    ChannelAccess,
)

pytestmark = pytest.mark.django_db

NOT_ADMINS = {"manager": 403, "agent_a": 403, "agent_b": 403, "anonymous": 401}


def _entries(action: str, *, after: int = 0) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(action=action, pk__gt=after).order_by("pk"))


def _last_entry() -> int:
    return AuditEntry.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


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
