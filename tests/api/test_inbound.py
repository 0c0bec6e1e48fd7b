"""The inbound API channel: systems of the company post messages into the pipeline."""

import json

import pytest
from rest_framework.test import APIClient

from channels_ingest.models import DeadLetter, DeadLetterStatus
from channels_ingest.services import dead_letter_retry
from conversations.models import Conversation, Message
from tests.factories import ChannelFactory

pytestmark = pytest.mark.django_db

KEY = "inbound-key-0123456789"


@pytest.fixture(autouse=True)
def _run_queued_tasks(django_capture_on_commit_callbacks):
    """Processing is enqueued on commit; here it runs when the request's work commits."""
    global _capture
    _capture = django_capture_on_commit_callbacks


_capture = None


@pytest.fixture
def channel(world):
    return ChannelFactory(
        platform="api", name="Community", credentials={"inbound_key": KEY}, settings={}
    )


def _post(channel, body, key=KEY, **extra):
    client = APIClient()
    if key:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    with _capture(execute=True):
        return client.post(f"/api/v1/inbound/{channel.pk}/messages/", body, format="json", **extra)


MESSAGE = {
    "external_id": "comment-1",
    "body": "The export button does nothing",
    "author": {"id": "user-17", "handle": "jo", "name": "Jo Park", "email": "jo@example.com"},
    "kind": "comment",
    "thread": "topic-12",
}


def test_a_posted_message_lands_in_a_conversation(channel):
    response = _post(channel, MESSAGE)
    assert response.status_code == 202, response.json()
    assert response.json()["accepted"] == 1 and response.json()["rejected"] == []
    message = Message.objects.get(channel=channel, external_id="comment-1")
    assert message.body == "The export button does nothing"
    assert message.conversation.contact.email == "jo@example.com"


def test_posting_the_same_message_again_stores_it_once(channel):
    for _ in range(3):
        assert _post(channel, {"messages": [MESSAGE]}).status_code == 202
    assert Message.objects.filter(channel=channel).count() == 1
    assert Conversation.objects.filter(channel=channel).count() == 1


def test_unreadable_messages_become_dead_letters_and_the_rest_go_through(channel):
    response = _post(channel, {"messages": [MESSAGE, {"external_id": "x"}, "nonsense"]})
    assert response.status_code == 202
    assert response.json()["accepted"] == 1 and len(response.json()["rejected"]) == 2
    assert Message.objects.filter(channel=channel).count() == 1
    letters = DeadLetter.objects.filter(channel=channel)
    assert letters.count() == 2 and all("#" in letter.error for letter in letters)


def test_an_unreadable_message_once_corrected_is_stored_by_the_retry_of_its_letter(channel):
    without_body = {"external_id": "comment-2", "author": {"id": "user-18"}}
    _post(channel, {"messages": [MESSAGE, without_body]})
    letter = DeadLetter.objects.get(channel=channel)
    assert letter.context == {"reader": "message"}

    letter = dead_letter_retry(letter=letter)
    assert letter.status == DeadLetterStatus.NEW
    assert letter.error == "Retry failed: body is required and must be text."

    DeadLetter.objects.filter(pk=letter.pk).update(raw=json.dumps(without_body | {"body": "Hi"}))
    letter.refresh_from_db()
    assert dead_letter_retry(letter=letter).status == DeadLetterStatus.RETRIED
    dead_letter_retry(letter=letter)
    assert Message.objects.filter(channel=channel, external_id="comment-2").count() == 1


def test_a_body_that_is_not_json_is_kept_as_a_dead_letter(channel):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {KEY}")
    with _capture(execute=True):
        response = client.post(
            f"/api/v1/inbound/{channel.pk}/messages/", "not json{", content_type="application/json"
        )
    assert response.status_code == 400 and response.json()["code"] == "invalid"
    assert DeadLetter.objects.get(channel=channel).raw == "not json{"


def test_the_channel_key_is_required(channel, world):
    assert _post(channel, MESSAGE, key="").status_code == 401
    assert _post(channel, MESSAGE, key="wrong").status_code == 401
    # A user's API token is not the channel's key.
    from governance.api_tokens import api_token_create

    _, user_key = api_token_create(user=world.admin, name="x")
    assert _post(channel, MESSAGE, key=user_key).status_code == 401
    # Other platforms' channels have no inbound endpoint.
    assert _post(world.channel_a, MESSAGE).status_code == 404
    assert not Message.objects.filter(channel=channel).exists()


def test_a_channel_without_a_key_refuses_everything(channel):
    channel.credentials = {}
    channel.save()
    assert _post(channel, MESSAGE, key="anything").status_code == 401


def test_replies_on_an_api_channel_are_sent_by_storing_them(channel, world, api):
    from governance.models import ChannelAccess

    ChannelAccess.objects.create(channel=channel, team=world.team_a)
    _post(channel, MESSAGE)
    conversation = Conversation.objects.get(channel=channel)
    with _capture(execute=True):
        reply = api("agent_a").post(
            f"/api/v1/conversations/{conversation.pk}/messages/",
            {"body": "Fixed now"},
            format="json",
        )
    assert reply.status_code == 201, reply.json()
    sent = Message.objects.get(pk=reply.json()["message"]["id"])
    assert sent.delivery_status == "sent" and sent.external_id == f"api-out-{sent.pk}"
