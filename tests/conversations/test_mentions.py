import pytest

from conversations.models import EventKind, Notification

pytestmark = pytest.mark.django_db


def note(client, world, body: str):
    return client.post(f"/inbox/{world.conversation_a.pk}/note/", {"body": body})


def test_a_mentioned_colleague_is_notified_and_sees_it_in_the_navigation(login, world):
    note(
        login(world.agent_a), world, f"@{world.manager.username.upper()} can you approve a refund?"
    )
    notification = Notification.objects.get()
    assert notification.recipient == world.manager
    assert "can you approve a refund" in notification.text
    client = login(world.manager)
    page = client.get("/inbox/").content.decode()
    assert 'aria-label="1 unread"' in page
    response = client.get(f"/inbox/mentions/{notification.pk}/")
    assert response["Location"] == f"/inbox/{world.conversation_a.pk}/"
    notification.refresh_from_db()
    assert notification.read_at is not None
    assert "unread" not in client.get("/inbox/").content.decode()


def test_colleagues_who_cannot_see_the_conversation_are_not_notified(login, world):
    note(login(world.agent_a), world, f"@{world.agent_b.username} @nobody-here have a look")
    assert not Notification.objects.exists()


def test_the_author_and_email_addresses_are_not_mentions(login, world):
    note(
        login(world.agent_a),
        world,
        f"@{world.agent_a.username} mail me at x@{world.manager.username}.com",
    )
    assert not Notification.objects.exists()


def test_the_timeline_records_who_was_mentioned(login, world):
    note(login(world.agent_a), world, f"ping @{world.manager.username}.")
    event = world.conversation_a.events.get(kind=EventKind.NOTE_ADDED)
    assert event.data["mentioned"] == [world.manager.username]


def test_a_notification_belongs_to_its_recipient(login, world):
    note(login(world.agent_a), world, f"@{world.manager.username} hi")
    notification = Notification.objects.get()
    assert login(world.agent_a).get(f"/inbox/mentions/{notification.pk}/").status_code == 404
    assert login(world.manager).get("/inbox/mentions/").context["notifications"] == [notification]


def test_a_username_with_an_at_sign_is_mentioned_whole(login, world):
    from tests.factories import TeamMembershipFactory, UserFactory

    carol = UserFactory(username="carol", role="agent")
    carol_corp = UserFactory(username="carol@corp.example", role="agent")
    for user in (carol, carol_corp):
        TeamMembershipFactory(team=world.team_a, user=user)
    note(login(world.agent_a), world, "thanks @carol@corp.example!")
    assert [n.recipient for n in Notification.objects.all()] == [carol_corp]


def test_an_ambiguous_case_insensitive_name_notifies_nobody(login, world):
    from tests.factories import TeamMembershipFactory, UserFactory

    for name in ("Dana", "dana"):
        TeamMembershipFactory(team=world.team_a, user=UserFactory(username=name, role="agent"))
    note(login(world.agent_a), world, "@DANA please")
    assert not Notification.objects.exists()
    note(login(world.agent_a), world, "@Dana please")
    assert [n.recipient.username for n in Notification.objects.all()] == ["Dana"]
