"""The escalation workflow: a conversation handed to a department or a person, moved up its
path, answered, and taken back by support.

Every change happens with the conversation locked (``select_for_update``) and records a
ConversationEvent. Departments in the app get the conversation in their team's queue;
departments outside it get an email or a signed webhook carrying a link back
(``escalation_answer_url``) where they answer without an account.
"""

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core import signing
from django.db import transaction
from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone

from conversations.models import (
    Conversation,
    ConversationEvent,
    DeliveryStatus,
    Department,
    DepartmentDelivery,
    Direction,
    Escalation,
    EscalationLevel,
    EscalationOutcome,
    EscalationPath,
    EscalationStatus,
    EscalationTrigger,
    EventKind,
    Message,
    MessageKind,
    Notification,
    Status,
)
from conversations.services import _record
from conversations.sla import SLA_FIELDS, SlaSetup, sla_on_status
from conversations.webhook_calls import webhook_call_enqueue
from governance.access import access_of
from governance.audit import audit_record
from governance.models import TeamMembership
from governance.roles import is_manager_or_admin
from scrm.types import AnyUser, user_id

ANSWER_SALT = "escalation-answer"
ANSWER_LINK_MAX_AGE = timedelta(days=30)
# How much of the conversation a department is shown with the request.
LAST_MESSAGES = 5

# What an answer says about how the matter ends. Empty: support answers the customer in the
# channel and resolves the conversation as usual.
ANSWER_OUTCOMES = [
    ("", "Answer — support replies in the channel"),
    (EscalationOutcome.RESOLVED_BY_DEPARTMENT, "Resolved by the department"),
    (EscalationOutcome.MOVED_OFFLINE, "Moved to phone or email"),
]
_ANSWER_OUTCOME_VALUES = frozenset(value for value, _ in ANSWER_OUTCOMES)


class EscalationMoved(ValueError):
    """An answer for a level the escalation has left: the next level is asked now."""


# --- Opening and raising ----------------------------------------------------------------


@transaction.atomic
def escalation_open(
    *,
    conversation: Conversation,
    trigger: str,
    actor: User | None,
    reason: str = "",
    path: EscalationPath | None = None,
    department: Department | None = None,
    user: User | None = None,
    rule_name: str = "",
) -> Escalation:
    """Hand a conversation to the first level of a path, a department, or a person.

    A conversation already escalated moves up its path instead when an SLA breach asks again
    with that path (or with no target); any other repeat is refused, as is another target.
    """
    if trigger not in EscalationTrigger.values:
        raise ValueError(f"Unknown escalation trigger {trigger!r}.")
    if sum(target is not None for target in (path, department, user)) > 1:
        raise ValueError("Escalate to one path, department or person at a time.")
    conversation = _lock(conversation.pk)
    current = _open_escalation(conversation.pk)
    if current is not None:
        if (
            trigger == EscalationTrigger.SLA
            and department is None
            and user is None
            and path in (None, current.path)
        ):
            # Breach after breach climbs the path. An agent asking again (a second click, a
            # page loaded before the first escalation) raises only by the raise action.
            return _raise(
                conversation, current, actor=actor, reason=reason, trigger=trigger, rule=rule_name
            )
        if current.path is not None and path == current.path:
            raise ValueError(
                f"This conversation is already escalated along {current.path}, at level "
                f"{current.level + 1} ({current.target_name}): raise it to go further."
            )
        raise ValueError(
            f"This conversation is already escalated to {current.target_name}: "
            "raise that escalation or take it back first."
        )
    if path is None and department is None and user is None:
        raise ValueError("Choose an escalation path, a department or a person to escalate to.")
    if conversation.status in (Status.RESOLVED, Status.CLOSED):
        raise ValueError(
            f"This conversation is {conversation.get_status_display().lower()}: "
            "reopen it before escalating."
        )
    if path is not None:
        levels = _levels(path)
        if not levels:
            raise ValueError(f"The escalation path {path} has no levels yet.")
        department, user = levels[0].department, levels[0].user
    _check_reachable(department=department, user=user)
    escalation = Escalation.objects.create(
        conversation=conversation,
        path=path,
        level=0,
        department=department,
        user=user,
        trigger=trigger,
        reason=reason.strip(),
        created_by=actor,
        previous_assignee_id=conversation.assignee_id,
        previous_team_id=conversation.team_id,
    )
    _hand_over(
        conversation,
        escalation,
        actor=actor,
        trigger=trigger,
        reason=escalation.reason,
        rule=rule_name,
    )
    _audit(escalation, "escalation.opened", actor=actor, trigger=trigger, rule=rule_name)
    return escalation


@transaction.atomic
def escalation_raise(
    *,
    escalation: Escalation,
    actor: User | None,
    reason: str = "",
    from_level: int | None = None,
) -> Escalation:
    """Move an open escalation to the next level of its path. ``from_level``: the level the
    one raising saw (0 for the first); raised since, by a second click, a colleague or the
    SLA, it goes no further."""
    conversation = _lock(escalation.conversation_id)
    escalation = _fresh(escalation.pk)
    if (
        from_level is not None
        and escalation.status == EscalationStatus.OPEN
        and escalation.level != from_level
    ):
        raise ValueError(
            f"This escalation was raised meanwhile: it is at level {escalation.level + 1} "
            f"({escalation.target_name}) now."
        )
    trigger = EscalationTrigger.AGENT if actor is not None else escalation.trigger
    return _raise(conversation, escalation, actor=actor, reason=reason, trigger=trigger, rule="")


def _raise(
    conversation: Conversation,
    escalation: Escalation,
    *,
    actor: User | None,
    reason: str,
    trigger: str,
    rule: str,
) -> Escalation:
    if escalation.status != EscalationStatus.OPEN:
        raise ValueError("Only an open escalation moves up a level.")
    path = escalation.path
    if path is None:
        raise ValueError(
            f"The escalation to {escalation.target_name} is not on a path: there is no next level."
        )
    levels = _levels(path)
    following = escalation.level + 1
    if following >= len(levels):
        raise ValueError(f"This escalation is already at the last level of {path}.")
    level = levels[following]
    _check_reachable(department=level.department, user=level.user)
    if _support_keeps(escalation):
        # While a department outside the app worked on it, support had the conversation, and
        # may have handed it on: whoever has it now is whom it goes back to.
        escalation.previous_assignee_id = conversation.assignee_id
        escalation.previous_team_id = conversation.team_id
    reason = reason.strip()
    escalation.level = following
    escalation.department = level.department
    escalation.user = level.user
    if reason:
        # The next level reads the whole story: the first reason and why it went further.
        escalation.reason = f"{escalation.reason}\n\nLevel {following + 1}: {reason}".strip()
    escalation.save(
        update_fields=[
            "level",
            "department",
            "user",
            "reason",
            "previous_assignee",
            "previous_team",
        ]
    )
    _hand_over(conversation, escalation, actor=actor, trigger=trigger, reason=reason, rule=rule)
    _audit(escalation, "escalation.raised", actor=actor, trigger=trigger, rule=rule)
    return escalation


def _support_keeps(escalation: Escalation) -> bool:
    """Whether support keeps the conversation at the escalation's level: a department outside
    the app, which answers by email or webhook (see ``_hand_over``)."""
    department = escalation.department
    return escalation.user_id is None and (
        department is None or department.delivery != DepartmentDelivery.IN_APP
    )


def _hand_over(
    conversation: Conversation,
    escalation: Escalation,
    *,
    actor: User | None,
    trigger: str,
    reason: str,
    rule: str,
) -> None:
    """Put the conversation where the escalation's target works and tell the target."""
    department = escalation.department
    if department is not None and department.delivery == DepartmentDelivery.IN_APP:
        # The department's queue: its team, nobody in particular.
        team_id, assignee_id = department.team_id, None
    elif escalation.user_id is not None:
        team_id, assignee_id = escalation.previous_team_id, escalation.user_id
    else:
        # A department outside the app: support keeps the conversation while it waits.
        team_id, assignee_id = escalation.previous_team_id, escalation.previous_assignee_id
    previous_status = conversation.status
    conversation.team_id = team_id
    conversation.assignee_id = assignee_id
    conversation.status = Status.ESCALATED
    # Escalated conversations wait on a department, not on a snooze; the customer still
    # waits on us, so a clock paused while pending runs again.
    conversation.snoozed_until = None
    sla_on_status(conversation, setup=SlaSetup.load(), previous=previous_status, at=timezone.now())
    conversation.save(
        update_fields=["team", "assignee", "status", "snoozed_until", *SLA_FIELDS, "updated_at"]
    )
    now = timezone.now()
    if previous_status != Status.ESCALATED:
        _record(
            conversation,
            EventKind.STATUS_CHANGED,
            actor=actor,
            at=now,
            previous=previous_status,
            status=Status.ESCALATED,
        )
    _record(
        conversation,
        EventKind.ESCALATED,
        actor=actor,
        at=now,
        escalation=escalation.pk,
        target=escalation.target_name,
        trigger=trigger,
        reason=reason,
        rule=rule,
        path=escalation.path.name if escalation.path else None,
        level=escalation.level,
    )
    _reach(conversation, escalation, actor=actor, trigger=trigger)


def _reach(
    conversation: Conversation, escalation: Escalation, *, actor: User | None, trigger: str
) -> None:
    """Tell the target: notifications in the app, an email, or a webhook call, each saying
    what brought it there now (``trigger``: a raise may come from another than the opening)."""
    department = escalation.department
    if department is None:
        recipients = [escalation.user_id] if escalation.user_id else []
    elif department.delivery == DepartmentDelivery.IN_APP:
        recipients = (
            list(
                TeamMembership.objects.filter(
                    team_id=department.team_id, user__is_active=True
                ).values_list("user_id", flat=True)
            )
            if department.team_id is not None
            else []
        )
    elif department.delivery == DepartmentDelivery.EMAIL:
        _send_email(escalation, actor=actor, trigger=trigger)
        return
    else:
        _call_webhook(conversation, escalation, actor=actor, trigger=trigger)
        return
    who = _who(actor, trigger)
    text = f"{who} escalated this conversation to {escalation.target_name}"
    if escalation.reason:
        text += f": {escalation.reason}"
    Notification.objects.bulk_create(
        Notification(recipient_id=pk, conversation=conversation, actor=actor, text=text[:300])
        for pk in dict.fromkeys(recipients)
        if pk != (actor.pk if actor else None)
    )


def _send_email(escalation: Escalation, *, actor: User | None, trigger: str) -> None:
    """The email is written when a worker sends it, from what is stored then: the queued task
    carries ids only, so an erasure in between leaves nothing personal waiting in the queue.
    It names the level it asks, so an email still queued when the escalation moves on is not
    sent to the next level's department (which gets its own)."""
    from conversations.tasks import send_escalation_email

    actor_id = actor.pk if actor is not None else None
    level = escalation.level
    transaction.on_commit(
        lambda: send_escalation_email.delay(escalation.pk, actor_id, level, trigger)
    )


def escalation_email(
    *,
    escalation_id: int,
    actor_id: int | None,
    level: int | None = None,
    trigger: str | None = None,
) -> tuple[str, str, str] | None:
    """Subject, body and address of the email to an email department, or None when there is
    nothing to ask any more: answered or taken back before it went out, or moved on from
    ``level`` (its link would not work)."""
    found = Escalation.objects.select_related(
        "department", "path", "conversation__channel", "conversation__contact"
    ).filter(pk=escalation_id, status=EscalationStatus.OPEN)
    if level is not None:
        found = found.filter(level=level)
    escalation = found.first()
    department = escalation.department if escalation is not None else None
    if escalation is None or department is None or not department.email:
        return None
    conversation = escalation.conversation
    actor = User.objects.filter(pk=actor_id).first() if actor_id is not None else None
    brief = escalation_brief(escalation=escalation, conversation=conversation)
    lines = [
        f"{_who(actor, trigger or escalation.trigger)} escalated a customer conversation to "
        f"{department.name} and asks for your help.",
        "",
        f"Why: {escalation.reason or '(no reason given)'}",
        "",
        f"Customer: {brief['contact']['name']}",
    ]
    handles = ", ".join(f"@{h['handle']} ({h['platform']})" for h in brief["contact"]["handles"])
    if handles:
        lines.append(f"Accounts: {handles}")
    lines += [f"Channel: {conversation.channel.name}", "", "Last messages:"]
    for message in brief["messages"]:
        at = timezone.localtime(message["at"])
        lines.append(f"  {at:%Y-%m-%d %H:%M} · {message['author']}: {message['body']}")
    if not brief["messages"]:
        lines.append("  (none)")
    lines += [
        "",
        f"Answer here (the link works once, for {ANSWER_LINK_MAX_AGE.days} days):",
        brief["answer_url"],
    ]
    subject = f"Escalation from support: {brief['contact']['name']}"[:150]
    body = "\n".join(lines)
    return subject, body, department.email


def _call_webhook(
    conversation: Conversation, escalation: Escalation, *, actor: User | None, trigger: str
) -> None:
    department = escalation.department
    assert department is not None and department.endpoint is not None
    brief = escalation_brief(escalation=escalation, conversation=conversation)
    payload = {
        "event": "escalation.opened",
        "escalation": {
            "id": escalation.pk,
            "level": escalation.level,
            "path": escalation.path.name if escalation.path else None,
            "department": department.name,
            "trigger": trigger,
            "reason": escalation.reason,
            "escalated_by": _who(actor, trigger),
            "created_at": escalation.created_at.isoformat(),
        },
        "conversation": {
            "id": conversation.pk,
            "subject": conversation.subject,
            "channel": conversation.channel.name,
            "priority": conversation.priority,
        },
        "contact": brief["contact"],
        "messages": [{**m, "at": m["at"].isoformat()} for m in brief["messages"]],
        "answer_url": brief["answer_url"],
    }
    webhook_call_enqueue(
        endpoint=department.endpoint,
        event="escalation.opened",
        payload=payload,
        key=f"escalation:{escalation.pk}:{escalation.level}",
    )


# --- Answering, taking back, settling ---------------------------------------------------


@transaction.atomic
def escalation_answer(
    *,
    escalation: Escalation,
    answer: str,
    outcome: str,
    answered_by: User | None,
    answered_by_name: str = "",
    level: int | None = None,
) -> Escalation:
    """The department's answer: stored, added to the conversation as an internal note, and the
    conversation goes back to whoever had it before. An outcome other than "" closes the
    escalation (the department settled the matter itself). ``level``: the level the answer
    was given for (its link's, or the one checked in the app); raised since, the answer is
    refused: the next level is asked now, not the one answering."""
    if outcome not in _ANSWER_OUTCOME_VALUES:
        raise ValueError(f"Unknown outcome {outcome!r}.")
    answer = answer.strip()
    if not answer:
        raise ValueError("Write an answer for support.")
    conversation = _lock(escalation.conversation_id)
    escalation = _fresh(escalation.pk)
    if escalation.status != EscalationStatus.OPEN:
        if escalation.answer:
            raise ValueError("This escalation was already answered.")
        raise ValueError("This escalation was closed: support took the conversation back.")
    if level is not None and escalation.level != level:
        raise EscalationMoved(
            f"This escalation was raised meanwhile: {escalation.target_name} answers it now."
        )
    now = timezone.now()
    target = escalation.target_name
    name = answered_by_name.strip() or (_name(answered_by) if answered_by else "")
    escalation.answer = answer
    escalation.outcome = outcome
    escalation.answered_by = answered_by
    escalation.answered_by_name = name[:200]
    escalation.returned_at = now
    if outcome:
        escalation.status = EscalationStatus.CLOSED
        escalation.closed_at = now
    else:
        escalation.status = EscalationStatus.RETURNED
    escalation.save(
        update_fields=[
            "answer",
            "outcome",
            "answered_by",
            "answered_by_name",
            "returned_at",
            "status",
            "closed_at",
        ]
    )
    _give_back(conversation, escalation, actor=answered_by, at=now)
    signed = f" ({name})" if name and name != target else ""
    note = Message.objects.create(
        conversation=conversation,
        channel_id=conversation.channel_id,
        direction=Direction.OUT,
        kind=MessageKind.NOTE,
        author_user=answered_by,
        body=f"Answer from {target}{signed}: {answer}",
        created_at=now,
        received_at=now,
        delivery_status=DeliveryStatus.SENT,
    )
    if conversation.assignee_id not in (None, _pk(answered_by)):
        Notification.objects.create(
            recipient_id=conversation.assignee_id,
            conversation=conversation,
            actor=answered_by,
            text=f"{target} answered the escalation: {answer}"[:300],
            created_at=now,
        )
    _record(
        conversation,
        EventKind.DEESCALATED,
        actor=answered_by,
        at=now,
        escalation=escalation.pk,
        target=target,
        outcome=outcome,
        answered_by=name,
        message_id=note.pk,
    )
    _audit(escalation, "escalation.answered", actor=answered_by, outcome=outcome, by=name)
    return escalation


@transaction.atomic
def escalation_withdraw(*, escalation: Escalation, actor: User | None) -> Escalation:
    """Support takes the conversation back before the department answered."""
    conversation = _lock(escalation.conversation_id)
    escalation = _fresh(escalation.pk)
    if escalation.status != EscalationStatus.OPEN:
        raise ValueError("Only an open escalation can be taken back.")
    now = timezone.now()
    escalation.outcome = EscalationOutcome.ABANDONED
    escalation.status = EscalationStatus.CLOSED
    escalation.closed_at = now
    escalation.save(update_fields=["outcome", "status", "closed_at"])
    _give_back(conversation, escalation, actor=actor, at=now)
    _record(
        conversation,
        EventKind.ESCALATION_CLOSED,
        actor=actor,
        at=now,
        escalation=escalation.pk,
        target=escalation.target_name,
        outcome=EscalationOutcome.ABANDONED,
    )
    _audit(escalation, "escalation.withdrawn", actor=actor)
    return escalation


@transaction.atomic
def escalations_settle(
    *, conversation_id: int, status: str, at: datetime, actor: User | None = None
) -> int:
    """The conversation was resolved or closed (by ``actor``, or by the system): escalations
    it still had end with it, each in the audit log. An answered one counts as resolved in the
    channel; one still waiting for its department is abandoned. Returns how many ended; a
    fixed number of queries and one audit entry for each that ended."""
    if status not in (Status.RESOLVED, Status.CLOSED):
        return 0
    list(
        Conversation.objects.select_for_update()
        .filter(pk=conversation_id)
        .values_list("pk", flat=True)
    )
    pending = list(
        Escalation.objects.filter(conversation_id=conversation_id)
        .filter(Q(status=EscalationStatus.OPEN) | Q(status=EscalationStatus.RETURNED, outcome=""))
        .select_related("department", "user")
    )
    for escalation in pending:
        if escalation.status == EscalationStatus.OPEN:
            escalation.outcome = EscalationOutcome.ABANDONED
        else:
            # Answered, and support then ended the conversation in the channel.
            escalation.outcome = EscalationOutcome.RESOLVED_IN_CHANNEL
        escalation.status = EscalationStatus.CLOSED
        escalation.closed_at = at
    Escalation.objects.bulk_update(pending, ["outcome", "status", "closed_at"])
    ConversationEvent.objects.bulk_create(
        ConversationEvent(
            conversation_id=conversation_id,
            kind=EventKind.ESCALATION_CLOSED,
            created_at=at,
            data={
                "escalation": escalation.pk,
                "target": escalation.target_name,
                "outcome": escalation.outcome,
                "conversation_status": status,
            },
        )
        for escalation in pending
    )
    for escalation in pending:
        _audit(
            escalation,
            "escalation.closed",
            actor=actor,
            outcome=escalation.outcome,
            conversation_status=status,
        )
    return len(pending)


def _audit(escalation: Escalation, action: str, *, actor: User | None, **data: Any) -> None:
    audit_record(
        action=action,
        actor=actor,
        obj=escalation,
        conversation=escalation.conversation_id,
        target=escalation.target_name,
        level=escalation.level,
        **data,
    )


def _give_back(
    conversation: Conversation, escalation: Escalation, *, actor: User | None, at: datetime
) -> None:
    """Back to whoever had the conversation before the escalation, as open (unless someone
    moved it on meanwhile, say to pending). Back only from where the escalation put it: a
    conversation support handed to someone else while it waited (an outside department's
    escalation leaves it with support) stays with them."""
    previous_status = conversation.status
    if _where_escalation_put(conversation, escalation):
        conversation.assignee_id = escalation.previous_assignee_id
        conversation.team_id = escalation.previous_team_id
    if previous_status == Status.ESCALATED:
        conversation.status = Status.OPEN
    sla_on_status(conversation, setup=SlaSetup.load(), previous=previous_status, at=at)
    conversation.save(update_fields=["assignee", "team", "status", *SLA_FIELDS, "updated_at"])
    if previous_status != conversation.status:
        _record(
            conversation,
            EventKind.STATUS_CHANGED,
            actor=actor,
            at=at,
            previous=previous_status,
            status=conversation.status,
        )


def _where_escalation_put(conversation: Conversation, escalation: Escalation) -> bool:
    """Whether the conversation is still where the escalation's current level put it (see
    ``_hand_over``): in the in-app department's team (whoever there took it), with the person
    escalated to, or with whom support had it."""
    department = escalation.department
    if department is not None and department.delivery == DepartmentDelivery.IN_APP:
        return conversation.team_id == department.team_id
    if escalation.user_id is not None:
        return conversation.assignee_id == escalation.user_id
    return (conversation.assignee_id, conversation.team_id) == (
        escalation.previous_assignee_id,
        escalation.previous_team_id,
    )


# --- The link back ----------------------------------------------------------------------


def escalation_answer_url(*, escalation: Escalation) -> str:
    """The absolute, signed link where the department answers without an account. It names
    the level too: once the escalation moves up, the previous level's link stops working."""
    token = signing.dumps({"e": escalation.pk, "l": escalation.level}, salt=ANSWER_SALT)
    base = (getattr(settings, "SITE_URL", "") or "http://localhost:8000").rstrip("/")
    return base + reverse("escalations:answer_link", kwargs={"token": token})


def escalation_from_token(token: str, *, max_age: timedelta = ANSWER_LINK_MAX_AGE) -> Escalation:
    """The escalation a link back points at. Raises ``signing.BadSignature`` (or its subclass
    ``SignatureExpired``) for a forged, garbled or expired link and
    ``Escalation.DoesNotExist`` when the escalation is gone or has moved to another level."""
    data = signing.loads(token, salt=ANSWER_SALT, max_age=max_age)
    if not (isinstance(data, dict) and isinstance(data.get("e"), int)):
        raise signing.BadSignature("Not an escalation link.")
    escalation = Escalation.objects.select_related(
        "conversation__contact", "conversation__channel", "department", "user", "path"
    ).get(pk=data["e"])
    if escalation.level != data.get("l"):
        raise Escalation.DoesNotExist("The escalation has moved on to another level.")
    return escalation


# --- Reads ------------------------------------------------------------------------------


def escalation_brief(
    *, escalation: Escalation, conversation: Conversation | None = None
) -> dict[str, Any]:
    """What a department is shown: the customer, their accounts, the last messages (oldest
    first, internal notes left out) and the link back. Three queries."""
    conversation = conversation or escalation.conversation
    contact = conversation.contact
    messages = conversation.messages.exclude(kind=MessageKind.NOTE)
    ended = escalation.returned_at or escalation.closed_at
    if escalation.status != EscalationStatus.OPEN and ended is not None:
        # The link outlives the escalation: what the customer wrote since is not theirs.
        messages = messages.filter(created_at__lte=ended)
    recent = list(
        messages.select_related("author_identity", "author_user").order_by("-created_at", "-id")[
            :LAST_MESSAGES
        ]
    )
    return {
        "contact": {
            "name": contact.name or "Unknown customer",
            "handles": [
                {"platform": identity.platform, "handle": identity.handle}
                for identity in contact.identities.order_by("platform", "id")
                if identity.handle
            ],
        },
        "messages": [
            {
                "at": message.created_at,
                "direction": message.direction,
                "author": _author(message, contact.name),
                "body": message.body,
            }
            for message in reversed(recent)
        ],
        "answer_url": escalation_answer_url(escalation=escalation),
    }


def escalation_panel_context(
    *,
    conversation: Conversation,
    user: AnyUser,
    escalated: bool = True,
    targets: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """What the workspace's escalation panel shows, in at most three queries whatever the
    data: the latest escalation, whatever became of it (open, answered, or closed with its
    outcome), and unless it is open the paths and departments to escalate to; and whether
    this user may answer. ``escalated=False`` (the caller knows the conversation was never
    escalated) skips looking for one; ``targets`` given (``{"pk", "name",
    "kind"}`` by kind, name and pk) are not read again."""
    # Most conversations were never escalated: a plain look first, the details only if found.
    latest = escalated and (
        Escalation.objects.filter(conversation_id=conversation.pk)
        .order_by("-created_at", "-pk")
        .values_list("pk", flat=True)
        .first()
    )
    escalation = (
        None
        if not latest
        else (
            Escalation.objects.filter(pk=latest)
            .select_related("path", "department", "user", "created_by", "answered_by")
            .annotate(
                level_count=Coalesce(
                    Subquery(
                        EscalationLevel.objects.filter(path_id=OuterRef("path_id"))
                        .values("path_id")
                        .annotate(n=Count("pk"))
                        .values("n")
                    ),
                    0,
                )
            )
            .first()
        )
    )
    if escalation is not None and escalation.status == EscalationStatus.OPEN:
        targets = []
    elif targets is None:
        # What it may be escalated to, in one query: paths with levels, then departments.
        paths = (
            EscalationPath.objects.filter(
                Exists(EscalationLevel.objects.filter(path_id=OuterRef("pk")))
            )
            .order_by()
            .values("pk", "name", kind=Value("path"))
        )
        departments = Department.objects.order_by().values("pk", "name", kind=Value("department"))
        targets = [
            dict(target)
            for target in paths.union(departments, all=True).order_by("kind", "name", "pk")
        ]
    return {
        "conversation": conversation,
        "escalation": escalation,
        "escalation_paths": [t for t in targets if t["kind"] == "path"],
        "departments": [t for t in targets if t["kind"] == "department"],
        "can_answer": escalation is not None
        and escalation_answerable_by(escalation=escalation, user=user),
        "can_steer": escalation_steerable_by(conversation=conversation, user=user),
    }


# Why one who may see a conversation may not escalate it, raise or take back its escalation.
SUPPORT_STEERS = "The department answers; support escalates, raises or takes back."


def escalation_steerable_by(*, conversation: Conversation, user: AnyUser) -> bool:
    """Raising and taking back are support's moves, for those who watch the channel; the
    department an escalation waits on answers instead."""
    visible = access_of(user).visible_channel_ids
    return visible is None or conversation.channel_id in visible


def escalation_is_addressed_to(*, escalation: Escalation, user: AnyUser) -> bool:
    """Whether the escalation waits on this user: the person escalated to, or a member of the
    team of the department in the app that has it."""
    if not user.is_authenticated:
        return False
    if escalation.user_id == user.pk:
        return True
    department = escalation.department
    return (
        department is not None
        and department.delivery == DepartmentDelivery.IN_APP
        and department.team_id is not None
        and TeamMembership.objects.filter(team_id=department.team_id, user_id=user.pk).exists()
    )


def escalation_answerable_by(*, escalation: Escalation, user: AnyUser) -> bool:
    """An open escalation is answered in the app by those it waits on, or by a manager or
    admin (say, for a department that phoned its answer in). Callers scope the conversation."""
    if escalation.status != EscalationStatus.OPEN:
        return False
    return is_manager_or_admin(user) or escalation_is_addressed_to(escalation=escalation, user=user)


def escalated_conversation_ids(*, user: AnyUser) -> QuerySet[Escalation, Any]:
    """A subquery of conversations with an open escalation waiting on the user (see
    ``escalation_is_addressed_to``): they see those whatever channels their teams watch."""
    uid = user_id(user)
    return (
        Escalation.objects.filter(status=EscalationStatus.OPEN)
        .filter(
            Q(user_id=uid)
            | Q(
                department__delivery=DepartmentDelivery.IN_APP,
                department__team__memberships__user_id=uid,
            )
        )
        .values("conversation_id")
    )


# --- Helpers ----------------------------------------------------------------------------


def _lock(conversation_id: int) -> Conversation:
    """The conversation as stored now, locked until the transaction ends."""
    return Conversation.objects.select_for_update().get(pk=conversation_id)


def _fresh(escalation_id: int) -> Escalation:
    """The escalation as stored now: read after its conversation is locked, so no one else
    changes it meanwhile."""
    return Escalation.objects.select_related("path", "department", "user").get(pk=escalation_id)


def _open_escalation(conversation_id: int) -> Escalation | None:
    return (
        Escalation.objects.filter(conversation_id=conversation_id, status=EscalationStatus.OPEN)
        .select_related("path", "department", "user")
        .first()
    )


def _levels(path: EscalationPath) -> list[EscalationLevel]:
    return list(path.levels.select_related("department", "user").order_by("position", "id"))


def _check_reachable(*, department: Department | None, user: User | None) -> None:
    """Refuse a target that could never answer, before anything changes."""
    if department is None:
        if user is None or not user.is_active:
            raise ValueError("That person can no longer take escalations.")
        return
    if department.delivery == DepartmentDelivery.IN_APP and department.team_id is None:
        raise ValueError(f"{department} has no team to take escalations: set one up first.")
    if department.delivery == DepartmentDelivery.EMAIL and not department.email:
        raise ValueError(f"{department} has no email address to send escalations to.")
    if department.delivery == DepartmentDelivery.WEBHOOK and (
        department.endpoint is None or not department.endpoint.is_active
    ):
        raise ValueError(f"{department} has no active webhook to send escalations to.")


def _name(user: User) -> str:
    return user.get_full_name() or user.get_username()


def _pk(user: User | None) -> int | None:
    return user.pk if user is not None else None


def _who(actor: User | None, trigger: str) -> str:
    if actor is not None:
        return _name(actor)
    if trigger == EscalationTrigger.RULE:
        return "A routing rule"
    if trigger == EscalationTrigger.SLA:
        return "An SLA breach"
    return "Support"


def _author(message: Message, contact_name: str) -> str:
    if message.direction == Direction.IN:
        identity = message.author_identity
        name = (identity.display_name if identity else "") or contact_name or "Customer"
        return f"{name} (@{identity.handle})" if identity and identity.handle else name
    return f"Support ({_name(message.author_user)})" if message.author_user else "Support"
