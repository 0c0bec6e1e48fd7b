"""Receiving webhooks: handshakes, signature checks, and turning stored deliveries into posts.

The platform-specific checks live in the connector modules; this module only wires them to
HTTP and to the pipeline. A body is verified over its raw bytes before anything is stored.
"""

import json
import logging
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from channels_ingest.connectors import connector_for
from channels_ingest.models import (
    ChannelAccount,
    DeadLetter,
    WebhookDelivery,
    WebhookStatus,
)
from channels_ingest.pipeline import IngestResult, ingest

logger = logging.getLogger(__name__)

# A delivery still pending after this long lost its task (broker restart): enqueue it again.
STALE_AFTER = timedelta(minutes=2)


def webhook_receive(*, channel: ChannelAccount, body: bytes) -> WebhookDelivery:
    """Store a verified body; its processing is enqueued once the row is committed."""
    from channels_ingest.tasks import process_webhook

    delivery = WebhookDelivery.objects.create(
        channel=channel, body=body.decode("utf-8", errors="replace")
    )
    transaction.on_commit(lambda: process_webhook.delay(delivery.pk))
    return delivery


def webhook_process(*, delivery_id: int) -> IngestResult | None:
    """Parse a stored delivery and ingest its posts. Safe to run twice: a processed delivery
    is skipped, and the pipeline stores each post once anyway."""
    delivery = (
        WebhookDelivery.objects.select_related("channel")
        .filter(pk=delivery_id, status=WebhookStatus.PENDING)
        .first()
    )
    if delivery is None:
        return None
    channel = delivery.channel
    try:
        payload = json.loads(delivery.body)
    except json.JSONDecodeError as exc:
        with transaction.atomic():
            DeadLetter.objects.create(
                channel=channel, source="webhook", raw=delivery.body, error=f"Not JSON: {exc}"
            )
            _finish(delivery, WebhookStatus.FAILED, error=f"Not JSON: {exc}")
        return None
    parsed = connector_for(channel.platform).parse(channel, payload)
    with transaction.atomic():
        result = ingest(
            channel=channel, posts=parsed.posts, rejected=parsed.rejected, source="webhook"
        )
        _finish(delivery, WebhookStatus.PROCESSED, posts=result.stored)
    return result


def _finish(delivery: WebhookDelivery, status: str, *, posts: int = 0, error: str = "") -> None:
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status=status, processed_at=timezone.now(), posts=posts, error=error
    )


def stale_deliveries() -> list[int]:
    return list(
        WebhookDelivery.objects.filter(
            status=WebhookStatus.PENDING, received_at__lt=timezone.now() - STALE_AFTER
        ).values_list("pk", flat=True)[:500]
    )
