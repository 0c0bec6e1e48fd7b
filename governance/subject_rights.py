"""Data-subject rights: everything held about a contact as a download, and its erasure.

Erasure is irreversible. It removes what identifies the person and what they or we wrote,
and keeps the facts the reports read (conversation rows with counts, times, statuses,
sentiment and SLA fields; message rows with direction, kind, times and classification), so
KPI totals stay as they were. Posts that later arrive from an erased account find no
identity and no contact with its email or phone: they simply make a new contact.
"""

import csv
import hmac
import io
import json
import secrets
import time
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.contrib.sessions.backends.base import SessionBase
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import Case, CharField, Q, QuerySet, Value, When
from django.db.models.functions import Cast, Concat
from django.http import HttpRequest
from django.utils import timezone

from channels_ingest.models import DeadLetter, DeadLetterStatus, WebhookDelivery, WebhookStatus
from contacts.models import Contact, ContactMerge, IdentityMove, MergeSuggestion, SocialIdentity
from contacts.selectors import csv_cell_escape
from conversations.models import (
    Conversation,
    ConversationEvent,
    DeliveryStatus,
    Direction,
    Escalation,
    Message,
    Notification,
    WebhookCall,
    WebhookCallStatus,
)
from conversations.selectors import conversations_visible_to
from governance.audit import audit_record
from governance.models import ApprovalStatus, OutboundApproval
from governance.retention import webhook_call_scrubbed
from governance.roles import is_admin
from scrm.types import AnyUser

# What stands where an erased text was.
ERASED = "[erased]"
# Set in an erased contact's attributes, with the time: the only thing they still hold.
ERASED_ATTRIBUTE = "erased_at"
_CHUNK = 500
# Keys of timeline event data that hold free text (an escalation's reason, the reasons an
# automatic acknowledgement was refused, which may quote it).
_EVENT_TEXT_KEYS = ("reason", "acknowledgement_refused")
_ERASED_NOTE = "The contact was erased before this was sent."


def _chunks(ids: Sequence[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield list(ids[start : start + _CHUNK])


def contact_subject_ids(*, contact: Contact) -> list[int]:
    """The contact and every contact merged into it (at any depth): one person."""
    ids = [contact.pk]
    frontier = [contact.pk]
    while frontier:
        frontier = [
            pk
            for pk in Contact.objects.filter(merged_into_id__in=frontier).values_list(
                "pk", flat=True
            )
            if pk not in ids
        ]
        ids += frontier
    return ids


def contact_is_erased(*, contact: Contact) -> bool:
    return ERASED_ATTRIBUTE in (contact.attributes or {})


# --- Export -----------------------------------------------------------------------------

_CONTACT_FIELDS = (
    "id",
    "name",
    "email",
    "phone",
    "company",
    "is_vip",
    "attributes",
    "external_crm_id",
    "external_crm_url",
    "source",
    "first_seen_at",
    "last_seen_at",
    "created_at",
    "updated_at",
)
_IDENTITY_FIELDS = (
    "id",
    "platform",
    "platform_user_id",
    "handle",
    "display_name",
    "profile_url",
    "followers_count",
    "verified",
    "created_at",
)
_MESSAGE_CSV = (
    "conversation",
    "channel",
    "at",
    "direction",
    "kind",
    "from",
    "body",
    "language",
    "sentiment",
    "delivery_status",
)


def _fields(obj: Any, names: Iterable[str]) -> dict[str, Any]:
    return {name: getattr(obj, "pk" if name == "id" else name) for name in names}


def _message(message: Message) -> dict[str, Any]:
    if message.kind == "note":
        source = "internal note"
    elif message.direction == Direction.IN:
        source = "customer"
    else:
        source = "us"
    return {
        "id": message.pk,
        "conversation": message.conversation_id,
        "channel": message.channel.name,
        "at": message.created_at,
        "direction": message.direction,
        "kind": message.kind,
        "from": source,
        "body": message.body,
        "language": message.language,
        "sentiment": message.sentiment,
        "keywords": message.keywords,
        "delivery_status": message.delivery_status,
        "external_id": message.external_id,
        "raw": message.raw,
    }


def _messages(queryset: QuerySet[Message]) -> list[dict[str, Any]]:
    rows = queryset.select_related("channel").order_by("created_at", "pk")
    return [_message(m) for m in rows.iterator(chunk_size=2000)]


def contact_data_export(
    *, contact: Contact, actor: AnyUser, request: HttpRequest | None = None
) -> bytes:
    """A ZIP of what is held about the contact: ``contact.json`` with everything, and
    ``messages.csv`` and ``identities.csv`` for spreadsheets. Conversations are those on
    channels the actor may see (admins see all: ``complete`` says which). Of messages, the
    person's own and ours (replies and internal notes) are included, never what other
    people wrote in the same threads. Audited as ``contact.exported``."""
    subject_ids = contact_subject_ids(contact=contact)
    contacts = list(Contact.objects.filter(pk__in=subject_ids).order_by("pk"))
    identities = list(
        SocialIdentity.objects.filter(contact_id__in=subject_ids).order_by("platform", "pk")
    )
    identity_ids = [i.pk for i in identities]
    conversations = list(
        conversations_visible_to(user=actor)
        .filter(contact_id__in=subject_ids)
        .select_related("channel")
        .prefetch_related("tags")
        .order_by("created_at", "pk")
    )
    conversation_ids = [c.pk for c in conversations]
    theirs_or_ours = Q(direction=Direction.OUT) | Q(author_identity_id__in=identity_ids)

    by_conversation: dict[int, dict[str, list[dict[str, Any]]]] = {
        pk: {"messages": [], "events": [], "escalations": []} for pk in conversation_ids
    }
    all_messages: list[dict[str, Any]] = []
    for chunk in _chunks(conversation_ids):
        for row in _messages(Message.objects.filter(theirs_or_ours, conversation_id__in=chunk)):
            by_conversation[row["conversation"]]["messages"].append(row)
            all_messages.append(row)
        for event in ConversationEvent.objects.filter(conversation_id__in=chunk).order_by(
            "created_at", "pk"
        ):
            by_conversation[event.conversation_id]["events"].append(
                {"kind": event.kind, "at": event.created_at, "data": event.data}
            )
        for escalation in (
            Escalation.objects.filter(conversation_id__in=chunk)
            .select_related("department", "user")
            .order_by("created_at", "pk")
        ):
            by_conversation[escalation.conversation_id]["escalations"].append(
                {
                    "to": escalation.target_name,
                    "trigger": escalation.trigger,
                    "reason": escalation.reason,
                    "status": escalation.status,
                    "answer": escalation.answer,
                    "outcome": escalation.outcome,
                    "created_at": escalation.created_at,
                    "returned_at": escalation.returned_at,
                    "closed_at": escalation.closed_at,
                }
            )
    elsewhere = _messages(
        Message.objects.filter(
            author_identity_id__in=identity_ids,
            conversation__in=conversations_visible_to(user=actor),
        ).exclude(conversation_id__in=conversation_ids)
    )
    all_messages += elsewhere

    data = {
        "exported_at": timezone.now(),
        "complete": is_admin(actor),
        "contact": _fields(next(c for c in contacts if c.pk == contact.pk), _CONTACT_FIELDS),
        "merged_contacts": [_fields(c, _CONTACT_FIELDS) for c in contacts if c.pk != contact.pk],
        "identities": [_fields(i, _IDENTITY_FIELDS) for i in identities],
        "conversations": [
            {
                "id": c.pk,
                "channel": c.channel.name,
                "platform": c.channel.platform,
                "subject": c.subject,
                "status": c.status,
                "priority": c.priority,
                "sentiment": c.sentiment,
                "tags": [t.name for t in c.tags.all()],
                "created_at": c.created_at,
                "last_message_at": c.last_message_at,
                "first_response_at": c.first_response_at,
                "resolved_at": c.resolved_at,
                **by_conversation[c.pk],
            }
            for c in conversations
        ],
        "messages_in_other_conversations": elsewhere,
        "merges": [
            {
                "kept": m.kept_id,
                "merged": m.merged_id,
                "at": m.created_at,
                "undone_at": m.undone_at,
            }
            for m in ContactMerge.objects.filter(
                Q(kept_id__in=subject_ids) | Q(merged_id__in=subject_ids)
            ).order_by("created_at", "pk")
        ],
        "identity_moves": [
            {
                "identity": m.identity_id,
                "from": m.from_contact_id,
                "to": m.to_contact_id,
                "at": m.created_at,
            }
            for m in IdentityMove.objects.filter(
                Q(from_contact_id__in=subject_ids) | Q(to_contact_id__in=subject_ids)
            ).order_by("created_at", "pk")
        ],
    }

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(
            "contact.json",
            json.dumps(data, cls=DjangoJSONEncoder, ensure_ascii=False, indent=2),
        )
        archive.writestr(
            "messages.csv",
            _csv(_MESSAGE_CSV, ([row[name] for name in _MESSAGE_CSV] for row in all_messages)),
        )
        archive.writestr(
            "identities.csv",
            _csv(_IDENTITY_FIELDS, (_fields(i, _IDENTITY_FIELDS).values() for i in identities)),
        )
    audit_record(
        action="contact.exported",
        actor=actor,
        request=request,
        object_type="contacts.contact",
        object_id=str(contact.pk),
        # Never the name: the audit log outlives an erasure.
        object_repr=f"Contact #{contact.pk}",
        complete=data["complete"],
        conversations=len(conversations),
        messages=len(all_messages),
    )
    return buffer.getvalue()


def _csv(header: Sequence[str], rows: Iterable[Iterable[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    for row in rows:
        writer.writerow(
            [
                csv_cell_escape(value.isoformat() if hasattr(value, "isoformat") else str(value))
                if value is not None
                else ""
                for value in row
            ]
        )
    # A byte order mark, so spreadsheets read the file as UTF-8.
    return "\ufeff" + out.getvalue()


# --- Erasure ----------------------------------------------------------------------------

ERASE_TOKEN_SESSION_KEY = "contact_erase"
ERASE_TOKEN_MAX_AGE = 600  # seconds between the two confirmations


def erase_phrase(*, contact: Contact) -> str:
    return f"ERASE {contact.pk}"


def erase_confirmation_errors(*, contact: Contact, typed: str, understood: bool) -> list[str]:
    """Why the first confirmation does not count yet: the person must type the contact's
    name (or ``ERASE <id>``) and tick that they understand it cannot be undone."""
    errors = []
    typed = " ".join(typed.split())
    accepted = {erase_phrase(contact=contact).casefold()}
    if contact.name.strip():
        accepted.add(" ".join(contact.name.split()).casefold())
    if typed.casefold() not in accepted:
        errors.append(
            f"Type the contact's name or {erase_phrase(contact=contact)} exactly to confirm."
        )
    if not understood:
        errors.append("Tick the box to confirm that you understand this cannot be undone.")
    return errors


def erase_token_issue(*, session: SessionBase, contact: Contact) -> str:
    """A one-time token for the final confirmation, held in the user's session."""
    token = secrets.token_urlsafe(32)
    session[ERASE_TOKEN_SESSION_KEY] = {
        "contact": contact.pk,
        "token": token,
        "issued": int(time.time()),
    }
    return token


def erase_token_take(*, session: SessionBase, contact: Contact, token: str) -> bool:
    """Whether ``token`` is the one issued for this contact, recently; it is used up either
    way, so a second try needs the first confirmation again."""
    held = session.pop(ERASE_TOKEN_SESSION_KEY, None)
    if not isinstance(held, dict) or held.get("contact") != contact.pk:
        return False
    if int(time.time()) - int(held.get("issued", 0)) > ERASE_TOKEN_MAX_AGE:
        return False
    return bool(token) and hmac.compare_digest(str(held.get("token", "")), token)


def _erased_text(name: str) -> Case:
    """The marker where there was text, empty where there was none."""
    return Case(When(**{name: ""}, then=Value("")), default=Value(ERASED))


@transaction.atomic
def contact_erase(*, contact: Contact, actor: AnyUser, request: HttpRequest | None = None) -> None:
    """Erase a person, irreversibly, on every channel (whoever asks: the right is the
    person's, not a team's). Their identities go; their messages and ours to them (replies,
    internal notes) keep only their facts; subjects, previews, escalation reasons and
    answers, notifications, outgoing webhook calls and stored raw payloads that carry them
    are blanked; replies not yet sent are stopped; the contact row keeps only its number.
    The audit entry holds counts, nothing personal."""
    now = timezone.now()
    subject_ids = contact_subject_ids(contact=contact)
    list(Contact.objects.select_for_update().filter(pk__in=subject_ids).values_list("pk"))
    identities = list(
        SocialIdentity.objects.filter(contact_id__in=subject_ids).values_list(
            "pk", "platform", "platform_user_id"
        )
    )
    identity_ids = [pk for pk, _, _ in identities]
    conversation_ids = list(
        Conversation.objects.filter(contact_id__in=subject_ids)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    counts: dict[str, Any] = dict.fromkeys(
        (
            "identities",
            "conversations",
            "messages",
            "messages_stopped",
            "events",
            "escalations",
            "notifications",
            "webhook_calls",
            "dead_letters",
            "webhook_deliveries",
        ),
        0,
    )
    counts["identities"] = len(identity_ids)
    counts["conversations"] = len(conversation_ids)

    # What they wrote in other people's threads: the messages, and a preview showing one.
    elsewhere = list(
        Message.objects.filter(author_identity_id__in=identity_ids)
        .exclude(conversation_id__in=conversation_ids)
        .values_list("pk", "conversation_id", "body")
    )
    previews: dict[int, set[str]] = {}
    for _, conversation_id, body in elsewhere:
        previews.setdefault(conversation_id, set()).add(body[:280])
    for pk, preview in Conversation.objects.filter(pk__in=previews).values_list(
        "pk", "last_message_preview"
    ):
        if preview in previews[pk]:
            Conversation.objects.filter(pk=pk).update(last_message_preview="")
    counts["messages"] += _messages_erase(Message.objects.filter(pk__in=[m[0] for m in elsewhere]))

    theirs_or_ours = Q(direction=Direction.OUT) | Q(author_identity_id__in=identity_ids)
    for chunk in _chunks(conversation_ids):
        messages = Message.objects.filter(theirs_or_ours, conversation_id__in=chunk)
        counts["messages"] += _messages_erase(messages)
        counts["messages_stopped"] += _sends_stop(messages, now=now)
        Conversation.objects.filter(pk__in=chunk).update(subject="", last_message_preview="")
        # A DM thread is keyed by the person's account: a new message from it must not land
        # in this conversation, and the key must not name them.
        Conversation.objects.filter(pk__in=chunk, thread_key__startswith="dm:").update(
            thread_key=Concat(Value("dm:erased-"), Cast("pk", CharField()))
        )
        counts["events"] += _events_erase(
            ConversationEvent.objects.filter(conversation_id__in=chunk)
        )
        counts["escalations"] += (
            Escalation.objects.filter(conversation_id__in=chunk)
            .filter(~Q(reason="") | ~Q(answer=""))
            .update(reason=_erased_text("reason"), answer=_erased_text("answer"))
        )
        counts["notifications"] += Notification.objects.filter(conversation_id__in=chunk).update(
            text=ERASED
        )
        counts["webhook_calls"] += _webhook_calls_erase(
            WebhookCall.objects.filter(payload__conversation__id__in=chunk)
        )

    for _, platform, platform_user_id in identities:
        counts["dead_letters"] += _dead_letters_erase(
            DeadLetter.objects.filter(
                Q(channel__platform=platform) | Q(channel__isnull=True),
                raw__contains=platform_user_id,
            ),
            now=now,
        )
        counts["webhook_deliveries"] += _webhook_deliveries_erase(
            WebhookDelivery.objects.filter(
                channel__platform=platform, body__contains=platform_user_id
            )
        )

    SocialIdentity.objects.filter(pk__in=identity_ids).delete()
    MergeSuggestion.objects.filter(
        Q(contact_id__in=subject_ids) | Q(other_id__in=subject_ids)
    ).delete()
    ContactMerge.objects.filter(Q(kept_id__in=subject_ids) | Q(merged_id__in=subject_ids)).update(
        previous_values={}
    )
    _admin_log_erase(Contact, subject_ids, "Erased contact")
    _admin_log_erase(SocialIdentity, identity_ids, "Erased identity")
    for pk in subject_ids:
        Contact.objects.filter(pk=pk).update(
            name=f"Erased contact #{pk}",
            email="",
            phone="",
            company="",
            is_vip=False,
            attributes={ERASED_ATTRIBUTE: now.isoformat()},
            external_crm_id="",
            external_crm_url="",
            updated_at=now,
        )
    audit_record(
        action="contact.erased",
        actor=actor,
        request=request,
        object_type="contacts.contact",
        object_id=str(contact.pk),
        object_repr=f"Erased contact #{contact.pk}",
        contacts=len(subject_ids),
        **counts,
    )


def _sends_stop(messages: QuerySet[Message], *, now: datetime) -> int:
    """Replies still waiting for approval or to be sent never go out."""
    waiting = messages.filter(delivery_status=DeliveryStatus.PENDING_APPROVAL)
    OutboundApproval.objects.filter(message__in=waiting, status=ApprovalStatus.PENDING).update(
        status=ApprovalStatus.REJECTED, decided_at=now, note=_ERASED_NOTE
    )
    stopped = waiting.update(delivery_status=DeliveryStatus.REJECTED, error=_ERASED_NOTE)
    stopped += messages.filter(
        delivery_status__in=(DeliveryStatus.QUEUED, DeliveryStatus.SENDING)
    ).update(delivery_status=DeliveryStatus.FAILED, error=_ERASED_NOTE)
    return stopped


def _messages_erase(messages: QuerySet[Message]) -> int:
    OutboundApproval.objects.filter(message__in=messages).update(original_body="", note="")
    return messages.update(body=ERASED, raw={})


def _events_erase(events: QuerySet[ConversationEvent]) -> int:
    changed = []
    for event in events.only("data").iterator(chunk_size=2000):
        if any(event.data.get(key) for key in _EVENT_TEXT_KEYS):
            event.data = {
                **event.data,
                **{key: ERASED for key in _EVENT_TEXT_KEYS if event.data.get(key)},
            }
            changed.append(event)
    ConversationEvent.objects.bulk_update(changed, ["data"], batch_size=_CHUNK)
    return len(changed)


def _webhook_calls_erase(calls: QuerySet[WebhookCall]) -> int:
    """Calls not delivered yet are given up: what they would send is gone."""
    calls.filter(status=WebhookCallStatus.PENDING).update(
        status=WebhookCallStatus.FAILED, last_error=_ERASED_NOTE
    )
    changed = []
    for call in calls.only("payload"):
        conversation = call.payload.get("conversation") if isinstance(call.payload, dict) else None
        conversation_id = conversation.get("id") if isinstance(conversation, dict) else None
        call.payload = webhook_call_scrubbed(conversation_id=conversation_id, marker=ERASED)
        changed.append(call)
    WebhookCall.objects.bulk_update(changed, ["payload"], batch_size=_CHUNK)
    return len(changed)


def _dead_letters_erase(letters: QuerySet[DeadLetter], *, now: datetime) -> int:
    letters = letters.exclude(raw=ERASED)
    ids = list(letters.values_list("pk", flat=True))
    DeadLetter.objects.filter(pk__in=ids, status=DeadLetterStatus.NEW).update(
        status=DeadLetterStatus.DISCARDED, resolved_at=now
    )
    return DeadLetter.objects.filter(pk__in=ids).update(raw=ERASED)


def _webhook_deliveries_erase(deliveries: QuerySet[WebhookDelivery]) -> int:
    """A delivery not processed yet would bring the posts back: it fails instead."""
    ids = list(deliveries.exclude(body=ERASED).values_list("pk", flat=True))
    WebhookDelivery.objects.filter(
        pk__in=ids, status__in=(WebhookStatus.PENDING, WebhookStatus.PROCESSING)
    ).update(status=WebhookStatus.FAILED, error=_ERASED_NOTE)
    return WebhookDelivery.objects.filter(pk__in=ids).update(body=ERASED)


def _admin_log_erase(
    model: type[Contact] | type[SocialIdentity], ids: list[int], label: str
) -> None:
    """The Django admin's change history names the objects it changed."""
    content_type = ContentType.objects.get_for_model(model)
    for pk in ids:
        LogEntry.objects.filter(content_type=content_type, object_id=str(pk)).update(
            object_repr=f"{label} #{pk}", change_message=""
        )
