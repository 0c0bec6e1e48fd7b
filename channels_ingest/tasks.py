"""Celery tasks: thin wrappers that take ids and call a service."""

import random

from celery import Task, shared_task

from channels_ingest.connectors.base import TransientError
from channels_ingest.services import (
    SendLater,
    channel_poll,
    channels_due_claim,
    lost_sends,
    message_fail,
    message_send,
    stalled_sends_fail,
)
from channels_ingest.webhooks import stale_deliveries, webhook_process


@shared_task
def poll_due_channels() -> int:
    """Beat tick: enqueue a poll for every channel whose interval has elapsed."""
    claimed = channels_due_claim()
    for channel_id in claimed:
        poll_channel.delay(channel_id)
    return len(claimed)


@shared_task(
    acks_late=True,
    autoretry_for=(TransientError,),
    retry_backoff=5,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=5,
)
def poll_channel(channel_id: int) -> None:
    channel_poll(channel_id=channel_id)


@shared_task(bind=True, acks_late=True, max_retries=8)
def send_message(self: Task, message_id: int) -> None:
    try:
        message_send(message_id=message_id)
    except SendLater as exc:
        if self.request.retries >= (self.max_retries or 0):
            message_fail(message_id=message_id, reason=f"Not sent after several tries: {exc}")
            return
        # Exponential backoff with jitter, or the platform's own reset time.
        delay = exc.delay if exc.delay is not None else 5 * 2**self.request.retries
        raise self.retry(countdown=max(1.0, delay) + random.uniform(0, 3)) from exc


@shared_task(acks_late=True)
def send_messages(message_ids: list[int]) -> int:
    """Enqueue a send for each of these messages (a batch of automatic acknowledgements);
    a send enqueued twice by a redelivery is harmless, as the send claims its message."""
    for message_id in message_ids:
        send_message.delay(message_id)
    return len(message_ids)


@shared_task
def fail_stalled_sends() -> int:
    """Beat: sends whose worker died mid-way fail visibly instead of staying "sending", and
    replies whose task was lost are enqueued again."""
    for message_id in lost_sends():
        send_message.delay(message_id)
    return stalled_sends_fail()


@shared_task(acks_late=True)
def process_webhook(delivery_id: int) -> None:
    webhook_process(delivery_id=delivery_id)


@shared_task
def requeue_stale_webhooks() -> int:
    """Beat: deliveries whose task was lost (a broker restart) are enqueued again."""
    stale = stale_deliveries()
    for delivery_id in stale:
        process_webhook.delay(delivery_id)
    return len(stale)
