"""Outbound approvals: messages held until an approver lets them out, rejects them, or they
expire.

Only two paths put an outbound reply in the send queue (``DeliveryStatus.QUEUED``), and both
pass ``governance.services.outbound_check`` on the way:

- ``reply_submit`` (an agent's reply) and the routing rules' acknowledgements
  (``conversations.routing``) check first; allowed goes to the queue, needs approval is stored
  as ``PENDING_APPROVAL`` with an ``OutboundApproval``, refused stores nothing;
- ``approval_approve`` checks the (possibly edited) text again at the moment of approval, so a
  channel made listen-only or a term banned since cannot slip through.

The API must submit replies with ``reply_submit`` (never ``conversation_reply_create``
directly): it cannot bypass approval. Sending itself claims only queued messages
(``channels_ingest.services.message_send``), so a held or rejected message is never sent.

Texts are not copied into the audit log, which nobody can change or delete: an erasure must be
able to remove them. The audit entry records lengths; the approval keeps the original text.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone

from channels_ingest.models import ChannelAccount
from channels_ingest.tasks import send_message
from conversations.models import Conversation, DeliveryStatus, Message, Notification
from conversations.services import conversation_reply_create, conversation_reply_released
from governance.access import access_of
from governance.audit import audit_record
from governance.models import (
    ApprovalStatus,
    ChannelAccess,
    OutboundApproval,
    PublishingPolicy,
    Role,
)
from governance.policy import policy_approver_ids, policy_for
from governance.roles import role_of
from governance.services import OutboundDecision, Verdict, outbound_check
from scrm.types import AnyUser

EXPIRED_ERROR = "Not approved in time"


class ApprovalError(Exception):
    """Why an approval step cannot be taken, in plain words for the approver."""


class NotAnApprover(ApprovalError):
    """The user may not decide on messages of this channel."""


@dataclass(frozen=True)
class ReplySubmitted:
    decision: OutboundDecision
    message: Message | None = None  # None when refused: nothing is stored
    approval: OutboundApproval | None = None  # set when held for approval


def reply_submit(
    *, conversation: Conversation, author: User, body: str, now: datetime | None = None
) -> ReplySubmitted:
    """An agent's reply through governance: queued and sent if allowed, held for approval if
    the policy says so, refused (nothing stored) otherwise."""
    channel = conversation.channel
    policy = policy_for(channel)
    decision = outbound_check(user=author, channel=channel, text=body, now=now, policy=policy)
    if decision.verdict == Verdict.REFUSED:
        return ReplySubmitted(decision)
    with transaction.atomic():
        if decision.verdict == Verdict.ALLOWED:
            message = conversation_reply_create(
                conversation=conversation, author=author, body=body, at=now
            )
            transaction.on_commit(lambda: send_message.delay(message.pk))
            return ReplySubmitted(decision, message)
        message = conversation_reply_create(
            conversation=conversation,
            author=author,
            body=body,
            at=now,
            delivery_status=DeliveryStatus.PENDING_APPROVAL,
        )
        approval = approval_request(
            message=message,
            requested_by=author,
            reasons=decision.reasons,
            channel=channel,
            policy=policy,
            now=now,
        )
    return ReplySubmitted(decision, message, approval)


@dataclass(frozen=True)
class ReplyRetried:
    decision: OutboundDecision
    queued: bool  # False when refused, or when the reply had not failed


def reply_retry(*, message: Message, user: User) -> ReplyRetried:
    """Send a failed reply again, at an agent's request. Sending again is sending: the same
    checks as a new reply (listen-only, reply rights, the policy); only a failed reply is
    queued again."""
    from channels_ingest.services import message_retry

    decision = outbound_check(user=user, channel=message.channel, text=message.body)
    if not decision.allowed:
        return ReplyRetried(decision, queued=False)
    return ReplyRetried(decision, queued=message_retry(message_id=message.pk))


def approval_request(
    *,
    message: Message,
    requested_by: User | None,
    reasons: list[str],
    channel: ChannelAccount,
    policy: PublishingPolicy | None = None,
    now: datetime | None = None,
) -> OutboundApproval:
    """Hold an outbound message for approval. ``requested_by`` is None for an automatic
    message. The message must not have left yet: a queued one is taken out of the queue."""
    policy = policy if policy is not None else policy_for(channel)
    now = now or timezone.now()
    with transaction.atomic():
        if message.delivery_status != DeliveryStatus.PENDING_APPROVAL:
            held = Message.objects.filter(
                pk=message.pk, delivery_status=DeliveryStatus.QUEUED
            ).update(delivery_status=DeliveryStatus.PENDING_APPROVAL)
            if not held:
                raise ApprovalError("This message is already on its way and cannot be held.")
            message.delivery_status = DeliveryStatus.PENDING_APPROVAL
        approval = OutboundApproval.objects.create(
            message=message,
            requested_by=requested_by,
            reasons=list(reasons),
            levels_required=2 if policy.second_level else 1,
            expires_at=now + timedelta(hours=policy.approval_expiry_hours),
        )
        audit_record(
            action="approval.requested",
            actor=requested_by,
            obj=approval,
            message=message.pk,
            channel=channel.pk,
            reasons=list(reasons),
            levels_required=approval.levels_required,
        )
        _publish("approval.requested", approval_id=approval.pk)
    return approval


def _publish(event: str, *, approval_id: int) -> None:
    from conversations.webhook_events import webhook_event_publish, webhook_subscribed

    if not webhook_subscribed(event):
        return
    fresh = OutboundApproval.objects.select_related("message").get(pk=approval_id)
    data = {
        "approval": {
            "id": fresh.pk,
            "status": fresh.status,
            "reasons": fresh.reasons,
            "message": fresh.message_id,
            "conversation": fresh.message.conversation_id,
            "channel": fresh.message.channel_id,
            "requested_by": fresh.requested_by_id,
            "decided_by": fresh.decided_by_id,
        }
    }
    webhook_event_publish(event=event, items=[(f"{fresh.pk}:{fresh.status}", data)])


# --- Who approves ----------------------------------------------------------------------


def approver_may_decide(
    *, user: AnyUser, channel: ChannelAccount, policy: PublishingPolicy
) -> bool:
    """The policy's named approvers if it names any; otherwise the admins and the managers of
    a team that may reply on the channel (approving is sending)."""
    if not user.is_authenticated:
        return False
    named = policy_approver_ids(policy)
    if named:
        return user.pk in named
    role = role_of(user)
    if role == Role.ADMIN:
        return True
    return (
        role == Role.MANAGER
        and ChannelAccess.objects.filter(
            channel=channel, can_reply=True, team__memberships__user_id=user.pk
        ).exists()
    )


def _approvable(user: AnyUser) -> Q:
    """The approvals whose channel the user may decide on, as a filter evaluated inside the
    caller's query (no query of its own): the same rule as ``approver_may_decide``."""
    if not user.is_authenticated:
        return Q(pk__in=[])
    role = role_of(user)
    channel = OuterRef("message__channel_id")
    named = PublishingPolicy.approvers.through.objects
    own_policy = Exists(PublishingPolicy.objects.filter(channel_id=channel))
    own_named = Exists(named.filter(publishingpolicy__channel_id=channel))
    own_mine = Exists(named.filter(publishingpolicy__channel_id=channel, user_id=user.pk))
    default_named = Exists(named.filter(publishingpolicy__channel__isnull=True))
    default_mine = Exists(named.filter(publishingpolicy__channel__isnull=True, user_id=user.pk))
    if role == Role.ADMIN:
        by_role = Q()
    elif role == Role.MANAGER:
        by_role = Q(
            Exists(
                ChannelAccess.objects.filter(
                    channel_id=channel, can_reply=True, team__memberships__user_id=user.pk
                )
            )
        )
    else:
        by_role = Q(pk__in=[])
    return (own_policy & (own_mine | (~own_named & by_role))) | (
        ~own_policy & (default_mine | (~default_named & by_role))
    )


def is_approver(user: AnyUser) -> bool:
    """Whether the user may open the approvals queue: managers, admins, named approvers."""
    if not user.is_authenticated:
        return False
    access = access_of(user)
    return access.role in (Role.ADMIN, Role.MANAGER) or access.named_approver


def _with_context(approvals: QuerySet[OutboundApproval]) -> QuerySet[OutboundApproval]:
    return approvals.select_related(
        "message__channel",
        "message__conversation__contact",
        "requested_by",
        "first_approved_by",
        "decided_by",
    )


def approvals_pending_for(
    *, user: AnyUser, now: datetime | None = None
) -> QuerySet[OutboundApproval]:
    """What waits for this user's decision, soonest to expire first: on channels they may
    approve, not asked for by them, not already approved by them at the first level."""
    if not user.is_authenticated:
        return OutboundApproval.objects.none()
    return _with_context(
        OutboundApproval.objects.filter(
            _approvable(user), status=ApprovalStatus.PENDING, expires_at__gt=now or timezone.now()
        )
        .exclude(requested_by_id=user.pk)
        .exclude(first_approved_by_id=user.pk)
        .order_by("expires_at", "pk")
    )


def approvals_decided_for(*, user: AnyUser) -> QuerySet[OutboundApproval]:
    """Decisions on the channels the user may approve, newest first."""
    if not user.is_authenticated:
        return OutboundApproval.objects.none()
    return _with_context(
        OutboundApproval.objects.filter(_approvable(user))
        .exclude(status=ApprovalStatus.PENDING)
        .order_by("-decided_at", "-pk")
    )


# --- Decisions -------------------------------------------------------------------------


def _fresh(approval: OutboundApproval) -> OutboundApproval:
    return OutboundApproval.objects.select_related("message__channel", "message__author_user").get(
        pk=approval.pk
    )


def _decidable(approval: OutboundApproval, approver: User, policy: PublishingPolicy) -> None:
    channel = approval.message.channel
    if not approver_may_decide(user=approver, channel=channel, policy=policy):
        raise NotAnApprover(f"You may not approve messages on {channel.name}.")
    if approval.status != ApprovalStatus.PENDING:
        raise ApprovalError(f"This message was already {approval.get_status_display().lower()}.")
    if approval.requested_by_id == approver.pk:
        raise ApprovalError("You asked for this approval: another approver decides.")


def approval_approve(
    *,
    approval: OutboundApproval,
    approver: User,
    body: str | None = None,
    now: datetime | None = None,
    request: HttpRequest | None = None,
) -> OutboundApproval:
    """Approve a held message, as it is or with ``body`` as its new text (the original is
    kept). The text is checked again with the approver as sender: what the policy refuses now
    stays held. With a second level, the first approval is recorded and a different approver
    gives the second. Once fully approved the message is queued and sent, exactly once: the
    approval is claimed with a conditional update, so a double click or two approvers at the
    same moment let it out one time."""
    now = now or timezone.now()
    approval = _fresh(approval)
    message = approval.message
    channel = message.channel
    policy = policy_for(channel)
    _decidable(approval, approver, policy)
    if approval.expires_at <= now:
        raise ApprovalError("It waited too long for approval and has expired.")
    if approval.first_approved_by_id == approver.pk:
        raise ApprovalError("You gave the first approval: a second, different approver is needed.")
    previous = message.body
    text = previous if body is None else body.strip()
    edited = text != previous
    decision = outbound_check(user=approver, channel=channel, text=text, now=now, policy=policy)
    if decision.verdict == Verdict.REFUSED:
        raise ApprovalError("It cannot be sent: " + " ".join(decision.reasons))
    final = approval.levels_required <= 1 or approval.first_approved_by_id is not None
    changes: dict[str, Any] = {}
    if edited:
        changes["original_body"] = approval.original_body or message.body
    if final:
        changes |= {"status": ApprovalStatus.APPROVED, "decided_by": approver, "decided_at": now}
    else:
        changes |= {"first_approved_by": approver, "first_approved_at": now}
    with transaction.atomic():
        claimed = OutboundApproval.objects.filter(
            pk=approval.pk,
            status=ApprovalStatus.PENDING,
            expires_at__gt=now,
            first_approved_by_id=approval.first_approved_by_id,
        ).update(**changes)
        if not claimed:
            raise ApprovalError("Someone decided on this message at the same moment: reload.")
        held = Message.objects.filter(
            pk=message.pk, delivery_status=DeliveryStatus.PENDING_APPROVAL
        )
        if final:
            # Sent now, so it sits in the thread where the customer will see it.
            queued = held.update(
                body=text,
                delivery_status=DeliveryStatus.QUEUED,
                created_at=now,
                received_at=now,
                error="",
            )
            if not queued:
                raise ApprovalError("This message is no longer waiting for approval.")
            message.body = text
            conversation_reply_released(message=message, at=now)
            transaction.on_commit(lambda: send_message.delay(message.pk))
        elif edited:
            held.update(body=text)
        if edited:
            audit_record(
                action="approval.edited",
                actor=approver,
                obj=approval,
                request=request,
                message=message.pk,
                chars_before=len(previous),
                chars_after=len(text),
            )
        audit_record(
            action="approval.approved" if final else "approval.first_approved",
            actor=approver,
            obj=approval,
            request=request,
            message=message.pk,
            channel=channel.pk,
            edited=edited,
            level=2 if approval.levels_required > 1 and final else 1,
        )
        if final:
            _publish("approval.decided", approval_id=approval.pk)
    return _fresh(approval)


def approval_reject(
    *,
    approval: OutboundApproval,
    approver: User,
    note: str,
    now: datetime | None = None,
    request: HttpRequest | None = None,
) -> OutboundApproval:
    """Reject a held message with a note the agent sees on the message and in a
    notification. It is never sent. The note stays with the approval (which an erasure can
    clear), not in the message's error or the audit log."""
    now = now or timezone.now()
    note = note.strip()
    if not note:
        raise ApprovalError("Write a note for the agent: say why it cannot go out.")
    approval = _fresh(approval)
    message = approval.message
    _decidable(approval, approver, policy_for(message.channel))
    name = approver.get_full_name() or approver.get_username()
    with transaction.atomic():
        claimed = OutboundApproval.objects.filter(
            pk=approval.pk, status=ApprovalStatus.PENDING
        ).update(status=ApprovalStatus.REJECTED, decided_by=approver, decided_at=now, note=note)
        if not claimed:
            raise ApprovalError("Someone decided on this message at the same moment: reload.")
        Message.objects.filter(
            pk=message.pk, delivery_status=DeliveryStatus.PENDING_APPROVAL
        ).update(delivery_status=DeliveryStatus.REJECTED, error=f"Not approved by {name}.")
        if approval.requested_by_id is not None:
            Notification.objects.create(
                recipient_id=approval.requested_by_id,
                conversation_id=message.conversation_id,
                actor=approver,
                text=f"Your reply was not approved: {note}"[:300],
                created_at=now,
            )
        audit_record(
            action="approval.rejected",
            actor=approver,
            obj=approval,
            request=request,
            message=message.pk,
            channel=message.channel_id,
            note_chars=len(note),
        )
        _publish("approval.decided", approval_id=approval.pk)
    return _fresh(approval)


def approvals_expire(*, now: datetime | None = None) -> int:
    """Held messages past their deadline expire: never sent, the requester told, and
    ``approval.decided`` published as for a decision. Safe to run twice and alongside
    approvers: each approval is claimed. Returns how many expired."""
    now = now or timezone.now()
    due = list(
        OutboundApproval.objects.filter(status=ApprovalStatus.PENDING, expires_at__lte=now)
        .order_by("expires_at")
        .values_list("pk", "message_id", "message__conversation_id", "requested_by_id")[:1000]
    )
    expired = 0
    for pk, message_id, conversation_id, requester_id in due:
        with transaction.atomic():
            claimed = OutboundApproval.objects.filter(pk=pk, status=ApprovalStatus.PENDING).update(
                status=ApprovalStatus.EXPIRED, decided_at=now
            )
            if not claimed:
                continue
            Message.objects.filter(
                pk=message_id, delivery_status=DeliveryStatus.PENDING_APPROVAL
            ).update(delivery_status=DeliveryStatus.REJECTED, error=EXPIRED_ERROR)
            if requester_id is not None:
                Notification.objects.create(
                    recipient_id=requester_id,
                    conversation_id=conversation_id,
                    text="Your reply was not approved in time and was not sent.",
                    created_at=now,
                )
            audit_record(
                action="approval.expired",
                object_type=OutboundApproval._meta.label_lower,
                object_id=str(pk),
                object_repr=f"Approval of message #{message_id}",
                message=message_id,
            )
            _publish("approval.decided", approval_id=pk)
            expired += 1
    return expired
