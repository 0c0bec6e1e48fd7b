"""Product events for outbound webhook subscriptions: each subscribed, active endpoint gets a
signed call (``conversations.webhook_calls``) per event, keyed so that a repeat is harmless.

Which endpoints subscribe to what is cached, so publishing costs no query while nobody
subscribes; saving or deleting an endpoint clears it.
"""

from collections.abc import Iterable
from typing import Any

from django.core.cache import cache
from django.db.models.signals import post_delete, post_save
from django.utils import timezone

from conversations.models import Conversation, WebhookCall, WebhookEndpoint
from conversations.webhook_calls import webhook_calls_enqueue

WEBHOOK_EVENTS: dict[str, str] = {
    "conversation.created": "Conversation created",
    "conversation.assigned": "Conversation assigned",
    "conversation.escalated": "Conversation escalated",
    "conversation.resolved": "Conversation resolved",
    "message.received": "Message received",
    "message.sent": "Message sent",
    "contact.created": "Contact created",
    "contact.merged": "Contacts merged",
    "sla.breached": "SLA breached",
    "approval.requested": "Approval requested",
    "approval.decided": "Approval decided",
}
_CACHE_KEY = "scrm:webhook-subscriptions:v1"


def _subscriptions() -> dict[str, list[int]]:
    known = cache.get(_CACHE_KEY)
    if known is None:
        known = {}
        for pk, events in WebhookEndpoint.objects.filter(is_active=True).values_list(
            "pk", "events"
        ):
            for event in events or []:
                known.setdefault(event, []).append(pk)
        cache.set(_CACHE_KEY, known, 300)
    return dict(known)


def webhook_subscriptions_changed(**_: Any) -> None:
    cache.delete(_CACHE_KEY)


post_save.connect(webhook_subscriptions_changed, sender=WebhookEndpoint, dispatch_uid="wh-subs")
post_delete.connect(webhook_subscriptions_changed, sender=WebhookEndpoint, dispatch_uid="wh-subs-d")


def webhook_subscribed(event: str) -> bool:
    return bool(_subscriptions().get(event))


def webhook_event_publish(*, event: str, items: Iterable[tuple[str, dict[str, Any]]]) -> int:
    """Queue a call per subscribed endpoint and item; ``items`` are (a key naming the
    occurrence, its data). Returns how many calls were new."""
    endpoints = _subscriptions().get(event)
    if not endpoints:
        return 0
    at = timezone.now().isoformat()
    calls = [
        WebhookCall(
            endpoint_id=endpoint,
            key=f"{event}:{key}:{endpoint}"[:200],
            event=event,
            payload={"event": event, "occurred_at": at, "data": data},
        )
        for key, data in items
        for endpoint in endpoints
    ]
    return webhook_calls_enqueue(calls)


def contact_payload(contact: Any) -> dict[str, Any]:
    return {
        "id": contact.pk,
        "name": contact.name,
        "email": contact.email,
        "external_crm_id": contact.external_crm_id,
        "external_crm_url": contact.external_crm_url,
    }


def contacts_attach(conversations: Iterable[Conversation]) -> None:
    """Read, in one query, the contacts of those of ``conversations`` that do not hold theirs
    yet, so that building a batch's payloads does not read them one by one."""
    field = Conversation._meta.get_field("contact")
    missing = [c for c in conversations if not field.is_cached(c)]
    if not missing:
        return
    from contacts.models import Contact

    contacts = Contact.objects.in_bulk({c.contact_id for c in missing})
    for conversation in missing:
        conversation.contact = contacts[conversation.contact_id]


def conversation_payload(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": conversation.pk,
        "status": conversation.status,
        "priority": conversation.priority,
        "channel": conversation.channel_id,
        "team": conversation.team_id,
        "assignee": conversation.assignee_id,
        "subject": conversation.subject,
        "contact": contact_payload(conversation.contact),
    }


# Timeline events that are webhook events: the event name, or a function of the event's data.
_TIMELINE = {
    "assigned": lambda data: "conversation.assigned",
    "escalated": lambda data: "conversation.escalated",
    "status_changed": lambda data: (
        "conversation.resolved" if data.get("status") == "resolved" else None
    ),
    "sla_breached": lambda data: "sla.breached",
}


def conversation_event_publish(
    *, conversation: Conversation, kind: str, event_id: int, data: dict[str, Any]
) -> int:
    """Publish a timeline event of one conversation, if anyone subscribes to it."""
    name = _TIMELINE[kind](data) if kind in _TIMELINE else None
    if name is None or not webhook_subscribed(name):
        return 0
    conversation = Conversation.objects.select_related("contact").get(pk=conversation.pk)
    payload = {"conversation": conversation_payload(conversation), "details": data}
    return webhook_event_publish(event=name, items=[(str(event_id), payload)])
