"""Polling channels and sending outbound messages through their connectors."""

import json
import logging
from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from channels_ingest.connectors import connector_for
from channels_ingest.connectors.base import (
    ConnectorError,
    RateLimited,
    ReauthRequired,
    TransientError,
)
from channels_ingest.models import ChannelAccount, ChannelHealth, DeadLetter, DeadLetterStatus
from channels_ingest.pipeline import IngestResult, ingest
from channels_ingest.platforms import Platform
from conversations.models import ConversationEvent, DeliveryStatus, EventKind, Message

logger = logging.getLogger(__name__)

POLL_LEASE = timedelta(minutes=5)


def channels_due_claim() -> list[int]:
    """Claim every active channel whose poll is due by moving its next poll forward.

    A conditional update per channel: of two beats racing, only one sees its row change, so a
    channel is enqueued once per due time.
    """
    now = timezone.now()
    due = (
        ChannelAccount.objects.filter(is_active=True)
        .exclude(health=ChannelHealth.NEEDS_REAUTH)
        .filter(Q(next_poll_at__isnull=True) | Q(next_poll_at__lte=now))
        .values_list("pk", "next_poll_at", "poll_interval_seconds")
    )
    claimed = []
    for pk, next_poll_at, interval in due:
        changed = ChannelAccount.objects.filter(pk=pk, next_poll_at=next_poll_at).update(
            next_poll_at=now + timedelta(seconds=interval)
        )
        if changed == 1:
            claimed.append(pk)
    return claimed


def channel_poll(*, channel_id: int) -> IngestResult | None:
    """Fetch what is new on a channel and ingest it. Returns None if another worker holds the
    channel's lease or the channel is gone or inactive.

    Rate limits and expired credentials are recorded on the channel, never slept on; transient
    errors propagate so the task retries with backoff.
    """
    now = timezone.now()
    leased = (
        ChannelAccount.objects.filter(pk=channel_id, is_active=True)
        .filter(Q(poll_lease_until__isnull=True) | Q(poll_lease_until__lt=now))
        .update(poll_lease_until=now + POLL_LEASE)
    )
    if not leased:
        return None
    channel = ChannelAccount.objects.get(pk=channel_id)
    try:
        fetched = connector_for(channel.platform).fetch(channel, dict(channel.cursor))
        result = ingest(
            channel=channel, posts=fetched.posts, cursor=fetched.cursor, rejected=fetched.rejected
        )
    except RateLimited as exc:
        _channel_health_set(
            channel_id,
            ChannelHealth.RATE_LIMITED,
            str(exc),
            rate_limited_until=exc.reset_at,
            next_poll_at=exc.reset_at,
        )
        return None
    except ReauthRequired as exc:
        _channel_health_set(channel_id, ChannelHealth.NEEDS_REAUTH, str(exc))
        return None
    except TransientError as exc:
        _channel_health_set(channel_id, ChannelHealth.ERROR, str(exc))
        raise
    except ConnectorError as exc:
        _channel_health_set(channel_id, ChannelHealth.ERROR, str(exc))
        return None
    finally:
        ChannelAccount.objects.filter(pk=channel_id).update(poll_lease_until=None)
    ChannelAccount.objects.filter(pk=channel_id).update(
        health=ChannelHealth.OK, last_error="", rate_limited_until=None, last_polled_at=now
    )
    logger.info("Polled %s: %d new, %d duplicates", channel.name, result.stored, result.duplicates)
    return result


def _channel_health_set(channel_id: int, health: str, error: str, **fields: object) -> None:
    logger.warning("Channel %s: %s (%s)", channel_id, health, error)
    ChannelAccount.objects.filter(pk=channel_id).update(
        health=health, last_error=error[:2000], last_polled_at=timezone.now(), **fields
    )


def message_send(*, message_id: int) -> Message | None:
    """Send one queued outbound message through its channel's connector, at most once.

    The message is claimed by moving it from queued to sending; a second delivery of the task
    finds nothing to claim and does nothing.
    """
    claimed = Message.objects.filter(pk=message_id, delivery_status=DeliveryStatus.QUEUED).update(
        delivery_status=DeliveryStatus.SENDING
    )
    if not claimed:
        return None
    message = Message.objects.select_related("channel").get(pk=message_id)
    try:
        sent = connector_for(message.channel.platform).send(message.channel, message)
    except TransientError:
        Message.objects.filter(pk=message_id).update(delivery_status=DeliveryStatus.QUEUED)
        raise
    except ConnectorError as exc:
        Message.objects.filter(pk=message_id).update(
            delivery_status=DeliveryStatus.FAILED, error=str(exc)[:2000]
        )
        return Message.objects.get(pk=message_id)
    with transaction.atomic():
        Message.objects.filter(pk=message_id).update(
            delivery_status=DeliveryStatus.SENT,
            external_id=sent.external_id,
            sent_at=timezone.now(),
            error="",
        )
        ConversationEvent.objects.create(
            conversation_id=message.conversation_id,
            kind=EventKind.MESSAGE_SENT,
            data={"message_id": message.pk, "external_id": sent.external_id},
        )
    return Message.objects.get(pk=message_id)


# --- Channel administration -------------------------------------------------------------

# The secrets each platform's connector reads from a channel's credentials.
CREDENTIAL_FIELDS: dict[str, tuple[str, ...]] = {
    Platform.X: (
        "bearer_token",
        "consumer_key",
        "consumer_secret",
        "access_token",
        "access_token_secret",
    ),
    Platform.FACEBOOK: ("page_access_token", "app_secret", "verify_token"),
    Platform.DEMO: (),
}


def credential_hint(value: object) -> str:
    """Enough of a secret to recognise it, never enough to use it."""
    text = str(value or "")
    if not text:
        return "not set"
    return f"set, ends …{text[-4:]}" if len(text) >= 12 else "set"


@transaction.atomic
def channel_save(
    *, channel: ChannelAccount, credentials: dict[str, str], replace_credentials: bool = False
) -> ChannelAccount:
    """Save a channel; credential fields left empty keep their stored value unless
    ``replace_credentials``. A changed secret clears a needs-re-authentication state."""
    stored = {} if replace_credentials else dict(channel.credentials or {})
    changed = False
    for name in CREDENTIAL_FIELDS.get(channel.platform, ()):
        value = credentials.get(name, "").strip()
        if value and stored.get(name) != value:
            stored[name] = value
            changed = True
    channel.credentials = stored
    if changed and channel.health == ChannelHealth.NEEDS_REAUTH:
        channel.health, channel.last_error = ChannelHealth.OK, ""
    if channel.next_poll_at is None:
        channel.next_poll_at = timezone.now()
    channel.save()
    return channel


def dead_letter_retry(*, letter: DeadLetter) -> DeadLetter:
    """Read a dead letter's payload again with its channel's connector and ingest what it
    yields. If it still cannot be read, the letter stays, with the new reason."""
    if letter.channel is None:
        DeadLetter.objects.filter(pk=letter.pk).update(
            error="Retry failed: the channel of this dead letter no longer exists."
        )
        letter.refresh_from_db()
        return letter
    try:
        payload = json.loads(letter.raw)
        parsed = connector_for(letter.channel.platform).parse(letter.channel, payload)
    except (json.JSONDecodeError, ConnectorError) as exc:
        DeadLetter.objects.filter(pk=letter.pk).update(error=f"Retry failed: {exc}")
        letter.refresh_from_db()
        return letter
    if parsed.rejected or not parsed.posts:
        reason = parsed.rejected[0].error if parsed.rejected else "It holds no posts."
        DeadLetter.objects.filter(pk=letter.pk).update(error=f"Retry failed: {reason}")
    else:
        with transaction.atomic():
            ingest(channel=letter.channel, posts=parsed.posts, source=letter.source)
            DeadLetter.objects.filter(pk=letter.pk).update(
                status=DeadLetterStatus.RETRIED, resolved_at=timezone.now()
            )
    letter.refresh_from_db()
    return letter


def dead_letter_discard(*, letter: DeadLetter) -> DeadLetter:
    DeadLetter.objects.filter(pk=letter.pk).update(
        status=DeadLetterStatus.DISCARDED, resolved_at=timezone.now()
    )
    letter.refresh_from_db()
    return letter
