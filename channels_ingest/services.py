"""Polling channels and sending outbound messages through their connectors."""

import json
import logging
import re
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import Q
from django.utils import timezone

from channels_ingest.connectors import connector_for, facebook
from channels_ingest.connectors.base import (
    ConnectorError,
    RateLimited,
    ReauthRequired,
    TransientError,
)
from channels_ingest.models import ChannelAccount, ChannelHealth, DeadLetter, DeadLetterStatus
from channels_ingest.pipeline import IngestResult, LeaseLost, ingest
from channels_ingest.platforms import Platform
from channels_ingest.types import InboundPost, post_from_json
from channels_ingest.webhooks import webhook_parts
from conversations.models import Conversation, ConversationEvent, DeliveryStatus, EventKind, Message
from governance.audit import audit_change, audit_record

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
    token = uuid.uuid4().hex
    leased = (
        ChannelAccount.objects.filter(pk=channel_id, is_active=True)
        .filter(Q(poll_lease_until__isnull=True) | Q(poll_lease_until__lt=now))
        .update(poll_lease_until=now + POLL_LEASE, poll_lease_token=token)
    )
    if not leased:
        return None
    channel = ChannelAccount.objects.get(pk=channel_id)
    try:
        fetched = connector_for(channel.platform).fetch(channel, dict(channel.cursor))
        result = ingest(
            channel=channel,
            posts=fetched.posts,
            cursor=fetched.cursor,
            rejected=fetched.rejected,
            lease=token,
        )
    except LeaseLost:
        logger.warning("Poll of channel %s outlived its lease; another worker has it", channel_id)
        return None
    except RateLimited as exc:
        _channel_health_set(
            channel,
            ChannelHealth.RATE_LIMITED,
            str(exc),
            rate_limited_until=exc.reset_at,
            next_poll_at=exc.reset_at,
        )
        return None
    except ReauthRequired as exc:
        _channel_health_set(channel, ChannelHealth.NEEDS_REAUTH, str(exc))
        return None
    except TransientError as exc:
        _channel_health_set(channel, ChannelHealth.ERROR, str(exc))
        raise
    except ConnectorError as exc:
        _channel_health_set(channel, ChannelHealth.ERROR, str(exc))
        return None
    except Exception as exc:
        # A fault of ours, not the platform's: admins still see it on the channel.
        _channel_health_set(channel, ChannelHealth.ERROR, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        ChannelAccount.objects.filter(pk=channel_id, poll_lease_token=token).update(
            poll_lease_until=None, poll_lease_token=""
        )
    ChannelAccount.objects.filter(pk=channel_id).update(
        health=ChannelHealth.OK, last_error="", rate_limited_until=None, last_polled_at=now
    )
    logger.info("Polled %s: %d new, %d duplicates", channel.name, result.stored, result.duplicates)
    return result


_TOKEN_IN_URL = re.compile(r"((?:access_token|client_secret|appsecret_proof)=)[^&\s'\"]+")


def redacted(text: str, channel: ChannelAccount) -> str:
    """An error text fit to store and show: no credential of the channel, no token in a URL."""
    for secret in (channel.credentials or {}).values():
        if isinstance(secret, str) and len(secret) >= 6:
            text = text.replace(secret, "[redacted]")
    return _TOKEN_IN_URL.sub(r"\1[redacted]", text)


def _channel_health_set(channel: ChannelAccount, health: str, error: str, **fields: object) -> None:
    error = redacted(error, channel)[:2000]
    logger.warning("Channel %s: %s (%s)", channel.pk, health, error)
    ChannelAccount.objects.filter(pk=channel.pk).update(
        health=health, last_error=error, last_polled_at=timezone.now(), **fields
    )


class SendLater(Exception):
    """The send did not reach the platform and may be tried again after ``delay`` seconds."""

    def __init__(self, reason: str, *, delay: float | None = None) -> None:
        super().__init__(reason)
        self.delay = delay


# A send still "sending" after this long lost its worker; its outcome is unknown.
SEND_DEADLINE = timedelta(minutes=15)


def message_send(*, message_id: int) -> Message | None:
    """Send one queued outbound message through its channel's connector, at most once.

    The message is claimed by moving it from queued to sending; a second delivery of the task
    finds nothing to claim. It is sent again only when the platform certainly did not act on
    the first try (raises SendLater); when that is unknown it fails with the reason shown to
    the agent, since a reply posted twice is worse than one the agent re-sends by hand.
    """
    claimed = Message.objects.filter(pk=message_id, delivery_status=DeliveryStatus.QUEUED).update(
        delivery_status=DeliveryStatus.SENDING, send_started_at=timezone.now()
    )
    if not claimed:
        return None
    message = Message.objects.select_related("channel", "conversation", "author_user").get(
        pk=message_id
    )
    if message.channel.is_listen_only:
        # Queued before the channel became listen-only: nothing leaves it, whatever the path.
        return message_fail(
            message_id=message_id,
            reason=f"{message.channel.name} is listen-only now: the message was not sent.",
        )
    try:
        sent = connector_for(message.channel.platform).send(message.channel, message)
    except RateLimited as exc:
        _requeue(message_id)
        raise SendLater(str(exc), delay=(exc.reset_at - timezone.now()).total_seconds()) from exc
    except TransientError as exc:
        if not exc.request_sent:
            _requeue(message_id)
            raise SendLater(str(exc)) from exc
        return message_fail(
            message_id=message_id,
            reason=f"{exc} It may have been posted: check on the platform before sending again.",
        )
    except ConnectorError as exc:
        return message_fail(message_id=message_id, reason=str(exc))
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
        _publish_sent(message, external_id=sent.external_id)
        # What went out, where, by whom; never the text.
        audit_record(
            action="message.sent",
            actor=message.author_user,
            obj=message,
            channel=message.channel_id,
            conversation=message.conversation_id,
            external_id=sent.external_id,
        )
    return Message.objects.get(pk=message_id)


def _publish_sent(message: Message, *, external_id: str) -> None:
    from conversations.webhook_events import (
        conversation_payload,
        webhook_event_publish,
        webhook_subscribed,
    )

    if not webhook_subscribed("message.sent"):
        return
    conversation = Conversation.objects.select_related("contact").get(pk=message.conversation_id)
    payload = {
        "conversation": conversation_payload(conversation),
        "message": {
            "id": message.pk,
            "external_id": external_id,
            "kind": message.kind,
            "body": message.body,
            "author": message.author_user_id,
        },
    }
    webhook_event_publish(event="message.sent", items=[(str(message.pk), payload)])


def _requeue(message_id: int) -> None:
    Message.objects.filter(pk=message_id, delivery_status=DeliveryStatus.SENDING).update(
        delivery_status=DeliveryStatus.QUEUED, send_started_at=None
    )


def message_fail(*, message_id: int, reason: str) -> Message:
    """Mark an outbound message failed, with the reason the agent will see."""
    with transaction.atomic():
        failed = Message.objects.filter(
            pk=message_id, delivery_status__in=[DeliveryStatus.QUEUED, DeliveryStatus.SENDING]
        ).update(delivery_status=DeliveryStatus.FAILED, error=reason[:2000])
        if failed:
            _message_failed_record(message_id, reason)
    return Message.objects.get(pk=message_id)


def _message_failed_record(message_id: int, reason: str) -> None:
    message = Message.objects.select_related("channel", "author_user").get(pk=message_id)
    audit_record(
        action="message.failed",
        actor=message.author_user,
        obj=message,
        channel=message.channel_id,
        conversation=message.conversation_id,
        reason=redacted(reason, message.channel)[:300],
    )


def message_retry(*, message_id: int) -> bool:
    """Queue a failed outbound message again, at the agent's request. Returns whether it was
    queued (only a failed message is)."""
    from channels_ingest.tasks import send_message

    requeued = Message.objects.filter(pk=message_id, delivery_status=DeliveryStatus.FAILED).update(
        delivery_status=DeliveryStatus.QUEUED, error="", send_started_at=None
    )
    if requeued:
        transaction.on_commit(lambda: send_message.delay(message_id))
    return bool(requeued)


def lost_sends() -> list[int]:
    """Replies queued for a while whose task never ran (a broker restart): to enqueue again.
    Sending claims each message, so an extra task does nothing."""
    return list(
        Message.objects.filter(
            delivery_status=DeliveryStatus.QUEUED,
            received_at__lt=timezone.now() - timedelta(minutes=5),
            send_started_at__isnull=True,
        ).values_list("pk", flat=True)[:500]
    )


def stalled_sends_fail() -> int:
    """Sends whose worker died mid-way: their outcome is unknown, so they fail visibly."""
    reason = (
        "Sending was interrupted; it may have been posted: check on the platform "
        "before sending again."
    )
    stalled = Message.objects.filter(
        delivery_status=DeliveryStatus.SENDING,
        send_started_at__lt=timezone.now() - SEND_DEADLINE,
    )
    failed = 0
    # One by one, each claimed by its conditional update, so each failure is audited once.
    for message_id in list(stalled.values_list("pk", flat=True)):
        with transaction.atomic():
            if stalled.filter(pk=message_id).update(
                delivery_status=DeliveryStatus.FAILED, error=reason
            ):
                _message_failed_record(message_id, reason)
                failed += 1
    return failed


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
    # The key the posting system sends as "Authorization: Bearer <key>".
    Platform.API: ("inbound_key",),
}


def credential_hint(value: object) -> str:
    """Enough of a secret to recognise it, never enough to use it."""
    text = str(value or "")
    if not text:
        return "not set"
    return f"set, ends …{text[-4:]}" if len(text) >= 12 else "set"


_EDITABLE_CHANNEL_FIELDS = [
    "name",
    "handle",
    "external_account_id",
    "mode",
    "credentials",
    "settings",
    "is_active",
    "poll_interval_seconds",
    "default_team",
    "health",
    "last_error",
    "updated_at",
]


@transaction.atomic
def channel_save(
    *,
    channel: ChannelAccount,
    credentials: dict[str, str],
    replace_credentials: bool = False,
    actor: User | None = None,
) -> ChannelAccount:
    """Save a channel; credential fields left empty keep their stored value unless
    ``replace_credentials``. A changed secret clears a needs-re-authentication state.
    Audited: the settings before and after, and only the names of changed credentials."""
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
    with audit_change(channel, actor=actor):
        if channel.pk is None:
            channel.save()
        else:
            # Not the cursor, lease or poll times: a poll may have moved them meanwhile.
            channel.save(update_fields=_EDITABLE_CHANNEL_FIELDS)
    return channel


@transaction.atomic
def dead_letter_retry(*, letter: DeadLetter, actor: User | None = None) -> DeadLetter:
    """Read a dead letter's payload again with its channel's connector and ingest what it
    yields. If it still cannot be read, the letter stays, with the new reason."""
    letter = _dead_letter_retry(letter)
    audit_record(
        action="dead_letter.retried",
        actor=actor,
        obj=letter,
        channel=letter.channel_id,
        outcome="stored" if letter.status == DeadLetterStatus.RETRIED else "still unreadable",
    )
    return letter


def _dead_letter_retry(letter: DeadLetter) -> DeadLetter:
    channel = letter.channel
    if channel is None:
        return _retry_failed(letter, "the channel of this dead letter no longer exists.")
    if letter.post is not None:
        # Read once already: stored as it was read.
        try:
            posts = [post_from_json(letter.post)]
        except (KeyError, TypeError, ValueError) as exc:
            return _retry_failed(letter, f"the post kept with it is not one: {exc}")
        return _retry_store(letter, [(channel, posts)], rejected=[])
    try:
        payload = json.loads(letter.raw)
    except json.JSONDecodeError as exc:
        return _retry_failed(letter, f"{exc}")
    if _is_page_entry(channel, letter.context):
        # A Page's entry no channel served: delivered again, to whichever serves it now.
        payload = {"object": "page", "entry": [payload]}
    elif letter.context is not None:
        return _dead_letter_item_retry(letter, channel, payload)
    # A webhook body may concern several accounts of one app: each part goes to its channel,
    # as when it was delivered.
    parts: list[tuple[ChannelAccount, list[InboundPost]]] = []
    rejected: list[str] = []
    for part_channel, part in webhook_parts(channel, payload):
        try:
            parsed = connector_for(part_channel.platform).parse(part_channel, part)
        except ConnectorError as exc:
            rejected.append(str(exc))
            continue
        parts.append((part_channel, parsed.posts))
        rejected += [r.error for r in parsed.rejected]
    if not any(posts for _, posts in parts):
        reason = rejected[0] if rejected else "It holds no posts."
        if not _reads_as_delivery(channel, payload):
            reason = (
                f"{reason} It holds one item of a poll or a delivery, which is read with the "
                "page or delivery it came in; it cannot be read again alone."
            )
        return _retry_failed(letter, reason)
    return _retry_store(letter, parts, rejected=rejected)


def _is_page_entry(channel: ChannelAccount, context: Any) -> bool:
    return (
        channel.platform == Platform.FACEBOOK
        and isinstance(context, dict)
        and context.get("reader") == facebook.ENTRY_READER
    )


def _dead_letter_item_retry(letter: DeadLetter, channel: ChannelAccount, item: Any) -> DeadLetter:
    """One item of a poll page or a delivery, read again alone by the connector's reader that
    rejected it, with what of its page was kept beside it (``letter.context``)."""
    context = letter.context if isinstance(letter.context, dict) else {}
    try:
        parsed = connector_for(channel.platform).read_item(channel, context, item)
    except ConnectorError as exc:
        return _retry_failed(letter, str(exc))
    if not parsed.posts:
        reason = (
            parsed.rejected[0].error
            if parsed.rejected
            else "It reads as nothing to store (the account's own post or a skipped event)."
        )
        return _retry_failed(letter, reason)
    return _retry_store(letter, [(channel, parsed.posts)], rejected=[])


def _reads_as_delivery(channel: ChannelAccount, payload: Any) -> bool:
    """Whether the payload has the shape of a whole delivery for the channel's platform."""
    if not isinstance(payload, dict):
        return False
    keys = {
        Platform.X: ("for_user_id", "tweet_create_events", "direct_message_events"),
        Platform.FACEBOOK: ("object", "entry"),
        Platform.API: ("messages",),
    }.get(Platform(channel.platform))
    return keys is None or any(key in payload for key in keys)


def _retry_store(
    letter: DeadLetter,
    parts: Sequence[tuple[ChannelAccount, Sequence[InboundPost]]],
    *,
    rejected: Sequence[str],
) -> DeadLetter:
    """Ingest what the letter yielded (a post stored already counts once: the ingest skips
    it). Done, unless part of it still cannot be read: then it stays, saying so, and a later
    retry stores only what is still missing."""
    try:
        with transaction.atomic():
            for part_channel, posts in parts:
                if posts:
                    ingest(channel=part_channel, posts=list(posts), source=letter.source)
    except (OperationalError, InterfaceError):
        raise  # the database is unavailable: nothing about the letter
    except Exception as exc:  # noqa: BLE001 - the letter says why, as the ingest did
        return _retry_failed(letter, f"could not be stored: {type(exc).__name__}: {exc}")
    with transaction.atomic():
        if rejected:
            stored = sum(len(posts) for _, posts in parts)
            DeadLetter.objects.filter(pk=letter.pk).update(
                error=f"Retry stored {stored} post{'s' if stored != 1 else ''}; still "
                f"unreadable: {'; '.join(rejected)}"[:2000]
            )
        else:
            DeadLetter.objects.filter(pk=letter.pk).update(
                status=DeadLetterStatus.RETRIED, resolved_at=timezone.now()
            )
    letter.refresh_from_db()
    return letter


def _retry_failed(letter: DeadLetter, reason: str) -> DeadLetter:
    DeadLetter.objects.filter(pk=letter.pk).update(error=f"Retry failed: {reason}"[:2000])
    letter.refresh_from_db()
    return letter


@transaction.atomic
def dead_letter_discard(*, letter: DeadLetter, actor: User | None = None) -> DeadLetter:
    DeadLetter.objects.filter(pk=letter.pk).update(
        status=DeadLetterStatus.DISCARDED, resolved_at=timezone.now()
    )
    letter.refresh_from_db()
    audit_record(action="dead_letter.discarded", actor=actor, obj=letter, channel=letter.channel_id)
    return letter
