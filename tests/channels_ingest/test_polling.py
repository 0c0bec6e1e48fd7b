from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from channels_ingest import services
from channels_ingest.connectors.base import RateLimited, ReauthRequired, TransientError
from channels_ingest.connectors.demo import DemoConnector
from channels_ingest.models import ChannelAccount, ChannelHealth
from channels_ingest.tasks import poll_due_channels
from channels_ingest.types import FetchResult
from conversations.models import DeliveryStatus, EventKind, Message
from conversations.services import conversation_reply_create
from tests.factories import ChannelFactory, ConversationFactory, UserFactory, post

pytestmark = pytest.mark.django_db


def test_a_due_channel_is_claimed_once_per_due_time():
    due = ChannelFactory(next_poll_at=None, poll_interval_seconds=60)
    ChannelFactory(next_poll_at=timezone.now() + timedelta(minutes=5))
    ChannelFactory(is_active=False)
    assert services.channels_due_claim() == [due.pk]
    assert services.channels_due_claim() == []
    due.refresh_from_db()
    assert due.next_poll_at > timezone.now() + timedelta(seconds=50)


def test_channels_needing_reauthentication_are_not_polled():
    ChannelFactory(health=ChannelHealth.NEEDS_REAUTH)
    assert services.channels_due_claim() == []


def test_the_beat_tick_polls_due_channels_through_the_demo_connector():
    channel = ChannelFactory(cursor={"seq": 0, "polls": 3})
    assert poll_due_channels() == 1
    channel.refresh_from_db()
    assert channel.cursor["polls"] == 4
    assert channel.last_polled_at is not None
    assert channel.health == ChannelHealth.OK
    assert channel.poll_lease_until is None


def test_a_channel_leased_by_another_worker_is_not_polled_twice(monkeypatch):
    channel = ChannelFactory(poll_lease_until=timezone.now() + timedelta(minutes=1))
    called = []
    monkeypatch.setattr(DemoConnector, "fetch", lambda *a: called.append(1))
    assert services.channel_poll(channel_id=channel.pk) is None
    assert called == []


def test_a_rate_limited_poll_is_rescheduled_after_the_reset_without_sleeping(monkeypatch):
    channel = ChannelFactory()
    reset = datetime(2030, 1, 1, 12, 15, tzinfo=UTC)

    def limited(self, channel, cursor):
        raise RateLimited("429 Too Many Requests", reset_at=reset)

    monkeypatch.setattr(DemoConnector, "fetch", limited)
    assert services.channel_poll(channel_id=channel.pk) is None
    channel.refresh_from_db()
    assert channel.health == ChannelHealth.RATE_LIMITED
    assert channel.rate_limited_until == reset
    assert channel.next_poll_at == reset
    assert channel.poll_lease_until is None


def test_revoked_credentials_mark_the_channel_for_reauthentication(monkeypatch):
    channel = ChannelFactory()

    def revoked(self, channel, cursor):
        raise ReauthRequired("Error validating access token: session has expired")

    monkeypatch.setattr(DemoConnector, "fetch", revoked)
    services.channel_poll(channel_id=channel.pk)
    channel.refresh_from_db()
    assert channel.health == ChannelHealth.NEEDS_REAUTH
    assert "expired" in channel.last_error


def test_a_transient_failure_propagates_for_retry_and_releases_the_lease(monkeypatch):
    channel = ChannelFactory()

    def flaky(self, channel, cursor):
        raise TransientError("503 Service Unavailable")

    monkeypatch.setattr(DemoConnector, "fetch", flaky)
    with pytest.raises(TransientError):
        services.channel_poll(channel_id=channel.pk)
    channel.refresh_from_db()
    assert channel.poll_lease_until is None
    assert channel.health == ChannelHealth.ERROR


def test_a_successful_poll_clears_an_earlier_error(monkeypatch):
    channel = ChannelFactory(health=ChannelHealth.ERROR, last_error="503")
    monkeypatch.setattr(
        DemoConnector, "fetch", lambda self, ch, cur: FetchResult([post("x1")], {"seq": 1})
    )
    result = services.channel_poll(channel_id=channel.pk)
    assert result is not None and result.stored == 1
    channel = ChannelAccount.objects.get(pk=channel.pk)
    assert (channel.health, channel.last_error) == (ChannelHealth.OK, "")


def test_a_queued_reply_is_sent_once_even_if_the_task_runs_twice():
    conversation = ConversationFactory()
    reply = conversation_reply_create(
        conversation=conversation, author=UserFactory(), body="We are on it!"
    )
    assert reply.delivery_status == DeliveryStatus.QUEUED
    sent = services.message_send(message_id=reply.pk)
    assert sent is not None
    assert sent.delivery_status == DeliveryStatus.SENT
    assert sent.external_id == f"demo-out-{reply.pk}"
    assert services.message_send(message_id=reply.pk) is None
    assert conversation.events.filter(kind=EventKind.MESSAGE_SENT).count() == 1


def test_a_transient_send_failure_leaves_the_reply_queued_for_the_retry(monkeypatch):
    conversation = ConversationFactory()
    reply = conversation_reply_create(conversation=conversation, author=UserFactory(), body="Hi")

    def down(self, channel, message):
        raise TransientError("timeout")

    monkeypatch.setattr(DemoConnector, "send", down)
    with pytest.raises(TransientError):
        services.message_send(message_id=reply.pk)
    assert Message.objects.get(pk=reply.pk).delivery_status == DeliveryStatus.QUEUED
