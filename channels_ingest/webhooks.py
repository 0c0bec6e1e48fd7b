"""Receiving webhooks: handshakes, signature checks, and turning stored deliveries into posts.

The platform-specific checks live in the connector modules; this module only wires them to
HTTP and to the pipeline. A body is verified over its raw bytes before anything is stored.
"""

import json
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone

from channels_ingest.connectors import connector_for, facebook, x
from channels_ingest.models import (
    ChannelAccount,
    DeadLetter,
    WebhookDelivery,
    WebhookStatus,
)
from channels_ingest.pipeline import ingest
from channels_ingest.platforms import Platform

logger = logging.getLogger(__name__)

# A delivery still pending after this long lost its task (broker restart): enqueue it again.
STALE_AFTER = timedelta(minutes=2)
# One still processing after this long lost its worker: it goes back to pending.
ABANDONED_AFTER = timedelta(minutes=10)


def webhook_receive(*, channel: ChannelAccount, body: bytes) -> WebhookDelivery:
    """Store a verified body; its processing is enqueued once the row is committed."""
    from channels_ingest.tasks import process_webhook

    delivery = WebhookDelivery.objects.create(
        channel=channel, body=body.decode("utf-8", errors="replace")
    )
    transaction.on_commit(lambda: process_webhook.delay(delivery.pk))
    return delivery


def webhook_process(*, delivery_id: int) -> int | None:
    """Parse a stored delivery and ingest its posts; returns how many were new. Safe to run
    twice: a processed delivery is skipped, and the pipeline stores each post once anyway."""
    # Claimed by a conditional update: of two tasks for one delivery, one does the work.
    claimed = WebhookDelivery.objects.filter(pk=delivery_id, status=WebhookStatus.PENDING).update(
        status=WebhookStatus.PROCESSING, claimed_at=timezone.now()
    )
    if not claimed:
        return None
    delivery = WebhookDelivery.objects.select_related("channel").get(pk=delivery_id)
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
    stored = 0
    try:
        with transaction.atomic():
            for target, part in webhook_parts(channel, payload):
                parsed = connector_for(target.platform).parse(target, part)
                stored += ingest(
                    channel=target, posts=parsed.posts, rejected=parsed.rejected, source="webhook"
                ).stored
            _finish(delivery, WebhookStatus.PROCESSED, posts=stored)
    except (OperationalError, InterfaceError):
        raise  # the database is unavailable: the sweeper brings the delivery back
    except Exception as exc:
        # Anything else would fail the same way each time: keep the body, do not loop.
        logger.exception("Webhook delivery %s could not be processed", delivery.pk)
        error = f"Could not be processed: {type(exc).__name__}: {exc}"[:2000]
        with transaction.atomic():
            DeadLetter.objects.create(
                channel=channel, source="webhook", raw=delivery.body, error=error
            )
            _finish(delivery, WebhookStatus.FAILED, error=error)
        return None
    return stored


# Which credential signs a platform's webhooks: only channels sharing it may receive a body
# that arrived at another channel's address.
_SIGNING_SECRET: dict[str, str] = {Platform.X: "consumer_secret", Platform.FACEBOOK: "app_secret"}


def webhook_parts(channel: ChannelAccount, payload: Any) -> list[tuple[ChannelAccount, Any]]:
    """Hand each account's part of a body to that account's channel. An app has one callback
    address for all its accounts, so one body may concern several channels."""
    split: dict[str, Callable[[Any], dict[str, Any]]] = {
        Platform.X: x.payloads_by_account,
        Platform.FACEBOOK: facebook.payloads_by_account,
    }
    if channel.platform not in split:
        return [(channel, payload)]
    parts = split[channel.platform](payload)
    if not parts:
        return [(channel, payload)]
    secret_name = _SIGNING_SECRET[channel.platform]
    secret = channel.credentials.get(secret_name)
    siblings = {
        c.external_account_id: c
        for c in ChannelAccount.objects.filter(
            platform=channel.platform, external_account_id__in=parts
        )
        if c.credentials.get(secret_name) == secret
    }
    # A part for no known account stays with the receiving channel, whose parser rejects it
    # into the dead letters rather than dropping it.
    return [(siblings.get(account, channel), part) for account, part in parts.items()]


def _finish(delivery: WebhookDelivery, status: str, *, posts: int = 0, error: str = "") -> None:
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status=status, processed_at=timezone.now(), posts=posts, error=error
    )


def stale_deliveries() -> list[int]:
    """Deliveries whose task was lost, and those whose worker died while processing (put back
    to pending): the ids to enqueue again. A duplicate task finds nothing to claim."""
    now = timezone.now()
    WebhookDelivery.objects.filter(
        status=WebhookStatus.PROCESSING, claimed_at__lt=now - ABANDONED_AFTER
    ).update(status=WebhookStatus.PENDING)
    return list(
        WebhookDelivery.objects.filter(
            status=WebhookStatus.PENDING, received_at__lt=now - STALE_AFTER
        ).values_list("pk", flat=True)[:500]
    )
