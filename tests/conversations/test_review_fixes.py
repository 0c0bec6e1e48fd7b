"""Access and robustness rules found in review, each pinned."""

from datetime import timedelta

import pytest
from django.utils import timezone

from channels_ingest.tasks import fail_stalled_sends
from contacts.models import ContactMerge
from contacts.services import contact_merge
from conversations.models import (
    Conversation,
    DeliveryStatus,
    Direction,
    Message,
    MessageKind,
    Notification,
    Status,
)
from governance.models import TeamMembership
from tests.factories import ConversationFactory, MessageFactory

pytestmark = pytest.mark.django_db


def test_a_view_only_agent_cannot_take_a_conversation(login, world):
    world.channel_a.access.update(can_reply=False)
    client = login(world.agent_a)
    response = client.post(f"/inbox/{world.conversation_a.pk}/claim/", follow=True)
    assert "may only view" in response.content.decode()
    client.post("/inbox/bulk/", {"ids": [world.conversation_a.pk], "action": "assign_me"})
    assert Conversation.objects.get(pk=world.conversation_a.pk).assignee is None


def test_mentions_disappear_when_access_to_the_conversation_ends(login, world):
    Notification.objects.create(
        recipient=world.agent_a, conversation=world.conversation_a, text="about Dana"
    )
    client = login(world.agent_a)
    assert 'aria-label="1 unread"' in client.get("/inbox/").content.decode()
    TeamMembership.objects.filter(user=world.agent_a).delete()
    assert client.get("/inbox/mentions/").context["notifications"] == []
    assert "unread" not in client.get("/inbox/").content.decode()


def test_the_team_filter_offers_only_the_agents_teams(login, world):
    teams = list(login(world.agent_a).get("/inbox/").context["teams"])
    assert teams == [(world.team_a.pk, world.team_a.name)]
    assert len(login(world.admin).get("/inbox/").context["teams"]) == 2


def test_a_reply_whose_task_was_lost_is_sent_by_the_sweeper(world):
    lost = MessageFactory(
        conversation=world.conversation_a,
        direction=Direction.OUT,
        kind=MessageKind.REPLY,
        external_id=None,
        delivery_status=DeliveryStatus.QUEUED,
        received_at=timezone.now() - timedelta(minutes=10),
        in_reply_to_external_id="ext-1",
    )
    fresh = MessageFactory(
        conversation=world.conversation_a,
        direction=Direction.OUT,
        kind=MessageKind.REPLY,
        external_id=None,
        delivery_status=DeliveryStatus.QUEUED,
    )
    fail_stalled_sends()
    assert Message.objects.get(pk=lost.pk).delivery_status == DeliveryStatus.SENT
    assert Message.objects.get(pk=fresh.pk).delivery_status == DeliveryStatus.QUEUED


def test_a_hidden_contact_merged_into_a_visible_one_stays_hidden(login, world):
    visible = world.conversation_a.contact
    hidden = world.conversation_b.contact
    contact_merge(merged=hidden, kept=visible, actor=world.admin)
    assert ContactMerge.objects.exists()
    # Agent A never saw the merged contact: no hint that it exists.
    assert login(world.agent_a).get(f"/contacts/{hidden.pk}/").status_code == 404
    # Agent B did (it was on B's channel) and follows it to where it went.
    assert login(world.agent_b).get(f"/contacts/{hidden.pk}/")["Location"] == (
        f"/contacts/{visible.pk}/"
    )


def test_a_search_for_a_bare_at_sign_does_not_match_everyone(login, world):
    ConversationFactory(channel=world.channel_a)
    assert login(world.agent_a).get("/inbox/?q=@").context["page"].rows == []


def test_bulk_cannot_set_a_conversation_back_to_new(login, world):
    Conversation.objects.filter(pk=world.conversation_a.pk).update(status=Status.OPEN)
    login(world.agent_a).post(
        "/inbox/bulk/", {"ids": [world.conversation_a.pk], "action": "status:new"}
    )
    assert Conversation.objects.get(pk=world.conversation_a.pk).status == Status.OPEN
