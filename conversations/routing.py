"""Routing: the admins' rules run on events, and what they decide is carried out.

The ingest pipeline routes a whole batch at once: rules are evaluated in memory for each new
post, the changes they make to a conversation (priority, team, assignee, monitoring) are
applied before the batch's conversations are written, so routing adds no per-post query; the
rest (tags, timeline, acknowledgements, notifications, webhooks) is written in bulk after.
Escalations, rare by nature, go through the escalation service one by one.
"""

import hashlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Count, Model, Q
from django.utils import timezone

from channels_ingest.models import ChannelAccount
from conversations import business_hours, presence, setup_cache
from conversations.models import (
    ACTIVE_STATUSES,
    Conversation,
    ConversationEvent,
    DeliveryStatus,
    Department,
    Direction,
    Escalation,
    EscalationPath,
    EscalationStatus,
    EscalationTrigger,
    EventKind,
    Message,
    MessageKind,
    Notification,
    QueuedAssignment,
    RoutingRule,
    Status,
    WebhookEndpoint,
)
from conversations.rules import (
    Action,
    CompiledRule,
    Facts,
    RuleError,
    RuleMatch,
    RuleSet,
    acknowledgement_render,
    rule_compile,
)
from governance.models import TeamMembership
from governance.services import Verdict, outbound_check
from scrm.bulk import EncodedJSON, json_value_text, rows_copy, rows_insert, rows_insert_returning

logger = logging.getLogger(__name__)


class Calendars:
    """Business calendars for the ``business_hours`` condition, read when a rule first needs
    them, or given by the caller that has read them already (the SLA setup of the batch).
    What a calendar says of a moment holds for a span from it (closed until it next opens,
    open until its hours end), and a batch's posts come in time order: most are answered by
    the span of the one before, without working through the calendar."""

    def __init__(self, calendar_set: setup_cache.CalendarSet | None = None) -> None:
        self._set = calendar_set
        self._spans: dict[int | None, tuple[datetime, datetime, bool]] = {}

    def calendar_set(self) -> setup_cache.CalendarSet:
        """Every business calendar, read once for the batch."""
        if self._set is None:
            self._set = setup_cache.business_calendars()
        return self._set

    def within(self, calendar_id: int | None, at: datetime) -> bool:
        span = self._spans.get(calendar_id)
        if span is not None and span[0] <= at < span[1]:
            return span[2]
        chosen = self.calendar_set().named(calendar_id)
        # Without any calendar the organisation is taken to be always open.
        if chosen is None:
            return True
        try:
            until = chosen.open_until(at)
            if until is not None:
                self._spans[calendar_id] = (at, until, True)
                return True
            self._spans[calendar_id] = (at, chosen.next_opening(at), False)
            return False
        except business_hours.CalendarError:
            # Never opens again: no span to remember.
            return chosen.is_open(at)


@dataclass
class RuleBook:
    """The active rules, compiled, for a batch of work."""

    rules: list[CompiledRule]
    needed: frozenset[str]
    calendars: Calendars = field(default_factory=Calendars)
    compiled: RuleSet | None = field(default=None, repr=False)

    @classmethod
    def load(cls) -> "RuleBook":
        """The rules as stored now. Compiled once per process and reused while the rows (and
        the teams, tags and users they name) are unchanged: see ``setup_cache``."""
        rule_rows = setup_cache.rows(
            setup_cache.statement(
                "rules",
                lambda: (
                    f"SELECT {setup_cache.columns(RoutingRule, _RULE_COLUMNS)}"
                    f" FROM {setup_cache.table(RoutingRule)} WHERE {_active(RoutingRule)}"
                    f" ORDER BY {setup_cache.columns(RoutingRule, ('position', 'id'))}"
                ),
            )
        )
        compiled = setup_cache.built("rules", rule_rows, lambda: _rules_compile(rule_rows))
        wanted = _targets(compiled)
        present = _present(wanted)
        rule_set = setup_cache.built(
            "rules-targets",
            (rule_rows, present),
            lambda: RuleSet(_without_missing_targets(compiled, wanted, present)),
        )
        return cls(rules=rule_set.rules, needed=rule_set.needed, compiled=rule_set)

    def __post_init__(self) -> None:
        if self.compiled is None:
            self.compiled = RuleSet(self.rules)
        self._compiled = self.compiled
        self._within = self.calendars.within  # bound once, not for every post

    def listening(self, event: str) -> bool:
        """Whether some rule runs on ``event``."""
        return self._compiled.listening(event)

    @property
    def adds_tags(self) -> bool:
        return any(rule.added_tag_ids for rule in self.rules)

    def evaluate(self, facts: Facts, events: Sequence[str]) -> list[tuple[str, RuleMatch]]:
        """Rules matching any of the events, each rule once, in order. The changes of earlier
        matches are visible to later rules; a matching rule that stops processing ends it."""
        return self._compiled.evaluate(facts, events, self._within)


_RULE_COLUMNS = ("id", "name", "events", "match", "conditions", "actions", "stop_processing")
_TARGET_KINDS = ("team", "tag", "user")


def _active(model: type[Any]) -> str:
    """The condition "is active": a boolean column, true on PostgreSQL and 1 on SQLite."""
    return setup_cache.columns(model, ("is_active",))


def _rules_compile(rule_rows: setup_cache.Rows) -> list[CompiledRule]:
    rules = []
    for pk, name, events, match, conditions, actions, stop_processing in rule_rows:
        try:
            rules.append(
                rule_compile(
                    id=pk,
                    name=name,
                    events=setup_cache.json_value(events),
                    match=match,
                    conditions=setup_cache.json_value(conditions),
                    actions=setup_cache.json_value(actions),
                    stop_processing=bool(stop_processing),
                )
            )
        except (RuleError, ValueError, TypeError, KeyError, RecursionError):
            # Only a definition written around the editor gets here; it must not stop
            # the channel, so it is skipped and logged.
            logger.exception("Routing rule %s cannot be compiled; skipped", pk)
    return rules


def _targets(rules: Sequence[CompiledRule]) -> dict[str, frozenset[int]]:
    """The teams, tags and users the rules' actions name."""
    wanted: dict[str, set[int]] = {kind: set() for kind in _TARGET_KINDS}
    for rule in rules:
        for action in rule.actions:
            if action.type == "set_team":
                wanted["team"].add(action.value)
            elif action.type == "add_tags":
                wanted["tag"].update(action.value)
            elif action.type == "assign" and action.value != "auto":
                wanted["user"].add(action.value)
            elif action.type == "notify":
                wanted["user"].update(action.value.get("users") or ())
                wanted["team"].update(action.value.get("teams") or ())
    return {kind: frozenset(ids) for kind, ids in wanted.items()}


def _present(wanted: dict[str, frozenset[int]]) -> dict[str, frozenset[int]]:
    """Which of them exist (users: and are active), in one query."""
    from django.contrib.auth import get_user_model

    from conversations.models import Tag
    from governance.models import Team

    models: dict[str, type[Model]] = {"team": Team, "tag": Tag, "user": get_user_model()}
    sizes, params = [], []
    for kind in _TARGET_KINDS:
        ids = sorted(wanted[kind])
        sizes.append(len(ids))
        params += [kind, *ids] if ids else []

    def build() -> str:
        parts = []
        for kind, size in zip(_TARGET_KINDS, sizes, strict=True):
            if not size:
                continue
            model = models[kind]
            condition = f"{setup_cache.columns(model, ('id',))} IN ({', '.join(['%s'] * size)})"
            if kind == "user":
                condition += f" AND {_active(model)}"
            parts.append(
                f"SELECT %s, {setup_cache.columns(model, ('id',))} FROM "
                f"{setup_cache.table(model)} WHERE {condition}"
            )
        return " UNION ALL ".join(parts)

    found: dict[str, set[int]] = {kind: set() for kind in _TARGET_KINDS}
    if params:
        sql = setup_cache.statement(("targets", *sizes), build)
        for kind, pk in setup_cache.rows(sql, params):
            found[kind].add(pk)
    return {kind: frozenset(ids) for kind, ids in found.items()}


def _without_missing_targets(
    rules: list[CompiledRule],
    wanted: dict[str, frozenset[int]],
    present: dict[str, frozenset[int]],
) -> list[CompiledRule]:
    """Rules name teams, tags and users by id; one deleted since the rule was saved is left
    out of its actions (its foreign key would fail the whole batch), and logged."""
    if all(wanted[kind] <= present[kind] for kind in _TARGET_KINDS):
        return rules
    kept = []
    for rule in rules:
        actions = []
        for action in rule.actions:
            value = action.value
            if action.type == "set_team" and value not in present["team"]:
                continue
            if action.type == "assign" and value != "auto" and value not in present["user"]:
                continue
            if action.type == "add_tags":
                value = tuple(t for t in value if t in present["tag"])
                if not value:
                    continue
            if action.type == "notify":
                value = {
                    **value,
                    "users": [u for u in value.get("users") or () if u in present["user"]],
                    "teams": [t for t in value.get("teams") or () if t in present["team"]],
                }
            actions.append(replace(action, value=value))
        if len(actions) != len(rule.actions) or actions != list(rule.actions):
            logger.warning("Routing rule %s names something deleted; that part is skipped", rule.id)
        kept.append(
            replace(
                rule,
                actions=tuple(actions),
                added_tag_ids=frozenset(
                    t for a in actions if a.type == "add_tags" for t in a.value
                ),
            )
        )
    return kept


# --- What the rules decided, carried out ------------------------------------------------


@dataclass
class Acknowledgement:
    conversation: Conversation
    template: str
    rule_id: int
    name: str  # the customer's name as they show it
    reply_to: str  # the post acknowledged
    held_for: list[str] = field(default_factory=list)  # why it waits for approval, if it does
    rule_name: str = ""


@dataclass
class Decisions:
    """Everything the rules of one batch want done beyond the conversation rows themselves."""

    events: list[tuple[Conversation, str, "dict[str, Any] | RuleApplied", datetime]] = field(
        default_factory=list
    )
    tags: dict[int, set[int]] = field(default_factory=lambda: defaultdict(set))  # id(conv)
    acknowledgements: dict[int, Acknowledgement] = field(default_factory=dict)
    escalations: list[tuple[Conversation, dict[str, Any], str, str]] = field(default_factory=list)
    notifications: list[tuple[Conversation, dict[str, Any], str]] = field(default_factory=list)
    webhooks: list[tuple[Conversation, int, str, int, str]] = field(default_factory=list)
    auto_assign: dict[int, Conversation] = field(default_factory=dict)
    # Those of ``auto_assign`` nobody could take (everyone away or full): they wait in their
    # team's queue (``QueuedAssignment``) for ``queued_assign``.
    queued: list[Conversation] = field(default_factory=list)
    # id(conv): conversations a rule's named assignment moved from New to Open, which go back
    # to New if the assignment is refused (``named_assignments_check``)
    opened_by_assignment: set[int] = field(default_factory=set)
    # id(conv): the conversation and the rules applied to it in the batch, its one
    # RULE_APPLIED event (``timeline``) unless its CREATED event carries them (``created``)
    applied: dict[int, tuple[Conversation, "RuleApplied"]] = field(default_factory=dict)

    def tag_pairs(self, conversations: Iterable[Conversation]) -> set[tuple[int, int]]:
        # ``id`` rather than ``pk``, a property: read for every conversation of the batch.
        return {(c.id, tag_id) for c in conversations for tag_id in self.tags.get(id(c), ())}

    def created(self, conversation: Conversation) -> "dict[str, Any] | RuleApplied":
        """The data of a new conversation's CREATED event: the rules applied as it was
        created, if any, which then have no RULE_APPLIED event of their own. Most new
        conversations meet some rule: one row for both keeps the ingest's writes fewer."""
        entry = self.applied.get(id(conversation))
        if entry is None or entry[1].at != conversation.created_at:
            return {}
        del self.applied[id(conversation)]
        return entry[1]

    def timeline(self) -> list[tuple[Conversation, str, "dict[str, Any] | RuleApplied", datetime]]:
        """Every event to write: those noted, then the rules applied to each conversation."""
        return [
            *self.events,
            *(
                (c, EventKind.RULE_APPLIED, applied, applied.at)
                for c, applied in self.applied.values()
            ),
        ]


def decisions_take(
    conversation: Conversation,
    matches: Sequence[tuple[str, RuleMatch]],
    decisions: Decisions,
    *,
    at: datetime,
    key: str,
    name: str = "",
    tags: frozenset[int] = frozenset(),
    reply_to: str | None = None,
) -> None:
    """Apply what changes the conversation row itself now (in memory), note the rest. The
    rules that did something go on the timeline with what they did, in one entry per
    conversation and batch (``RuleApplied``); one that matched but found everything as it
    wanted is left out. ``tags``: those the conversation has (as the rules saw it), which
    adding again changes nothing. ``key`` names the post or run the rules acted on (webhook
    calls are made once per key); an acknowledgement answers ``reply_to``, by default the
    post ``key`` names.

    It runs for most posts of a batch: the actions rules use most (priority, team, tags,
    monitoring) are taken here, the rest by ``_take``, and what each did is written as the
    JSON members of its timeline entry as it is taken, without building a dict to encode."""
    reply_to = key if reply_to is None else reply_to
    for event, match in matches:
        rule = match.rule
        # What each action changes, for the rule's timeline entry: most matches of a batch
        # change nothing that is not so already, and then add no entry.
        effects: list[str] = []
        for action in match.actions:
            kind, value = action.type, action.value
            if kind == "set_priority":
                if (priority := conversation.priority) != value:
                    effects.append(f'"priority": [{priority}, {value}]')
                    conversation.priority = value
            elif kind == "add_tags":
                # ``value`` holds each tag once; most conversations have no tag from the
                # batch yet.
                noted = decisions.tags.get(id(conversation))
                added = [t for t in value if t not in tags and (noted is None or t not in noted)]
                if added:
                    decisions.tags[id(conversation)].update(added)
                    added.sort()
                    effects.append(f'"tags": [{", ".join(map(str, added))}]')
            elif kind == "set_team":
                if (team_id := conversation.team_id) != value:
                    effects.append(f'"team": [{_json_id(team_id)}, {value}]')
                    conversation.team_id = value
            elif kind == "mark_monitoring":
                if not conversation.is_monitoring:
                    effects.append('"monitoring": true')
                    conversation.is_monitoring = True
            else:
                _take(
                    conversation, rule, action, decisions, effects, at, key, reply_to, name, event
                )
        if effects:
            entry = decisions.applied.get(id(conversation))
            if entry is None:
                entry = decisions.applied[id(conversation)] = (conversation, RuleApplied(at))
            entry[1].add(rule, event, effects, at)


def _json_id(value: int | None) -> str:
    return "null" if value is None else str(value)


class RuleApplied(EncodedJSON):
    """A conversation's one RULE_APPLIED event of a batch: ``{"rules": [{"rule", "name",
    "event", and what it did}, ...]}``, the rules in the order they applied, at the time of
    the first; an entry of a later message of the batch has its own ``at``. The timeline
    names the rules from the entries (events stored before also have a top-level ``name``
    listing them). One row per conversation rather than per rule keeps the timeline short and
    the ingest cheap.

    Kept as the JSON text of its entries, the part naming the rule and the event encoded once
    per rule (``_entry_start``), what the rule did as the JSON members ``decisions_take``
    wrote: most conversations of a batch get one, and encoding each whole cost the ingest
    more than evaluating the rules."""

    __slots__ = ("at", "entries")

    def __init__(self, at: datetime) -> None:
        self.at = at
        self.entries: list[str] = []

    def add(self, rule: CompiledRule, event: str, effects: list[str], at: datetime) -> None:
        """``effects``: JSON members (``"key": value``), in the order the actions ran."""
        if at != self.at:
            effects.append(f'"at": {json_value_text(at.isoformat())}')
        self.entries.append(f"{_entry_start(rule.id, rule.name, event)}, {', '.join(effects)}}}")

    def json_text(self) -> str:
        return f'{{"rules": [{", ".join(self.entries)}]}}'


@lru_cache(maxsize=1024)
def _entry_start(rule_id: int, name: str, event: str) -> str:
    """``{"rule": …, "name": …, "event": …`` without its closing brace."""
    return json_value_text({"rule": rule_id, "name": name, "event": event})[:-1]


def _take(
    conversation: Conversation,
    rule: CompiledRule,
    action: Action,
    decisions: Decisions,
    effects: list[str],
    at: datetime,
    key: str,
    reply_to: str,
    name: str,
    event: str,
) -> None:
    """The actions ``decisions_take`` leaves to it: assignments, acknowledgements,
    escalations, notifications and webhook calls; what each did goes into ``effects``."""
    value = action.value
    if action.type == "assign":
        if value == "auto":
            if conversation.assignee_id is None:
                decisions.auto_assign[id(conversation)] = conversation
                effects.append('"assign": "auto"')
        elif conversation.assignee_id != value:
            # Assignments are facts of their own (the KPIs time them), as when agents assign.
            decisions.events.append(
                (
                    conversation,
                    EventKind.ASSIGNED,
                    {"rule": rule.id, "previous": conversation.assignee_id, "assignee": value},
                    at,
                )
            )
            effects.append(f'"assign": {value}')
            conversation.assignee_id = value
            decisions.auto_assign.pop(id(conversation), None)
            if conversation.status == Status.NEW:
                conversation.status = Status.OPEN
                decisions.opened_by_assignment.add(id(conversation))
    elif action.type == "acknowledge":
        # One acknowledgement per conversation and batch: the first rule's.
        if id(conversation) not in decisions.acknowledgements:
            decisions.acknowledgements[id(conversation)] = Acknowledgement(
                conversation, value, rule.id, name, reply_to, rule_name=rule.name
            )
            effects.append('"acknowledge": true')
    elif action.type == "escalate":
        # A rule acting on a breach escalates because of the SLA.
        trigger = EscalationTrigger.SLA if event == "sla_breached" else EscalationTrigger.RULE
        decisions.escalations.append((conversation, dict(value), rule.name, trigger))
        effects.append(f'"escalate": {json_value_text({k: v for k, v in value.items() if v})}')
    elif action.type == "notify":
        decisions.notifications.append((conversation, dict(value), rule.name))
        effects.append('"notify": true')
    elif action.type == "webhook":
        decisions.webhooks.append((conversation, int(value), rule.name, rule.id, key))
        effects.append(f'"webhook": {int(value)}')


def agents_load(*, user_ids: Iterable[int]) -> dict[int, int]:
    """How many active conversations each of these agents holds (absent: none), in one query:
    what capacity limits count."""
    return dict(
        Conversation.objects.filter(assignee_id__in=set(user_ids), status__in=ACTIVE_STATUSES)
        .values("assignee_id")
        .annotate(n=Count("id"))
        .values_list("assignee_id", "n")
    )


def auto_assign(
    decisions: Decisions,
    *,
    now: datetime,
    batch: Callable[[], Iterable[tuple[Conversation, int | None]]] | None = None,
    from_queue: bool = False,
) -> None:
    """Round robin within each conversation's team, over members who are online and under
    their capacity: the one assigned longest ago goes next. Two queries whatever the batch.
    ``batch``: the batch's conversations as they are in memory, each with the agent who held it
    active in the database before (None: nobody, or new), asked for only when some
    conversation is to be auto-assigned: what the batch moved (a reopening, a rule's named
    assignment) counts towards capacity before the database has it."""
    named_assignments_check(decisions)
    wanted = [c for c in decisions.auto_assign.values() if c.team_id and not c.assignee_id]
    if not wanted:
        return
    if not from_queue and presence.queue_may_wait():
        # Where conversations wait already, a new one goes behind them, not ahead: the queue
        # is handed out oldest first as soon as this batch is written.
        waiting = set(
            QueuedAssignment.objects.filter(team_id__in={c.team_id for c in wanted})
            .values_list("team_id", flat=True)
            .distinct()
        )
        if waiting:
            decisions.queued.extend(c for c in wanted if c.team_id in waiting)
            wanted = [c for c in wanted if c.team_id not in waiting]
            if not wanted:
                return
    # Locked, so two batches at once cannot both hand an agent their last free place.
    memberships = list(
        TeamMembership.objects.select_for_update(of=("self",))
        .filter(team_id__in={c.team_id for c in wanted}, user__is_active=True)
        .order_by("pk")
    )
    if from_queue:
        # A hand-out that waited for the lock stamps its turns after those given meanwhile.
        now = max(now, timezone.now())
    online = presence.agents_online(user_ids={m.user_id for m in memberships})
    members = [m for m in memberships if m.user_id in online]
    if not members:
        decisions.queued.extend(wanted)
        return
    may_reply = _reply_rights({m.user_id for m in members}, {c.channel_id for c in wanted})
    load = agents_load(user_ids={m.user_id for m in members})
    for conversation, before in batch() if batch is not None else ():
        after = conversation.assignee_id if conversation.status in ACTIVE_STATUSES else None
        if after != before:
            if after is not None:
                load[after] = load.get(after, 0) + 1
            if before is not None:
                load[before] = load.get(before, 0) - 1
    never = datetime.min.replace(tzinfo=now.tzinfo)
    touched: dict[int, TeamMembership] = {}
    for turn, conversation in enumerate(wanted):
        candidates = [
            m
            for m in members
            if m.team_id == conversation.team_id
            and may_reply(m.user_id, conversation.channel_id)
            and (m.capacity is None or load.get(m.user_id, 0) < m.capacity)
        ]
        if not candidates:
            decisions.queued.append(conversation)  # everyone is away or full: it waits
            continue
        chosen = min(candidates, key=lambda m: (m.last_auto_assigned_at or never, m.pk))
        # Each turn a little later than the one before, so the order holds within a batch;
        # never earlier than the agent's last turn (a run that waited for the lock).
        stamp = now + timedelta(microseconds=turn)
        previous = chosen.last_auto_assigned_at
        if previous is not None and stamp <= previous:
            stamp = previous + timedelta(microseconds=1)
        chosen.last_auto_assigned_at = stamp
        touched[chosen.pk] = chosen
        load[chosen.user_id] = load.get(chosen.user_id, 0) + 1
        decisions.events.append(
            (
                conversation,
                EventKind.ASSIGNED,
                {"previous": None, "assignee": chosen.user_id, "auto": True},
                now,
            )
        )
        conversation.assignee_id = chosen.user_id
        if conversation.status == Status.NEW:
            conversation.status = Status.OPEN
    if touched:
        TeamMembership.objects.bulk_update(list(touched.values()), ["last_auto_assigned_at"])


def _reply_rights(user_ids: set[int], channel_ids: set[int], *, reply: bool = True) -> Any:
    """Who of these may reply on (or only see) which of these channels, admins on all: two
    queries. Work and notifications only go to someone who can log in, open the conversation
    and answer it: a deactivated account has no rights here."""
    from django.contrib.auth.models import User

    from governance.models import ChannelAccess, Role

    access = ChannelAccess.objects.filter(
        channel_id__in=channel_ids,
        team__memberships__user_id__in=user_ids,
        team__memberships__user__is_active=True,
    )
    if reply:
        access = access.filter(can_reply=True)
    pairs = set(access.values_list("team__memberships__user_id", "channel_id"))
    # Admins as governance.roles counts them: the admin group, or a superuser.
    admins = set(
        User.objects.filter(
            Q(groups__name=Role.ADMIN) | Q(is_superuser=True), pk__in=user_ids, is_active=True
        ).values_list("pk", flat=True)
    )
    return lambda user_id, channel_id: user_id in admins or (user_id, channel_id) in pairs


def named_assignments_check(decisions: Decisions) -> None:
    """A rule that names an agent who may not reply on the conversation's channel assigns
    nobody: the conversation stays in its queue, and the timeline says why."""
    named = [
        (c, data)
        for c, kind, data, _ in decisions.events
        if kind == EventKind.ASSIGNED
        and isinstance(data, dict)
        and "rule" in data
        and c.assignee_id == data["assignee"]
    ]
    if not named:
        return
    may_reply = _reply_rights(
        {data["assignee"] for _, data in named}, {c.channel_id for c, _ in named}
    )
    for conversation, data in named:
        if not may_reply(conversation.assignee_id, conversation.channel_id):
            conversation.assignee_id = data["previous"]
            data["refused"] = "The agent may not reply on this channel."
            if conversation.assignee_id is None and id(conversation) in (
                decisions.opened_by_assignment
            ):
                conversation.status = Status.NEW  # nobody took it after all


def acknowledgements_prepare(
    decisions: Decisions, *, channel: ChannelAccount, now: datetime
) -> list[Acknowledgement]:
    """The acknowledgements governance lets out, rolled into their conversations in memory,
    and those it holds for approval (``held_for``: stored, not sent, counted once approved);
    refused and held ones go on the timeline with the reasons. An acknowledgement is no
    response by a person: it neither meets an SLA target nor stops the customer's wait."""
    allowed: list[Acknowledgement] = []
    policy = setup_cache.publishing_policy(channel) if decisions.acknowledgements else None
    for ack in decisions.acknowledgements.values():
        name = ack.name.strip() or "there"
        ack.template = acknowledgement_render(
            text=ack.template, first_name=name.split()[0], name=name, channel=channel.name
        )
        decision = outbound_check(
            user=None, channel=channel, text=ack.template, now=now, policy=policy
        )
        if not decision.allowed:
            held = decision.verdict == Verdict.NEEDS_APPROVAL
            key = "acknowledgement_held" if held else "acknowledgement_refused"
            decisions.events.append(
                (
                    ack.conversation,
                    EventKind.RULE_APPLIED,
                    {"rule": ack.rule_id, "name": ack.rule_name, key: decision.reasons},
                    now,
                )
            )
            if held:
                ack.held_for = decision.reasons
                allowed.append(ack)
            continue
        conversation = ack.conversation
        conversation.message_count += 1
        if now >= conversation.last_message_at:
            conversation.last_message_at = now
            conversation.last_message_preview = ack.template[:280]
            conversation.last_message_direction = Direction.OUT
        allowed.append(ack)
    return allowed


def decisions_write(
    decisions: Decisions,
    *,
    channel: ChannelAccount,
    acknowledgements: Sequence[Acknowledgement],
    now: datetime,
) -> None:
    """After the conversations are stored: timeline, acknowledgements, notifications, webhooks
    and escalations. Tags are written by the caller with its own."""
    # PostgreSQL's driver quotes each parameter of an INSERT at a cost above the row's own:
    # COPY takes the rows as text. SQLite runs a multi-row INSERT for less than a COPY's
    # statement per row.
    insert = rows_copy if connection.vendor == "postgresql" else rows_insert
    insert(
        ConversationEvent,
        ("conversation", "kind", "data", "created_at"),
        [(c.id, kind, data, at) for c, kind, data, at in decisions.timeline()],
    )
    _assignments_publish(decisions)
    if decisions.queued:
        _queue(decisions.queued, now)
    if acknowledgements:
        _acknowledgements_queue(channel, acknowledgements, now)
    if decisions.notifications:
        _notify(decisions.notifications, now)
    if decisions.webhooks:
        _webhooks(decisions.webhooks)
    escalated: set[int] = set()
    for conversation, target, rule_name, trigger in decisions.escalations:
        if conversation.pk not in escalated:  # once per conversation and batch
            escalated.add(conversation.pk)
            _escalate(conversation, target, rule_name, trigger)


def _queue(conversations: Sequence[Conversation], now: datetime) -> None:
    """Put conversations nobody could take in their team's queue; one already there keeps
    its place (a retried batch, or a later rule asking again), in the team it is in now."""
    QueuedAssignment.objects.bulk_create(
        [
            QueuedAssignment(conversation_id=c.pk, team_id=c.team_id, queued_at=now)
            for c in conversations
            if c.team_id is not None
        ],
        update_conflicts=True,
        unique_fields=["conversation"],
        update_fields=["team"],
    )
    transaction.on_commit(_queue_waiting)


def _queue_waiting() -> None:
    """Note that some conversation waits, and start a hand-out: one queued behind others, or
    while an agent frees a place, need not wait for the beat."""
    from conversations.tasks import assign_queued_conversations

    cache.set(presence.QUEUE_WAITING_KEY, True, timeout=None)
    assign_queued_conversations.delay()


def queued_assign(*, now: datetime | None = None, page: int = 500) -> int:
    """Hand out the conversations waiting for an agent, oldest first, as auto-assignment
    does (round robin over the team's members online and under capacity); let go of those
    that no longer wait: assigned by someone meanwhile, no longer active or escalated, or
    moved to another team than the one they waited in. Run by the beat, and when an agent
    comes online while some wait. The queue is read in pages of ``page``, a transaction
    each, so a long wait in one team does not keep the others' from being handed out.
    Returns how many it assigned."""
    # One run at a time: two would skip each other's rows and could hand out a newer
    # conversation before an older one. The lock expires on its own if a run dies.
    if not cache.add(_HAND_OUT_LOCK, True, timeout=300):
        return 0
    try:
        assigned = 0
        after: tuple[datetime, int] | None = None
        while True:
            # The time of each page is taken as it starts: a page that waited for the
            # members' lock must not stamp turns older than those given meanwhile.
            count, last, full = _queued_assign_page(
                now=now or timezone.now(), after=after, size=page
            )
            assigned += count
            if not full or last is None:
                break
            after = last
        # "None wait" first, then the queue looked at: one queued in between has set the hint
        # again after this, or is seen here. A lost hint is set again too.
        cache.set(presence.QUEUE_WAITING_KEY, False, timeout=None)
        if QueuedAssignment.objects.exists():  # some still wait (or were queued meanwhile)
            cache.set(presence.QUEUE_WAITING_KEY, True, timeout=None)
        return assigned
    finally:
        cache.delete(_HAND_OUT_LOCK)


_HAND_OUT_LOCK = "routing:queued-assign-running"


def _queued_assign_page(
    *, now: datetime, after: tuple[datetime, int] | None, size: int
) -> tuple[int, tuple[datetime, int] | None, bool]:
    """One page of the queue from after ``after``: how many it assigned, the page's last
    entry (None: nothing there), and whether the page was full (more may follow)."""
    with transaction.atomic():
        # Rows another run or an agent's change holds are left to the next run.
        # Only the conversations are locked: whatever writes a queue row holds its
        # conversation's lock, and a queue row locked while its conversation is skipped
        # would hold up the ingest re-queueing it while this page waits for the members.
        entries = QueuedAssignment.objects.select_for_update(
            skip_locked=True, of=("conversation",)
        ).select_related("conversation")
        if after is not None:
            entries = entries.filter(
                Q(queued_at__gt=after[0]) | Q(queued_at=after[0], conversation_id__gt=after[1])
            )
        waiting = list(entries.order_by("queued_at", "conversation_id")[:size])
        if not waiting:
            return 0, None, False
        decisions = Decisions()
        queued_at: dict[int, datetime] = {}
        released: list[int] = []
        for entry in waiting:
            conversation = entry.conversation
            if (
                conversation.assignee_id is not None
                or conversation.status not in _QUEUED_STATUSES
                or conversation.team_id != entry.team_id
            ):
                released.append(conversation.pk)
            else:
                decisions.auto_assign[id(conversation)] = conversation
                queued_at[id(conversation)] = entry.queued_at
        auto_assign(decisions, now=now, from_queue=True)
        assigned = [c for c in decisions.auto_assign.values() if c.assignee_id is not None]
        if assigned:
            for conversation in assigned:
                conversation.updated_at = now
            Conversation.objects.bulk_update(assigned, ["assignee", "status", "updated_at"])
            for conversation, _, data, _ in decisions.events:
                if isinstance(data, dict):
                    data["queued_at"] = queued_at[id(conversation)].isoformat()
            rows_insert(
                ConversationEvent,
                ("conversation", "kind", "data", "created_at"),
                [(c.id, kind, data, at) for c, kind, data, at in decisions.events],
            )
            _assignments_publish(decisions)
            released.extend(c.pk for c in assigned)
        if released:
            QueuedAssignment.objects.filter(pk__in=released).delete()
    last = waiting[-1]
    return len(assigned), (last.queued_at, last.conversation_id), len(waiting) == size


# What a conversation waiting for an agent may be in to get one: an escalated one is with
# the department it went to.
_QUEUED_STATUSES = frozenset(ACTIVE_STATUSES) - {Status.ESCALATED}


def _assignments_publish(decisions: Decisions) -> None:
    """The rules' assignments (named or automatic) as "conversation.assigned" webhook events,
    as an agent's are; nothing, not even a query, when nobody subscribes. Keyed by the
    conversation, the agent and the time, so the same assignment is never sent twice."""
    from conversations.webhook_events import (
        contacts_attach,
        conversation_payload,
        webhook_event_publish,
        webhook_subscribed,
    )

    wanted = EventKind.ASSIGNED  # read once: a member's lookup costs more than the test
    assigned = [
        (conversation, data, at)
        for conversation, kind, data, at in decisions.events
        if kind == wanted and isinstance(data, dict) and not data.get("refused")
    ]
    if not assigned or not webhook_subscribed("conversation.assigned"):
        return
    contacts_attach(conversation for conversation, _, _ in assigned)
    webhook_event_publish(
        event="conversation.assigned",
        items=[
            (
                f"rule:{conversation.pk}:{data['assignee']}:{at.isoformat()}",
                {"conversation": conversation_payload(conversation), "details": data},
            )
            for conversation, data, at in assigned
        ],
    )


_ACKNOWLEDGEMENT_COLUMNS = (
    "conversation",
    "channel",
    "direction",
    "kind",
    "in_reply_to_external_id",
    "body",
    "language",
    "keywords",
    "created_at",
    "received_at",
    "delivery_status",
    "error",
    "raw",
)
_ACKNOWLEDGEMENT_FIELDS = tuple(
    f"{name}_id" if name in ("conversation", "channel") else name
    for name in _ACKNOWLEDGEMENT_COLUMNS
)


def _acknowledgements_queue(
    channel: ChannelAccount, acknowledgements: Sequence[Acknowledgement], now: datetime
) -> None:
    from channels_ingest.tasks import send_messages
    from governance.approvals import approval_request

    # Rows rather than model instances: only a held one needs its instance, for its approval.
    values: list[tuple[Any, ...]] = [
        (
            ack.conversation.pk,
            channel.pk,
            Direction.OUT,
            MessageKind.DM if ack.conversation.thread_key.startswith("dm:") else MessageKind.REPLY,
            ack.reply_to,
            ack.template,
            "",
            [],
            now,
            now,
            DeliveryStatus.PENDING_APPROVAL if ack.held_for else DeliveryStatus.QUEUED,
            "",
            {},
        )
        for ack in acknowledgements
    ]
    # A batch acknowledges a few conversations: one INSERT costs less than keys, then COPY.
    keys = [
        pk
        for (pk,) in rows_insert_returning(Message, _ACKNOWLEDGEMENT_COLUMNS, values, by_copy=False)
    ]
    held = [
        (pk, row, ack)
        for pk, row, ack in zip(keys, values, acknowledgements, strict=True)
        if ack.held_for
    ]
    policy = setup_cache.publishing_policy(channel) if held else None
    for pk, row, ack in held:
        message = Message(pk=pk, **dict(zip(_ACKNOWLEDGEMENT_FIELDS, row, strict=True)))
        message.conversation = ack.conversation
        message._state.adding = False
        approval_request(
            message=message,
            requested_by=None,
            reasons=ack.held_for,
            channel=channel,
            policy=policy,
            now=now,
        )
    ids = [pk for pk, ack in zip(keys, acknowledgements, strict=True) if not ack.held_for]
    if ids:
        # One task for the batch: a worker enqueues each send, so the ingest does not pay
        # a broker round trip per acknowledgement.
        transaction.on_commit(lambda: send_messages.delay(ids))


def _notify(items: Sequence[tuple[Conversation, dict[str, Any], str]], now: datetime) -> None:
    team_ids = {t for _, spec, _ in items for t in spec.get("teams", ())}
    members: dict[int, set[int]] = defaultdict(set)
    if team_ids:
        for team_id, member_id in TeamMembership.objects.filter(team_id__in=team_ids).values_list(
            "team_id", "user_id"
        ):
            members[team_id].add(member_id)
    rows = []
    emails: list[tuple[list[int], str, int]] = []
    wanted: list[tuple[Conversation, set[int], dict[str, Any], str]] = []
    for conversation, spec, rule_name in items:
        recipients = set(spec.get("users", ()))
        for team_id in spec.get("teams", ()):
            recipients |= members[team_id]
        if spec.get("assignee") and conversation.assignee_id:
            recipients.add(conversation.assignee_id)
        wanted.append((conversation, recipients, spec, rule_name))
    # The notification quotes the customer: only people who may see the channel get it.
    may_see = _reply_rights(
        {u for _, r, _, _ in wanted for u in r}, {c.channel_id for c, *_ in wanted}, reply=False
    )
    for conversation, recipients, spec, rule_name in wanted:
        recipients = {u for u in recipients if may_see(u, conversation.channel_id)}
        text = f"{spec.get('message') or f'Rule “{rule_name}” matched'} (#{conversation.pk})"
        rows += [
            Notification(
                recipient_id=uid, conversation=conversation, text=text[:300], created_at=now
            )
            for uid in sorted(recipients)
        ]
        if spec.get("email") and recipients:
            emails.append((sorted(recipients), text, conversation.pk))
    Notification.objects.bulk_create(rows)
    if emails:
        from conversations.tasks import send_notification_emails

        transaction.on_commit(lambda: send_notification_emails.delay(emails))


def _call_key(*parts: object) -> str:
    """A unique key per call: readable when short, hashed when the parts are long."""
    key = ":".join(str(p) for p in parts)
    return key if len(key) <= 200 else f"{parts[0]}:{hashlib.sha256(key.encode()).hexdigest()}"


def _webhooks(items: Sequence[tuple[Conversation, int, str, int, str]]) -> None:
    from conversations.models import WebhookCall
    from conversations.webhook_calls import webhook_calls_enqueue

    endpoints = WebhookEndpoint.objects.in_bulk({endpoint for _, endpoint, *_ in items})
    webhook_calls_enqueue(
        [
            WebhookCall(
                endpoint=endpoint,
                event="rule.matched",
                payload={"rule": rule_name, "conversation": conversation_payload(conversation)},
                key=_call_key("rule", rule_id, endpoint_id, conversation.pk, key),
            )
            for conversation, endpoint_id, rule_name, rule_id, key in items
            if (endpoint := endpoints.get(endpoint_id)) is not None and endpoint.is_active
        ]
    )


def conversation_payload(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": conversation.pk,
        "channel": conversation.channel_id,
        "status": conversation.status,
        "priority": conversation.priority,
        "team": conversation.team_id,
        "assignee": conversation.assignee_id,
        "subject": conversation.subject,
        "last_message": conversation.last_message_preview,
        "sentiment": conversation.sentiment,
        "url": f"{_site_url()}/inbox/{conversation.pk}/",
    }


def _site_url() -> str:
    from django.conf import settings

    return (getattr(settings, "SITE_URL", "") or "http://localhost:8000").rstrip("/")


def _escalate(
    conversation: Conversation, target: dict[str, Any], rule_name: str, trigger: str
) -> None:
    from conversations.escalations import escalation_open

    path = EscalationPath.objects.filter(pk=target.get("path") or 0).first()
    department = Department.objects.filter(pk=target.get("department") or 0).first()
    if path is None and department is None:
        return
    if trigger == EscalationTrigger.RULE:
        opened = (
            Escalation.objects.filter(conversation=conversation, status=EscalationStatus.OPEN)
            .values_list("created_at", flat=True)
            .first()
        )
        if opened is not None:
            # With a department already: another angry message does not climb a level, and
            # the timeline says so, once per rule and escalation, rather than leave the rule's
            # "escalate" unexplained (or repeat it for every message a noisy customer sends).
            said = ConversationEvent.objects.filter(
                conversation=conversation,
                kind=EventKind.RULE_APPLIED,
                created_at__gte=opened,
                data__name=rule_name,
                data__has_key="escalation_refused",
            ).exists()
            if not said:
                ConversationEvent.objects.create(
                    conversation=conversation,
                    kind=EventKind.RULE_APPLIED,
                    data={
                        "name": rule_name,
                        "escalation_refused": "The conversation is already escalated.",
                    },
                )
            return
    try:
        escalation_open(
            conversation=conversation,
            trigger=trigger,
            actor=None,
            reason=target.get("reason", "") or f"Rule “{rule_name}”",
            path=path,
            department=department,
            rule_name=rule_name,
        )
    except ValueError as exc:
        # Already with a department, or at the last level: the timeline says why.
        ConversationEvent.objects.create(
            conversation=conversation,
            kind=EventKind.RULE_APPLIED,
            data={"name": rule_name, "escalation_refused": str(exc)},
        )


# --- Rules on one conversation, outside the pipeline -----------------------------------


def rules_run(*, conversation_id: int, event: str, book: RuleBook | None = None) -> int:
    """Evaluate the rules for an event on a stored conversation and carry out what matches,
    with the facts of its latest customer message."""
    from conversations.sla import SLA_FIELDS, SlaSetup, sla_clear, sla_policy_change

    book = book or RuleBook.load()
    if not any(event in rule.events for rule in book.rules):
        return 0
    now = timezone.now()
    with transaction.atomic():
        conversation = (
            Conversation.objects.select_for_update(of=("self",))
            .select_related("channel", "contact")
            .filter(pk=conversation_id)
            .first()
        )
        if conversation is None:
            return 0
        last = (
            Message.objects.filter(conversation=conversation, direction=Direction.IN)
            .select_related("author_identity")
            .order_by("-created_at", "-id")
            .first()
        )
        facts = Facts(
            event=event,
            platform=conversation.channel.platform,
            channel_id=conversation.channel_id,
            kind=last.kind if last else "",
            text=last.body if last else "",
            sentiment=last.sentiment if last else conversation.sentiment,
            language=last.language if last else "",
            is_vip=conversation.contact.is_vip,
            followers=last.author_identity.followers_count
            if last and last.author_identity
            else None,
            has_open_escalation=Escalation.objects.filter(
                conversation__contact_id=conversation.contact_id, status=EscalationStatus.OPEN
            ).exists(),
            tag_ids=frozenset(conversation.tags.values_list("pk", flat=True)),
            priority=conversation.priority,
            at=now,
        )
        matches = book.evaluate(facts, [event])
        if not matches:
            return 0
        decisions = Decisions()
        priority_before = conversation.priority
        decisions_take(
            conversation,
            matches,
            decisions,
            at=now,
            key=f"{event}:{now.isoformat()}",
            name=conversation.contact.name,
            tags=facts.tag_ids,
            # The key names this run; an acknowledgement answers the customer's latest post,
            # as an agent's reply does.
            reply_to=(last.external_id or "") if last else "",
        )
        auto_assign(decisions, now=now)
        acknowledgements = acknowledgements_prepare(
            decisions, channel=conversation.channel, now=now
        )
        if conversation.is_monitoring:
            # Only listened to now (a rule marked it so): no clock runs, as in the ingest.
            sla_clear(conversation)
        elif conversation.priority != priority_before:
            sla_policy_change(
                conversation, setup=SlaSetup.load(), is_vip=conversation.contact.is_vip, at=now
            )
        conversation.save(
            update_fields=[
                "priority",
                "team",
                "assignee",
                "status",
                "is_monitoring",
                "message_count",
                "last_message_at",
                "last_message_preview",
                "last_message_direction",
                *SLA_FIELDS,
                "updated_at",
            ]
        )
        tag_ids = decisions.tags.get(id(conversation), set())
        if tag_ids:
            conversation.tags.add(*tag_ids)
        decisions_write(
            decisions, channel=conversation.channel, acknowledgements=acknowledgements, now=now
        )
    return len(matches)
