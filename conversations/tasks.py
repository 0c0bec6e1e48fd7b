"""Celery tasks of conversations: thin wrappers around services."""

import smtplib

from celery import shared_task
from django.conf import settings
from django.contrib.auth.models import User
from django.core.mail import send_mail

from conversations.services import snoozes_wake
from conversations.sla import sla_check


@shared_task
def wake_snoozed_conversations() -> int:
    """Beat: conversations whose snooze has ended come back as open."""
    return snoozes_wake()


@shared_task
def assign_queued_conversations() -> int:
    """Beat, and an agent coming online: hand out the conversations waiting for an agent."""
    from conversations.routing import queued_assign

    return queued_assign()


@shared_task
def check_slas() -> int:
    """Beat: fire the SLA warnings and breaches that are due (each once)."""
    return len(sla_check())


@shared_task(
    acks_late=True,
    autoretry_for=(OSError, smtplib.SMTPException),
    retry_backoff=30,
    retry_backoff_max=1800,
    retry_jitter=True,
    max_retries=6,
)
def send_email(subject: str, body: str, recipients: list[str]) -> int:
    """One email, retried while the mail server is unreachable, so no request waits on it."""
    return send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, recipients)


@shared_task(
    acks_late=True,
    autoretry_for=(OSError, smtplib.SMTPException),
    retry_backoff=30,
    retry_backoff_max=1800,
    retry_jitter=True,
    max_retries=6,
)
def send_escalation_email(
    escalation_id: int, actor_id: int | None, level: int | None = None, trigger: str | None = None
) -> int:
    from conversations.escalations import escalation_email

    composed = escalation_email(
        escalation_id=escalation_id, actor_id=actor_id, level=level, trigger=trigger
    )
    if composed is None:
        return 0
    subject, body, address = composed
    return send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [address])


# How much of the customer's message a notification email quotes.
QUOTED_CHARACTERS = 1000


@shared_task(acks_late=True)
def send_notification_emails(emails: list[tuple[list[int], str, int]]) -> int:
    """Rule notifications that asked for email, one message per recipient list, quoting the
    customer's last message (not the conversation's last one, which may be our own
    acknowledgement). Their words are read when the email is written, so a queued task holds
    none of them. Each message is sent by a ``send_email`` task of its own, retried while
    the mail server is unreachable: a failure neither loses a message nor sends the others
    again. Returns how many were queued."""
    from django.db.models import OuterRef, Subquery

    from conversations.models import Conversation, Direction, Message

    last_inbound = (
        Message.objects.filter(conversation=OuterRef("pk"), direction=Direction.IN)
        .order_by("-created_at", "-pk")
        .values("body")[:1]
    )
    previews = {
        pk: (body or "")[:QUOTED_CHARACTERS]
        for pk, body in Conversation.objects.filter(pk__in={c for _, _, c in emails})
        .annotate(body=Subquery(last_inbound))
        .values_list("pk", "body")
    }
    sent = 0
    for user_ids, text, conversation_id in emails:
        addresses = list(
            User.objects.filter(pk__in=user_ids, is_active=True)
            .exclude(email="")
            .values_list("email", flat=True)
        )
        if addresses:
            body = f"{text}\n\n{previews.get(conversation_id, '')}".strip()
            send_email.delay(text[:120], body, addresses)
            sent += 1
    return sent


@shared_task(acks_late=True)
def deliver_webhook_call(call_id: int) -> str:
    """One attempt at an outbound webhook call; a failed one is retried by the sweep below."""
    from conversations.models import WebhookCall
    from conversations.webhook_calls import webhook_call_deliver

    try:
        return webhook_call_deliver(call_id=call_id).status
    except WebhookCall.DoesNotExist:
        return "gone"


@shared_task
def retry_due_webhook_calls() -> int:
    """Beat: enqueue webhook calls whose next attempt is due (retries, and calls whose task
    was lost with a worker or broker)."""
    from conversations.webhook_calls import webhook_calls_due

    due = webhook_calls_due()
    for call_id in due:
        deliver_webhook_call.delay(call_id)
    return len(due)
