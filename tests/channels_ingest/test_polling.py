from datetime import UTC, datetime, timedelta

import pytest
from celery.exceptions import Retry
from django.utils import timezone

from channels_ingest import services
from channels_ingest.connectors.base import (
    ConnectorError,
    RateLimited,
    ReauthRequired,
    TransientError,
)
from channels_ingest.connectors.demo import DemoConnector
from channels_ingest.models import ChannelAccount, ChannelHealth
from channels_ingest.tasks import poll_due_channels, send_message
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


def _queued_reply():
    conversation = ConversationFactory()
    return conversation_reply_create(conversation=conversation, author=UserFactory(), body="Hi")


def test_a_send_that_never_reached_the_platform_is_queued_again_for_a_retry(monkeypatch):
    reply = _queued_reply()

    def refused(self, channel, message):
        raise TransientError("503 Service Unavailable", request_sent=False)

    monkeypatch.setattr(DemoConnector, "send", refused)
    with pytest.raises(services.SendLater):
        services.message_send(message_id=reply.pk)
    assert Message.objects.get(pk=reply.pk).delivery_status == DeliveryStatus.QUEUED


def test_a_send_that_may_have_been_posted_fails_visibly_instead_of_repeating(monkeypatch):
    reply = _queued_reply()
    calls = []

    def timed_out(self, channel, message):
        calls.append(1)
        raise TransientError("X did not answer in time while replying.")

    monkeypatch.setattr(DemoConnector, "send", timed_out)
    failed = services.message_send(message_id=reply.pk)
    assert failed.delivery_status == DeliveryStatus.FAILED
    assert "check on the platform before sending again" in failed.error
    assert services.message_send(message_id=reply.pk) is None
    assert calls == [1]


def test_a_rate_limited_send_waits_for_the_reset(monkeypatch):
    reply = _queued_reply()
    reset = timezone.now() + timedelta(minutes=7)

    def limited(self, channel, message):
        raise RateLimited("429", reset_at=reset)

    monkeypatch.setattr(DemoConnector, "send", limited)
    with pytest.raises(services.SendLater) as raised:
        services.message_send(message_id=reply.pk)
    assert 410 < raised.value.delay <= 420
    assert Message.objects.get(pk=reply.pk).delivery_status == DeliveryStatus.QUEUED


def test_a_refused_send_is_retried_and_fails_with_the_reason_after_the_last_try(monkeypatch):
    reply = _queued_reply()

    def refused(self, channel, message):
        raise TransientError("503 Service Unavailable", request_sent=False)

    monkeypatch.setattr(DemoConnector, "send", refused)
    with pytest.raises(Retry):
        send_message.apply(args=(reply.pk,), retries=0)
    assert Message.objects.get(pk=reply.pk).delivery_status == DeliveryStatus.QUEUED

    send_message.apply(args=(reply.pk,), retries=send_message.max_retries)
    failed = Message.objects.get(pk=reply.pk)
    assert failed.delivery_status == DeliveryStatus.FAILED
    assert "Not sent after several tries: 503 Service Unavailable" in failed.error


def test_a_send_whose_worker_died_fails_after_the_deadline():
    reply = _queued_reply()
    Message.objects.filter(pk=reply.pk).update(
        delivery_status=DeliveryStatus.SENDING,
        send_started_at=timezone.now() - services.SEND_DEADLINE - timedelta(seconds=1),
    )
    fresh = _queued_reply()
    Message.objects.filter(pk=fresh.pk).update(
        delivery_status=DeliveryStatus.SENDING, send_started_at=timezone.now()
    )
    assert services.stalled_sends_fail() == 1
    assert Message.objects.get(pk=reply.pk).delivery_status == DeliveryStatus.FAILED
    assert Message.objects.get(pk=fresh.pk).delivery_status == DeliveryStatus.SENDING


def test_a_channel_error_never_stores_a_credential(monkeypatch):
    channel = ChannelFactory(credentials={"page_access_token": "EAAB-very-secret-token"})

    def leaky(self, channel, cursor):
        raise ConnectorError(
            "Max retries exceeded with url: /v3.1/123/feed?fields=id"
            "&access_token=EAAB-very-secret-token&since=1 (token EAAB-very-secret-token)"
        )

    monkeypatch.setattr(DemoConnector, "fetch", leaky)
    services.channel_poll(channel_id=channel.pk)
    channel.refresh_from_db()
    assert "EAAB-very-secret-token" not in channel.last_error
    assert "access_token=[redacted]" in channel.last_error


def test_a_poll_that_outlived_its_lease_does_not_move_the_cursor(monkeypatch):
    channel = ChannelFactory(cursor={"seq": 5})
    real_fetch = DemoConnector.fetch

    def slow_fetch(self, ch, cursor):
        result = real_fetch(self, ch, cursor)
        # Meanwhile the lease expired and another worker took the channel.
        ChannelAccount.objects.filter(pk=ch.pk).update(
            poll_lease_token="someone-else", poll_lease_until=timezone.now() + timedelta(minutes=5)
        )
        return FetchResult([post("late-1")], {**result.cursor, "seq": 99})

    monkeypatch.setattr(DemoConnector, "fetch", slow_fetch)
    assert services.channel_poll(channel_id=channel.pk) is None
    channel.refresh_from_db()
    assert channel.cursor == {"seq": 5}
    assert channel.poll_lease_token == "someone-else"  # not released by the late worker
    assert not Message.objects.filter(external_id="late-1").exists()


def test_a_message_queued_before_the_channel_became_listen_only_is_not_sent(world):
    from channels_ingest.models import ChannelMode
    from channels_ingest.services import message_send
    from conversations.models import DeliveryStatus, Direction, Message, MessageKind

    conversation = world.conversation_a
    message = Message.objects.create(
        conversation=conversation,
        channel=conversation.channel,
        direction=Direction.OUT,
        kind=MessageKind.REPLY,
        body="On our way",
        delivery_status=DeliveryStatus.QUEUED,
    )
    type(world.channel_a).objects.filter(pk=world.channel_a.pk).update(mode=ChannelMode.LISTEN)
    message_send(message_id=message.pk)
    message.refresh_from_db()
    assert message.delivery_status == DeliveryStatus.FAILED
    assert "listen-only" in message.error
