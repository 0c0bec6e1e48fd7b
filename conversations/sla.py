"""SLA timers: due times per target, pausing, and the check that fires warnings and breaches.

A conversation gets the most specific active policy when it is created (after routing has set
its priority). Its targets run in the policy's business hours:

- first response: from creation until the first reply;
- next response: from a customer message that arrives after we replied, until the next reply;
- resolution: from creation (or a reopening) until resolved.

While the customer has the ball (pending) or nobody does (resolved, closed) the clocks stand
still; when the conversation comes back, each target that had not yet run out gets the business
time it had left. ``sla_due_at`` is the earliest running due time, which the inbox shows and
filters on; ``sla_check_at`` tells the beat when to look next. The functions that start, stop
and move timers work on the conversation in memory: callers save the SLA fields with their own
write, so the ingest pipeline keeps one UPDATE per batch.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from conversations import business_hours, setup_cache
from conversations.models import (
    ACTIVE_STATUSES,
    Conversation,
    ConversationEvent,
    EventKind,
    Notification,
    SlaEvent,
    SlaEventKind,
    SlaPolicy,
    SlaTarget,
    Status,
)

if TYPE_CHECKING:
    from conversations.routing import RuleBook

logger = logging.getLogger(__name__)

SLA_FIELDS = (
    "sla_policy",
    "first_response_due_at",
    "next_response_due_at",
    "resolution_due_at",
    "sla_due_at",
    "sla_warn_at",
    "sla_check_at",
    "sla_paused_at",
    "sla_started_at",
)

_DUE_FIELDS = {
    SlaTarget.FIRST_RESPONSE: "first_response_due_at",
    SlaTarget.NEXT_RESPONSE: "next_response_due_at",
    SlaTarget.RESOLUTION: "resolution_due_at",
}

# Statuses in which no SLA clock runs.
_PAUSED_STATUSES = (Status.PENDING, Status.RESOLVED, Status.CLOSED)


@dataclass
class SlaSetup:
    """The active policies and their calendars, loaded once for a batch of work."""

    policies: list[SlaPolicy] = field(default_factory=list)
    calendars: dict[int, business_hours.BusinessCalendar] = field(default_factory=dict)

    @classmethod
    def load(cls, *, calendars: Callable[[], setup_cache.CalendarSet] | None = None) -> "SlaSetup":
        """The active policies as stored now, built once per process and reused while their
        rows are unchanged (``setup_cache``); calendars likewise, read only when a policy
        names one, through ``calendars`` when given (so a batch reads them once)."""
        names = [f.name for f in SlaPolicy._meta.concrete_fields]
        policy_rows = setup_cache.rows(
            f"SELECT {setup_cache.columns(SlaPolicy, names)} FROM {setup_cache.table(SlaPolicy)}"
            f" WHERE {setup_cache.columns(SlaPolicy, ('is_active',))} ORDER BY 1"
        )
        # Built by the ORM, for its conversions; rows changed in between only rebuild again.
        policies = setup_cache.built(
            "sla-policies",
            policy_rows,
            lambda: list(SlaPolicy.objects.filter(is_active=True).order_by("pk")),
        )
        if not any(p.calendar_id is not None for p in policies):
            return cls(policies=policies)
        by_id = (calendars or setup_cache.business_calendars)().by_id
        return cls(
            policies=policies,
            calendars={
                p.calendar_id: by_id[p.calendar_id]
                for p in policies
                if p.calendar_id is not None and p.calendar_id in by_id
            },
        )

    @property
    def needs_vip(self) -> bool:
        return any(p.vip_only for p in self.policies)

    def policy_for(self, *, priority: int, channel_id: int, is_vip: bool) -> SlaPolicy | None:
        """The most specific policy that applies: channel, then VIP, then priority."""
        best: tuple[int, int] | None = None
        chosen = None
        for policy in self.policies:
            if policy.priority is not None and policy.priority != priority:
                continue
            if policy.channel_id is not None and policy.channel_id != channel_id:
                continue
            if policy.vip_only and not is_vip:
                continue
            rank = (
                4 * (policy.channel_id is not None)
                + 2 * policy.vip_only
                + (policy.priority is not None),
                -policy.pk,
            )
            if best is None or rank > best:
                best, chosen = rank, policy
        return chosen

    def policy(self, pk: int | None) -> SlaPolicy | None:
        return next((p for p in self.policies if p.pk == pk), None)

    def add(self, policy: SlaPolicy, start: datetime, minutes: int) -> datetime:
        return business_hours.add_business_time(
            self.calendars.get(policy.calendar_id or 0), start, timedelta(minutes=minutes)
        )

    def between(self, policy: SlaPolicy, start: datetime, end: datetime) -> timedelta:
        return business_hours.business_time_between(
            self.calendars.get(policy.calendar_id or 0), start, end
        )


def sla_start(conversation: Conversation, *, setup: SlaSetup, is_vip: bool, at: datetime) -> None:
    """Choose the conversation's policy and start its clocks: first response (or, when we
    answered already, as on a monitored conversation that now asks something of us, next
    response) and resolution."""
    # NULL for a round that starts as the conversation does, as most do: the ingest's UPDATE
    # of follow-ups then sends no datetime for it.
    conversation.sla_started_at = None if at == conversation.created_at else at
    policy = setup.policy_for(
        priority=conversation.priority, channel_id=conversation.channel_id, is_vip=is_vip
    )
    conversation.sla_policy = policy
    if policy is None:
        sla_clear(conversation)
        return
    conversation.first_response_due_at = (
        setup.add(policy, at, policy.first_response_minutes)
        if policy.first_response_minutes and conversation.first_response_at is None
        else None
    )
    conversation.next_response_due_at = (
        setup.add(policy, at, policy.next_response_minutes)
        if policy.next_response_minutes and conversation.first_response_at is not None
        else None
    )
    conversation.resolution_due_at = (
        setup.add(policy, at, policy.resolution_minutes) if policy.resolution_minutes else None
    )
    conversation.sla_paused_at = None
    _summarise(conversation, policy)


def sla_on_inbound(
    conversation: Conversation,
    *,
    setup: SlaSetup,
    at: datetime,
    was_waiting: bool,
    previous_status: str,
) -> None:
    """A customer message arrived on an existing conversation."""
    if previous_status in (Status.RESOLVED, Status.CLOSED):
        conversation.sla_started_at = at  # a new round, whether or not a policy applies now
    policy = setup.policy(conversation.sla_policy_id)
    if policy is None:
        sla_clear(conversation)  # its policy was switched off or deleted: nothing runs any more
        return
    if previous_status in (Status.RESOLVED, Status.CLOSED):
        _new_round(conversation, setup, policy, at)
    elif conversation.sla_paused_at is not None:
        _resume(conversation, setup, policy, at)
    if (
        not was_waiting
        and conversation.first_response_at is not None
        and policy.next_response_minutes
    ):
        conversation.next_response_due_at = setup.add(policy, at, policy.next_response_minutes)
    _summarise(conversation, policy)


def _new_round(
    conversation: Conversation, setup: SlaSetup, policy: SlaPolicy, at: datetime
) -> None:
    """A resolved or closed conversation came back: its resolution clock starts again from
    now, and so does the first response one if nobody ever answered."""
    conversation.sla_paused_at = None
    conversation.resolution_due_at = (
        setup.add(policy, at, policy.resolution_minutes) if policy.resolution_minutes else None
    )
    if conversation.first_response_at is None and policy.first_response_minutes:
        conversation.first_response_due_at = setup.add(policy, at, policy.first_response_minutes)


def _met(conversation: Conversation, due: datetime, at: datetime) -> dict[str, object]:
    # A clock that stood still stopped at the pause, not at the moment of the action.
    stopped = conversation.sla_paused_at or at
    return {"sla_due_at": due.isoformat(), "sla_met": min(stopped, at) <= due}


def sla_on_reply(conversation: Conversation, *, at: datetime) -> dict[str, object]:
    """An agent replied: the response targets that ran are met (or were missed). Returns what
    the reply event records for the KPIs."""
    due = conversation.first_response_due_at or conversation.next_response_due_at
    facts = _met(conversation, due, at) if due is not None else {}
    conversation.first_response_due_at = None
    conversation.next_response_due_at = None
    policy = conversation.sla_policy
    if policy is not None:
        _summarise(conversation, policy)
    return facts


def sla_on_status(
    conversation: Conversation, *, setup: SlaSetup, previous: str, at: datetime
) -> dict[str, object]:
    """The status changed: pause, resume, or (on resolving) meet the resolution target."""
    policy = setup.policy(conversation.sla_policy_id)
    facts: dict[str, object] = {}
    status = conversation.status
    ended = (Status.RESOLVED, Status.CLOSED)
    if previous in ended and status not in ended:
        conversation.sla_started_at = at  # a new round, whether or not a policy applies now
    if status in ended:
        due = conversation.resolution_due_at
        if due is not None and previous not in ended:
            facts = _met(conversation, due, at)
        conversation.first_response_due_at = None
        conversation.next_response_due_at = None
        conversation.resolution_due_at = None
        conversation.sla_paused_at = at
    elif policy is None:
        sla_clear(conversation)  # its policy was switched off or deleted: nothing runs any more
        return facts
    elif previous in ended:
        _new_round(conversation, setup, policy, at)
        if status in _PAUSED_STATUSES:
            conversation.sla_paused_at = at
    elif status in _PAUSED_STATUSES:
        if conversation.sla_paused_at is None:
            conversation.sla_paused_at = at
    elif conversation.sla_paused_at is not None:
        _resume(conversation, setup, policy, at)
    if policy is not None:
        _summarise(conversation, policy)
    else:
        conversation.sla_due_at = conversation.sla_warn_at = conversation.sla_check_at = None
    return facts


def sla_policy_change(
    conversation: Conversation, *, setup: SlaSetup, is_vip: bool, at: datetime
) -> None:
    """The priority (or channel) changed: the policy that now applies takes over. A target
    that ran keeps the time it has used and gets the new target's length (breached when it
    has used more than that); one already breached stays as it was (the breach happened);
    one the old policy lacked starts from
    when it would have: the start of the current round (the first message, or the last
    reopening). On a pending conversation the clocks stand still from now."""
    policy = setup.policy_for(
        priority=conversation.priority, channel_id=conversation.channel_id, is_vip=is_vip
    )
    if policy is None:
        conversation.sla_policy = None
        sla_clear(conversation)
        return
    if conversation.sla_policy_id == policy.pk:
        return
    old = setup.policy(conversation.sla_policy_id)
    conversation.sla_policy = policy
    moment = conversation.sla_paused_at or at
    running = conversation.status not in (Status.RESOLVED, Status.CLOSED)
    round_start = conversation.sla_started_at or conversation.created_at
    starts = {
        "first_response": round_start if conversation.first_response_at is None else None,
        "next_response": conversation.waiting_since
        if conversation.first_response_at is not None
        else None,
        "resolution": round_start,
    }
    for target, name in _DUE_FIELDS.items():
        minutes = getattr(policy, f"{target}_minutes")
        due = getattr(conversation, name)
        start = starts[target]
        if not running or not minutes or start is None:
            setattr(conversation, name, None)
        elif due is not None and due <= moment:
            continue  # breached already
        elif due is not None and old is not None and getattr(old, f"{target}_minutes"):
            used = max(
                timedelta(0),
                timedelta(minutes=getattr(old, f"{target}_minutes"))
                - setup.between(old, moment, due),
            )
            left = timedelta(minutes=minutes) - used
            if left > timedelta(0):
                setattr(conversation, name, _add(setup, policy, moment, left))
            else:
                # Used up already: breached when the new length ran out, ``-left`` of business
                # time before now, not at the next opening (adding nothing out of hours).
                ran = setup.between(policy, start, moment) + left
                due = _add(setup, policy, start, max(timedelta(0), ran))
                setattr(conversation, name, min(due, moment))
        else:
            setattr(conversation, name, setup.add(policy, start, minutes))
    if running and conversation.status == Status.PENDING and conversation.sla_paused_at is None:
        # Without a policy nothing was paused: the new clocks stop until the customer answers.
        conversation.sla_paused_at = at
    _summarise(conversation, policy)


def _add(setup: SlaSetup, policy: SlaPolicy, start: datetime, left: timedelta) -> datetime:
    return business_hours.add_business_time(
        setup.calendars.get(policy.calendar_id or 0), start, left
    )


def _resume(conversation: Conversation, setup: SlaSetup, policy: SlaPolicy, at: datetime) -> None:
    """Give each target that had time left when paused that much business time from now."""
    paused_at = conversation.sla_paused_at
    assert paused_at is not None
    for name in _DUE_FIELDS.values():
        due = getattr(conversation, name)
        if due is not None and due > paused_at:
            left = setup.between(policy, paused_at, due)
            setattr(
                conversation,
                name,
                business_hours.add_business_time(
                    setup.calendars.get(policy.calendar_id or 0), at, left
                ),
            )
    conversation.sla_paused_at = None


def sla_clear(conversation: Conversation) -> None:
    """No clock runs: the conversation is only listened to (monitoring), or its policy is gone."""
    for name in (*_DUE_FIELDS.values(), "sla_due_at", "sla_warn_at", "sla_check_at"):
        setattr(conversation, name, None)
    conversation.sla_paused_at = None


def sla_targets_shown(conversation: Conversation, *, now: datetime) -> list[dict[str, Any]]:
    """The workspace's rows, one per target with a due time: its label, the due time, and
    whether it is late. While the clocks stand still (``sla_paused_at``) a target not missed
    before the pause is not late: its due time moves on when they run again, and ``left``
    gives the business time it had left when they stopped (read through the policy's
    calendar; only then are policies and calendars read)."""
    rows = [
        (target.label, due)
        for target, name in _DUE_FIELDS.items()
        if (due := getattr(conversation, name)) is not None
    ]
    paused = conversation.sla_paused_at
    if paused is None or not rows:
        return [{"label": label, "due": due, "late": due <= now} for label, due in rows]
    setup = SlaSetup.load()
    policy = setup.policy(conversation.sla_policy_id)
    return [
        {"label": label, "due": due, "late": True}
        if due <= paused
        else {
            "label": label,
            "due": due,
            "late": False,
            "left": setup.between(policy, paused, due) if policy else due - paused,
        }
        for label, due in rows
    ]


def _running(conversation: Conversation) -> list[tuple[str, datetime]]:
    return [
        (target, due)
        for target, name in _DUE_FIELDS.items()
        if (due := getattr(conversation, name)) is not None
    ]


def _summarise(conversation: Conversation, policy: SlaPolicy) -> None:
    """Set the fields the inbox and the beat read from the running targets."""
    running = [] if conversation.sla_paused_at is not None else _running(conversation)
    if not running:
        conversation.sla_due_at = conversation.sla_warn_at = conversation.sla_check_at = None
        return
    warn = timedelta(minutes=policy.at_risk_minutes)
    conversation.sla_due_at = min(due for _, due in running)
    conversation.sla_warn_at = conversation.sla_due_at - warn
    # The earliest moment anything is to fire; a moment already passed is looked at again and
    # fires nothing twice (SlaEvent is unique per target, kind and due time).
    conversation.sla_check_at = min(min(due - warn, due) for _, due in running)


# --- The check run by beat --------------------------------------------------------------


@dataclass(frozen=True)
class SlaFired:
    conversation_id: int
    target: str
    kind: str
    due_at: datetime


def sla_check(*, now: datetime | None = None, limit: int = 500) -> list[SlaFired]:
    """Fire the warnings and breaches that are due: one indexed query finds the conversations,
    each is claimed under a row lock, and a unique row per target, kind and due time makes a
    second run (or a second beat) fire nothing again. Breaches then go to the routing rules;
    a second indexed query finds the breaches whose rules failed and are due to be tried
    again (``RULES_RETRY_MINUTES``)."""
    now = now or timezone.now()
    due_ids = list(
        Conversation.objects.filter(sla_check_at__lte=now)
        .order_by("sla_check_at")
        .values_list("pk", flat=True)[:limit]
    )
    retry_ids = set(
        SlaEvent.objects.filter(rules_due_at__lte=now)
        .order_by("rules_due_at")
        .values_list("conversation_id", flat=True)[:limit]
    )
    from conversations.routing import RuleBook

    book: RuleBook | None = None
    fired: list[SlaFired] = []
    for pk in due_ids:
        book = book or RuleBook.load()
        checked = _check_one(pk, now, book, retry=pk in retry_ids)
        if checked is not None:
            fired.extend(checked)
            retry_ids.discard(pk)
    for pk in sorted(retry_ids):
        book = book or RuleBook.load()
        with transaction.atomic():
            claimed = Conversation.objects.select_for_update(skip_locked=True).filter(pk=pk).first()
            if claimed is not None:  # else another beat holds it
                _breach_rules_due(claimed, now, book)
    return fired


def _check_one(pk: int, now: datetime, book: "RuleBook", *, retry: bool) -> list[SlaFired] | None:
    """What fired on the conversation, or None if it was not checked (another beat holds it,
    or it changed since the scan). ``retry``: some breach of it has rules to try again."""
    fired: list[SlaFired] = []
    with transaction.atomic():
        conversation = (
            Conversation.objects.select_for_update(skip_locked=True)
            .filter(pk=pk, sla_check_at__lte=now)
            .first()
        )
        if conversation is None:
            return None
        policy = conversation.sla_policy
        if policy is None or not policy.is_active or conversation.is_monitoring:
            # Switched off, deleted, or only listened to: nothing is due any more.
            sla_clear(conversation)
            conversation.save(update_fields=list(SLA_FIELDS))
        else:
            # A breach's rules are noted as due with it, in the same transaction: a worker
            # dying before they ran loses neither, and the next beat fires both.
            rules_due = now if book.listening("sla_breached") else None
            warn = timedelta(minutes=policy.at_risk_minutes)
            for target, due in _running(conversation):
                kind = (
                    SlaEventKind.BREACHED
                    if due <= now
                    else SlaEventKind.AT_RISK
                    if due - warn <= now
                    else None
                )
                if kind is None:
                    continue
                if _fire_once(conversation, policy, target, kind, due, now, rules_due=rules_due):
                    fired.append(SlaFired(conversation.pk, target, kind, due))
            upcoming = [
                moment
                for _, due in _running(conversation)
                for moment in (due - warn, due)
                if moment > now
            ]
            conversation.sla_check_at = min(upcoming) if upcoming else None
            conversation.save(update_fields=["sla_check_at"])
            retry = retry or (
                rules_due is not None and any(f.kind == SlaEventKind.BREACHED for f in fired)
            )
        if retry:
            _breach_rules_due(conversation, now, book)
    return fired


# Rules on a breach that fail (a lock timeout, a department's row gone, a bug) are tried again
# this many minutes after each failure (about 1, 6 and 21 minutes after the breach), then given
# up on, which the timeline says.
RULES_RETRY_MINUTES = (1, 5, 15)
# A breach whose rules still wait this long after it (the beat was down) is not acted on.
RULES_RETRY_WINDOW = timedelta(hours=1)


def _breach_rules_due(conversation: Conversation, now: datetime, book: "RuleBook") -> None:
    """Run the rules on the conversation's breaches whose rules wait, when one of them is
    due (just fired, or to be tried again): once for all of them, so that a second target
    breached while the first waits does not escalate twice, in a savepoint: rules that fail
    leave the breaches recorded and are tried again ``RULES_RETRY_MINUTES`` later. None run
    on a conversation that no longer asks for them (resolved or closed, only monitored, its
    SLA policy switched off), nor for breaches older than ``RULES_RETRY_WINDOW``: those are
    given up on, and the timeline says so."""
    from conversations.routing import rules_run

    waiting = list(SlaEvent.objects.filter(conversation=conversation, rules_due_at__isnull=False))
    if not any(event.rules_due_at and event.rules_due_at <= now for event in waiting):
        return  # another beat ran them meanwhile
    reason = _not_routed_because(conversation)
    live = [] if reason else [e for e in waiting if now - e.created_at <= RULES_RETRY_WINDOW]
    error = ""
    if live:
        try:
            with transaction.atomic():
                rules_run(conversation_id=conversation.pk, event="sla_breached", book=book)
        except Exception as exc:
            logger.exception("Rules on the SLA breach of conversation %s failed", conversation.pk)
            error = f"{type(exc).__name__}: {exc}"[:500]
    # Why each breach given up on was: the timeline gets one entry per reason.
    given_up: dict[str, list[SlaEvent]] = {}
    for event in waiting:
        if event in live:
            event.rules_attempts += 1
            event.rules_error = error
            if not error:
                event.rules_due_at = None
                continue
            if event.rules_attempts <= len(RULES_RETRY_MINUTES):
                delay = RULES_RETRY_MINUTES[event.rules_attempts - 1]
                event.rules_due_at = now + timedelta(minutes=delay)
                continue
            why = f"given up after {event.rules_attempts} attempts"
        elif live and not error:
            event.rules_due_at = None  # an older breach, answered by the rules that just ran
            continue
        else:
            why = f"not tried again: {reason or 'the breach is over an hour old'}"
        event.rules_due_at = None
        given_up.setdefault(why, []).append(event)
    SlaEvent.objects.bulk_update(waiting, ["rules_due_at", "rules_attempts", "rules_error"])
    for why, events in given_up.items():
        last_error = next((e.rules_error for e in events if e.rules_error), "")
        ConversationEvent.objects.create(
            conversation=conversation,
            kind=EventKind.RULE_APPLIED,
            created_at=now,
            data={
                "event": "sla_breached",
                "rules_failed": f"{last_error} ({why})" if last_error else why,
            },
        )


def _not_routed_because(conversation: Conversation) -> str:
    """Why the rules on a breach no longer run on this conversation, or ""."""
    if conversation.status not in ACTIVE_STATUSES:
        return f"the conversation is {conversation.get_status_display().lower()}"
    if conversation.is_monitoring:
        return "the conversation is only monitored"
    policy = conversation.sla_policy
    if policy is None or not policy.is_active:
        return "its SLA policy is switched off"
    return ""


def _fire_once(
    conversation: Conversation,
    policy: SlaPolicy | None,
    target: str,
    kind: str,
    due: datetime,
    now: datetime,
    *,
    rules_due: datetime | None = None,
) -> bool:
    try:
        with transaction.atomic():
            SlaEvent.objects.create(
                conversation=conversation,
                policy=policy,
                target=target,
                kind=kind,
                due_at=due,
                created_at=now,
                rules_due_at=rules_due if kind == SlaEventKind.BREACHED else None,
            )
    except IntegrityError:
        return False
    event = ConversationEvent.objects.create(
        conversation=conversation,
        kind=EventKind.SLA_BREACHED if kind == SlaEventKind.BREACHED else EventKind.SLA_AT_RISK,
        created_at=now,
        data={"target": target, "due_at": due.isoformat(), "policy": policy.name if policy else ""},
    )
    from conversations.webhook_events import conversation_event_publish

    conversation_event_publish(
        conversation=conversation, kind=event.kind, event_id=event.pk, data=event.data
    )
    if kind == SlaEventKind.AT_RISK and conversation.assignee_id is not None:
        Notification.objects.create(
            recipient_id=conversation.assignee_id,
            conversation=conversation,
            text=f"{SlaTarget(target).label} due {timezone.localtime(due):%H:%M} "
            f"on conversation #{conversation.pk}",
            created_at=now,
        )
    return True
