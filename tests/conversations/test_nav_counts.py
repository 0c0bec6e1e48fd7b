"""The unread mentions beside "Mentions" are counted once per SCRM_INBOX_COUNTS_SECONDS and
recounted as soon as they change."""

import pytest
from django.urls import reverse

from conversations import services
from conversations.models import Notification

pytestmark = pytest.mark.django_db


def _unread(client) -> int:
    return client.get("/inbox/").context["unread_notifications"]


def test_the_count_is_kept_between_pages(login, world, settings):
    settings.SCRM_INBOX_COUNTS_SECONDS = 60
    client = login(world.manager)
    assert _unread(client) == 0
    Notification.objects.bulk_create(
        [Notification(recipient=world.manager, conversation=world.conversation_a, text="x")]
    )
    assert _unread(client) == 1
    # Deleted behind the application's back: the kept count does not see it.
    Notification.objects.filter(recipient=world.manager).delete()
    assert _unread(client) == 1
    settings.SCRM_INBOX_COUNTS_SECONDS = 0
    assert _unread(client) == 0


def test_a_mention_shows_at_once_on_the_next_page(login, world, settings):
    settings.SCRM_INBOX_COUNTS_SECONDS = 60
    client = login(world.manager)
    assert _unread(client) == 0
    services.conversation_note_add(
        conversation=world.conversation_a,
        author=world.agent_a,
        body=f"@{world.manager.username} have a look",
    )
    assert _unread(client) == 1
    Notification.objects.create(
        recipient=world.manager, conversation=world.conversation_a, text="Another"
    )
    assert _unread(client) == 2


def test_opening_a_mention_counts_it_read_at_once(login, world, settings):
    settings.SCRM_INBOX_COUNTS_SECONDS = 60
    notification = Notification.objects.create(
        recipient=world.manager, conversation=world.conversation_a, text="Look"
    )
    client = login(world.manager)
    assert _unread(client) == 1
    assert (
        client.get(reverse("conversations:notification_open", args=[notification.pk])).status_code
        == 302
    )
    assert _unread(client) == 0


def test_counts_are_counted_again_when_what_the_user_sees_changes(login, world, settings):
    settings.SCRM_INBOX_COUNTS_SECONDS = 60
    Notification.objects.create(
        recipient=world.agent_a, conversation=world.conversation_a, text="Look"
    )
    client = login(world.agent_a)
    assert client.get("/inbox/updates/").context["counts"]["all"] == 1
    page = client.get("/inbox/").context
    assert page["unread_notifications"] == 1 and page["counts"]["all"] == 1
    world.team_a.channel_access.all().delete()
    page = client.get("/inbox/").context
    # Counted for what the user saw: not shown, and counted again by the poll.
    assert page["unread_notifications"] == 0 and page["counts"] is None
    assert client.get("/inbox/updates/").context["counts"]["all"] == 0
