"""Retention: message texts and raw payloads older than a channel's policy are anonymised or
deleted. The facts the reports read (conversation rows with their counts, times, statuses,
sentiment and SLA fields, the timeline events, message classification) are kept.

Work goes in batches of ids taken by keyset over an indexed time column, so no run loads a
table; every batch only touches rows not yet done, so a second run finds nothing and a run
killed half-way simply continues the next night.
"""

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Case, Q, QuerySet, Value, When
from django.http import HttpRequest
from django.utils import timezone

from channels_ingest.models import (
    ChannelAccount,
    DeadLetter,
    DeadLetterStatus,
    WebhookDelivery,
    WebhookStatus,
)
from conversations.models import (
    Conversation,
    ConversationEvent,
    DeliveryStatus,
    Escalation,
    EscalationStatus,
    EventKind,
    Message,
    Notification,
    WebhookCall,
    WebhookCallStatus,
)
from governance.audit import audit_record
from governance.models import OutboundApproval, RetentionAction, RetentionPolicy, RetentionRun
from scrm.types import AnyUser

# What stands where a removed text was; kept short so it also fits CharFields.
REMOVED = "[removed by retention]"
BATCH_SIZE = 1000
# The longest range of the reports page (kpis.views.RANGES). Messages are counted there, so
# deleting one inside it would change a past report: a delete policy never reaches closer.
REPORTS_LONGEST_RANGE_DAYS = 90
# Outbound messages still on their way keep their text until they are sent or given up.
_IN_FLIGHT = (DeliveryStatus.PENDING_APPROVAL, DeliveryStatus.QUEUED, DeliveryStatus.SENDING)


class RetentionPolicyError(ValueError):
    """The policy cannot be saved as asked; the message says why."""


@dataclass
class RetentionCounts:
    """What one run changed on one channel. ``messages`` are messages anonymised or deleted;
    the rest are the other texts and payloads, reported together as the run's payloads."""

    messages: int = 0
    conversations: int = 0
    notifications: int = 0
    escalations: int = 0
    dead_letters: int = 0
    webhook_deliveries: int = 0
    webhook_calls: int = 0

    @property
    def payloads(self) -> int:
        return sum(asdict(self).values()) - self.messages


@dataclass
class _Plan:
    channel: ChannelAccount | None
    policy: RetentionPolicy
    cutoff: datetime
    run: RetentionRun
    counts: RetentionCounts = field(default_factory=RetentionCounts)


def policy_cutoff(*, policy: RetentionPolicy, now: datetime) -> datetime:
    """Texts created before this moment go. A delete policy keeps at least the reports'
    longest range, whatever it says (the settings page refuses less)."""
    days = policy.keep_days
    if policy.action == RetentionAction.DELETE:
        days = max(days, REPORTS_LONGEST_RANGE_DAYS)
    return now - timedelta(days=days)


def policies_by_channel() -> tuple[RetentionPolicy | None, dict[int, RetentionPolicy]]:
    """The default policy (or None) and each channel's own."""
    default = None
    own: dict[int, RetentionPolicy] = {}
    for policy in RetentionPolicy.objects.all():
        if policy.channel_id is None:
            default = policy
        else:
            own[policy.channel_id] = policy
    return default, own


def retention_apply(
    *,
    now: datetime | None = None,
    actor: AnyUser | None = None,
    request: HttpRequest | None = None,
) -> list[RetentionRun]:
    """Apply every channel's policy (its own, else the default; none keeps everything, and an
    inactive policy of its own keeps everything on that channel). One run row and one audit
    entry per channel; payloads of deleted channels follow the default policy."""
    now = now or timezone.now()
    default, own = policies_by_channel()
    plans: list[_Plan] = []
    for channel in ChannelAccount.objects.order_by("pk"):
        policy = own.get(channel.pk, default)
        if policy is not None and policy.is_active:
            plans.append(_plan(channel, policy, now))
    orphans = DeadLetter.objects.filter(channel__isnull=True)
    if default is not None and default.is_active and orphans.exists():
        plans.append(_plan(None, default, now))

    for plan in plans:
        if plan.channel is not None:
            _channel_apply(plan, now)
        plan.counts.dead_letters += _dead_letters_scrub(
            DeadLetter.objects.filter(channel=plan.channel, created_at__lt=plan.cutoff),
            now=now,
        )
    _webhook_calls_scrub({p.channel.pk: p for p in plans if p.channel is not None})

    for plan in plans:
        plan.run.messages = plan.counts.messages
        plan.run.payloads = plan.counts.payloads
        plan.run.finished_at = timezone.now()
        plan.run.save(update_fields=["messages", "payloads", "finished_at"])
        audit_record(
            action="retention.applied",
            actor=actor,
            obj=plan.run,
            request=request,
            channel=plan.channel.pk if plan.channel else None,
            policy=plan.policy.pk,
            action_taken=plan.policy.action,
            cutoff=plan.cutoff.isoformat(),
            **asdict(plan.counts),
        )
    return [plan.run for plan in plans]


def _plan(channel: ChannelAccount | None, policy: RetentionPolicy, now: datetime) -> _Plan:
    cutoff = policy_cutoff(policy=policy, now=now)
    # Recorded before the work, so a run that died half-way shows as unfinished.
    run = RetentionRun.objects.create(channel=channel, action=policy.action, cutoff=cutoff)
    return _Plan(channel=channel, policy=policy, cutoff=cutoff, run=run)


def _batches(queryset: QuerySet[Any], time_field: str) -> Iterator[list[int]]:
    """Ids of the rows, oldest first, BATCH_SIZE at a time, by keyset on (time, id): each query
    is an index range starting where the previous one ended, never an OFFSET or a full load."""
    last: tuple[datetime, int] | None = None
    while True:
        page = queryset
        if last is not None:
            page = page.filter(
                Q(**{f"{time_field}__gt": last[0]}) | Q(**{time_field: last[0], "pk__gt": last[1]})
            )
        rows = list(page.order_by(time_field, "pk").values_list(time_field, "pk")[:BATCH_SIZE])
        if not rows:
            return
        yield [pk for _, pk in rows]
        last = rows[-1]


def _channel_apply(plan: _Plan, now: datetime) -> None:
    channel, cutoff, counts = plan.channel, plan.cutoff, plan.counts
    messages = Message.objects.filter(channel=channel, created_at__lt=cutoff).exclude(
        delivery_status__in=_IN_FLIGHT
    )
    if plan.policy.action == RetentionAction.DELETE:
        for ids in _batches(messages, "created_at"):
            with transaction.atomic():
                # Their approvals go with them (a cascade); conversation rows, counts and
                # events stay, so reports and the conversation page hold.
                _, deleted = Message.objects.filter(pk__in=ids).delete()
            counts.messages += deleted.get(Message._meta.label, 0)
    else:
        counts.messages += _messages_anonymise(
            messages.filter(~Q(body=REMOVED) | ~Q(raw={})), marker=REMOVED
        )

    # A conversation's subject and preview are message text: they go once its last message has.
    counts.conversations += _update_in_batches(
        Conversation.objects.filter(channel=channel, last_message_at__lt=cutoff).filter(
            ~Q(subject="") | ~Q(last_message_preview="")
        ),
        "last_message_at",
        subject="",
        last_message_preview="",
    )
    counts.notifications += _update_in_batches(
        Notification.objects.filter(conversation__channel=channel, created_at__lt=cutoff).exclude(
            text=REMOVED
        ),
        "created_at",
        text=REMOVED,
    )
    counts.escalations += _escalations_scrub(
        Escalation.objects.filter(
            conversation__channel=channel, created_at__lt=cutoff, status=EscalationStatus.CLOSED
        ),
        marker=REMOVED,
    )
    _escalation_events_scrub(
        ConversationEvent.objects.filter(
            conversation__channel=channel, kind=EventKind.ESCALATED, created_at__lt=cutoff
        ),
        marker=REMOVED,
    )
    # Bodies still to be processed are kept: they would be lost, not anonymised.
    counts.webhook_deliveries += _update_in_batches(
        WebhookDelivery.objects.filter(
            channel=channel,
            received_at__lt=cutoff,
            status__in=(WebhookStatus.PROCESSED, WebhookStatus.FAILED),
        ).exclude(body=REMOVED),
        "received_at",
        body=REMOVED,
    )


def _update_in_batches(queryset: QuerySet[Any], time_field: str, **values: Any) -> int:
    """Set ``values`` on the rows of ``queryset`` a batch at a time; the queryset must leave out
    rows already done, so a row is counted once however often this runs."""
    changed = 0
    for ids in _batches(queryset, time_field):
        changed += queryset.filter(pk__in=ids).update(**values)
    return changed


def _messages_anonymise(queryset: QuerySet[Message], *, marker: str) -> int:
    """Replace the texts and raw payloads of messages; their classification (language,
    sentiment, keywords), direction, kind, times and delivery facts stay for the reports.
    An edited reply's original text, kept with its approval, goes too."""
    changed = 0
    for ids in _batches(queryset, "created_at"):
        with transaction.atomic():
            changed += queryset.filter(pk__in=ids).update(body=marker, raw={})
            OutboundApproval.objects.filter(message_id__in=ids).exclude(original_body="").update(
                original_body=""
            )
    return changed


def _escalations_scrub(queryset: QuerySet[Escalation], *, marker: str) -> int:
    """Reasons and answers are free text about the customer's matter; who, when, where to and
    how it ended stay."""
    texts = {
        name: Case(When(**{name: ""}, then=Value("")), default=Value(marker))
        for name in ("reason", "answer")
    }
    return _update_in_batches(
        queryset.filter(~Q(reason__in=("", marker)) | ~Q(answer__in=("", marker))),
        "created_at",
        **texts,
    )


def _escalation_events_scrub(queryset: QuerySet[ConversationEvent], *, marker: str) -> int:
    """The escalation reason copied onto the timeline."""
    changed = 0
    for ids in _batches(queryset, "created_at"):
        events = [
            event
            for event in ConversationEvent.objects.filter(pk__in=ids).only("data")
            if event.data.get("reason") not in (None, "", marker)
        ]
        for event in events:
            event.data = {**event.data, "reason": marker}
        ConversationEvent.objects.bulk_update(events, ["data"])
        changed += len(events)
    return changed


def _dead_letters_scrub(queryset: QuerySet[DeadLetter], *, now: datetime) -> int:
    """A dead letter without its payload cannot be retried: one still new is discarded."""
    changed = 0
    for ids in _batches(queryset.exclude(raw=REMOVED), "created_at"):
        with transaction.atomic():
            DeadLetter.objects.filter(pk__in=ids, status=DeadLetterStatus.NEW).update(
                status=DeadLetterStatus.DISCARDED, resolved_at=now
            )
            changed += (
                DeadLetter.objects.filter(pk__in=ids).exclude(raw=REMOVED).update(raw=REMOVED)
            )
    return changed


def webhook_call_scrubbed(*, conversation_id: int | None, marker: str) -> dict[str, Any]:
    """What is left of a call's payload: the conversation it was about, nothing said in it."""
    return {"removed": marker, "conversation": {"id": conversation_id}}


def _conversation_id(payload: Any) -> int | None:
    conversation = payload.get("conversation") if isinstance(payload, dict) else None
    value = conversation.get("id") if isinstance(conversation, dict) else None
    return value if isinstance(value, int) else None


def _webhook_calls_scrub(plans: dict[int, _Plan]) -> None:
    """Calls to outside systems carry copies of subjects and messages. Each goes with its
    conversation's channel's cutoff; calls still to be delivered are left alone."""
    if not plans:
        return
    latest = max(plan.cutoff for plan in plans.values())
    candidates = (
        WebhookCall.objects.filter(created_at__lt=latest)
        .exclude(status=WebhookCallStatus.PENDING)
        .exclude(payload__has_key="removed")
    )
    for ids in _batches(candidates, "created_at"):
        calls = list(WebhookCall.objects.filter(pk__in=ids).only("payload", "created_at"))
        about = {call.pk: _conversation_id(call.payload) for call in calls}
        channel_of = dict(
            Conversation.objects.filter(pk__in={c for c in about.values() if c}).values_list(
                "pk", "channel_id"
            )
        )
        changed: list[WebhookCall] = []
        for call in calls:
            conversation_id = about[call.pk]
            plan = plans.get(channel_of.get(conversation_id or 0, 0))
            if plan is None or call.created_at >= plan.cutoff:
                continue
            call.payload = webhook_call_scrubbed(conversation_id=conversation_id, marker=REMOVED)
            changed.append(call)
            plan.counts.webhook_calls += 1
        WebhookCall.objects.bulk_update(changed, ["payload"])


# --- Policies ---------------------------------------------------------------------------


def _policy_values(policy: RetentionPolicy | None) -> dict[str, Any]:
    if policy is None:
        return {}
    return {"keep_days": policy.keep_days, "action": policy.action, "is_active": policy.is_active}


def retention_policy_save(
    *,
    channel: ChannelAccount | None,
    keep_days: int,
    action: str,
    is_active: bool,
    actor: AnyUser,
    request: HttpRequest | None = None,
) -> RetentionPolicy:
    """Set the default policy (``channel`` None) or a channel's own; audited."""
    if action not in RetentionAction.values:
        raise RetentionPolicyError("Choose anonymise or delete.")
    if keep_days < 1:
        raise RetentionPolicyError("Keep messages for at least one day.")
    if action == RetentionAction.DELETE and keep_days < REPORTS_LONGEST_RANGE_DAYS:
        raise RetentionPolicyError(
            f"Deleting needs at least {REPORTS_LONGEST_RANGE_DAYS} days: the reports count "
            "messages that far back. Anonymise sooner instead; it keeps the counts."
        )
    with transaction.atomic():
        policy = RetentionPolicy.objects.select_for_update().filter(channel=channel).first()
        before = _policy_values(policy)
        if policy is None:
            policy = RetentionPolicy(channel=channel)
        policy.keep_days, policy.action, policy.is_active = keep_days, action, is_active
        policy.save()
        after = _policy_values(policy)
        if before != after:
            audit_record(
                action="retention_policy.updated" if before else "retention_policy.created",
                actor=actor,
                obj=policy,
                request=request,
                before=before,
                after=after,
            )
    return policy


def retention_policy_remove(
    *, channel: ChannelAccount, actor: AnyUser, request: HttpRequest | None = None
) -> bool:
    """Drop a channel's own policy: the default applies to it again. Whether there was one."""
    policy = RetentionPolicy.objects.filter(channel=channel).first()
    if policy is None:
        return False
    audit_record(
        action="retention_policy.deleted",
        actor=actor,
        obj=policy,
        request=request,
        before=_policy_values(policy),
    )
    policy.delete()
    return True


@dataclass(frozen=True)
class ChannelRetention:
    channel: ChannelAccount
    policy: RetentionPolicy | None  # its own
    effective: RetentionPolicy | None  # what applies

    @property
    def keeps_everything(self) -> bool:
        return self.effective is None or not self.effective.is_active


@dataclass(frozen=True)
class RetentionSettings:
    default: RetentionPolicy | None
    channels: list[ChannelRetention]
    runs: list[RetentionRun]


def retention_settings(*, runs: int = 30) -> RetentionSettings:
    """What the settings page shows: the policies and the latest runs, in three queries."""
    default, own = policies_by_channel()
    channels = [
        ChannelRetention(channel=c, policy=own.get(c.pk), effective=own.get(c.pk, default))
        for c in ChannelAccount.objects.order_by("name")
    ]
    latest = RetentionRun.objects.select_related("channel").order_by("-started_at", "-pk")
    return RetentionSettings(default=default, channels=channels, runs=list(latest[:runs]))
