"""Forms of the routing settings pages: rules, SLA policies, business hours, departments,
escalation paths, webhook endpoints and auto-assignment capacities.

Editable lists (a rule's conditions and actions, a path's levels, a calendar's holidays) are
posted as indexed fields, ``conditions-3-field``; rows are read in the order the browser sends
them, which is the order on the page, so the indexes only need to be unique.
"""

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, time
from itertools import pairwise
from typing import Any, cast
from zoneinfo import available_timezones

from django import forms
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Exists, Model, OuterRef, QuerySet
from django.utils import timezone

from channels_ingest.classify import language_of, sentiment_score
from channels_ingest.models import ChannelAccount
from channels_ingest.platforms import Platform
from conversations.business_hours import WEEKDAY_NAMES, CalendarError
from conversations.business_hours import BusinessCalendar as CalendarRules
from conversations.models import (
    BusinessCalendar,
    Department,
    DepartmentDelivery,
    Direction,
    Escalation,
    EscalationLevel,
    EscalationPath,
    EscalationStatus,
    Holiday,
    Priority,
    RoutingRule,
    SlaPolicy,
    Tag,
    WebhookEndpoint,
)
from conversations.routing import RuleBook
from conversations.rules import (
    ACTION_TYPES,
    CONDITION_FIELDS,
    EVENTS,
    KINDS,
    PRIORITIES,
    Facts,
    Known,
    RuleError,
    events_raised,
    rule_describe,
    rule_validate,
)
from conversations.selectors import messages_visible_to
from conversations.webhook_events import WEBHOOK_EVENTS
from conversations.webhook_guard import webhook_address_problem
from governance.audit import audit_record
from governance.models import Role, Team, TeamMembership

FIELD_LABELS: dict[str, str] = {
    "text": "Text",
    "channel": "Channel",
    "platform": "Platform",
    "kind": "Message kind",
    "sentiment": "Sentiment",
    "language": "Language",
    "vip": "VIP contact",
    "followers": "Followers",
    "open_escalation": "Open escalation",
    "business_hours": "Business hours",
    "tags": "Tags",
    "priority": "Priority",
}
OP_LABELS: dict[str, str] = {
    "is": "is",
    "is_not": "is not",
    "contains_any": "contains any of",
    "contains_none": "contains none of",
    "matches_regex": "matches the pattern",
    "below": "is below",
    "above": "is above",
    "within": "is within",
    "outside": "is outside",
    "has_any": "has any of",
    "has_all": "has all of",
    "has_none": "has none of",
    "at_least": "is at least",
    "at_most": "is at most",
}
ACTION_LABELS: dict[str, str] = {
    "set_priority": "Set priority",
    "set_team": "Set team",
    "assign": "Assign to",
    "add_tags": "Add tags",
    "mark_monitoring": "Mark as monitoring",
    "acknowledge": "Acknowledge publicly",
    "escalate": "Escalate",
    "notify": "Notify",
    "webhook": "Call a webhook",
}
assert FIELD_LABELS.keys() == CONDITION_FIELDS.keys()
assert ACTION_LABELS.keys() == set(ACTION_TYPES)

# A new row starts as the most common condition and action.
NEW_CONDITION: dict[str, Any] = {"field": "text", "op": "contains_any", "value": []}
NEW_ACTION: dict[str, Any] = {"type": "set_priority", "value": 3}

Choices = list[tuple[str, str]]
NONE_SHOWN = "\N{EN DASH}"


# --- What rules may refer to ------------------------------------------------------------


def _user_label(user: User) -> str:
    return user.get_full_name() or user.username


@dataclass(frozen=True)
class Catalog:
    """Everything a rule may name, read once per page: one query per kind of thing."""

    teams: dict[int, str]
    users: dict[int, str]  # every user, for names; active ones are listed below
    active_user_ids: frozenset[int]
    agent_ids: frozenset[int]
    tags: dict[int, str]
    channels: dict[int, str]
    calendars: dict[int, str]
    paths: dict[int, str]
    departments: dict[int, str]
    endpoints: dict[int, str]

    @classmethod
    def load(cls) -> "Catalog":
        in_a_role = User.groups.through.objects.filter(
            user_id=OuterRef("pk"), group__name__in=Role.values
        )
        users = list(
            User.objects.annotate(in_role=Exists(in_a_role)).order_by(
                "first_name", "last_name", "username"
            )
        )

        def named(queryset: QuerySet[Any]) -> dict[int, str]:
            return dict(queryset.values_list("pk", "name"))

        return cls(
            teams=named(Team.objects.all()),
            users={u.pk: _user_label(u) for u in users},
            active_user_ids=frozenset(u.pk for u in users if u.is_active),
            agent_ids=frozenset(u.pk for u in users if u.is_active and u.in_role),
            tags=named(Tag.objects.all()),
            channels=named(ChannelAccount.objects.all()),
            calendars=named(BusinessCalendar.objects.all()),
            paths=named(EscalationPath.objects.all()),
            departments=named(Department.objects.all()),
            endpoints=named(WebhookEndpoint.objects.all()),
        )

    def known(self) -> Known:
        return Known(
            platforms=frozenset(Platform.values),
            channel_ids=frozenset(self.channels),
            team_ids=frozenset(self.teams),
            agent_ids=self.agent_ids,
            user_ids=self.active_user_ids,
            tag_ids=frozenset(self.tags),
            calendar_ids=frozenset(self.calendars),
            path_ids=frozenset(self.paths),
            department_ids=frozenset(self.departments),
            endpoint_ids=frozenset(self.endpoints),
        )

    def names(self) -> dict[str, Mapping[Any, str]]:
        """For ``rule_describe``: what to call each id."""
        return {
            "platform": dict(Platform.choices),
            "channel": self.channels,
            "calendar": self.calendars,
            "tag": self.tags,
            "team": self.teams,
            "user": self.users,
            "path": self.paths,
            "department": self.departments,
            "endpoint": self.endpoints,
        }

    def options(self) -> dict[str, Choices]:
        """The choices of the editor's selects, values as strings."""

        def pairs(items: Iterable[tuple[Any, str]]) -> Choices:
            return [(str(value), label) for value, label in items]

        active = [(pk, name) for pk, name in self.users.items() if pk in self.active_user_ids]
        return {
            "platform": pairs(Platform.choices),
            "channel": pairs(self.channels.items()),
            "kind": pairs(KINDS.items()),
            "team": pairs(self.teams.items()),
            "agent": pairs((pk, name) for pk, name in active if pk in self.agent_ids),
            "user": pairs(active),
            "tag": pairs(self.tags.items()),
            "calendar": pairs(self.calendars.items()),
            "path": pairs(self.paths.items()),
            "department": pairs(self.departments.items()),
            "endpoint": pairs(self.endpoints.items()),
            "priority": pairs(PRIORITIES.items()),
            "field": list(FIELD_LABELS.items()),
            "action": list(ACTION_LABELS.items()),
        }


def rule_summary(rule: RoutingRule, names: Mapping[str, Mapping[Any, str]]) -> dict[str, Any]:
    """A rule in words for the list and the dry run. A definition saved around the editor may
    not describe; it says so instead of failing the page."""
    try:
        when = rule_describe(conditions=rule.conditions, actions=[], names=names)
        then = rule_describe(conditions=[], actions=rule.actions, names=names)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        when, then = [], ["This rule's definition cannot be read; open it to fix it."]
    return {
        "events": [EVENTS.get(e, str(e)) for e in rule.events if isinstance(e, str)],
        "conditions": when,
        "actions": then,
        "joiner": "and" if rule.match == "all" else "or",
    }


# --- Indexed rows ----------------------------------------------------------------------

_ROW_KEY = re.compile(r"(?P<group>[a-z_]+)-(?P<index>\d+)-(?P<part>[a-z_]+)")


def rows_parse(data: Mapping[str, Any], group: str) -> list[tuple[int, dict[str, list[str]]]]:
    """The posted rows of a group, in page order: (index, part -> values)."""
    rows: dict[int, dict[str, list[str]]] = {}
    getlist = getattr(data, "getlist", None)
    for key in data:
        match = _ROW_KEY.fullmatch(key)
        if match is None or match["group"] != group:
            continue
        values = getlist(key) if getlist else _as_list(data[key])
        rows.setdefault(int(match["index"]), {})[match["part"]] = [str(v) for v in values]
    return list(rows.items())


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _first(row: Mapping[str, list[str]], part: str) -> str:
    values = row.get(part) or [""]
    return values[0]


def _number(text: str, kind: type[int] | type[float]) -> Any:
    """The number typed, None when empty, or the text itself so that the validation names
    the problem and the form shows what was typed."""
    text = text.strip()
    if not text:
        return None
    try:
        return kind(text)
    except ValueError:
        return text


def _ids(values: Iterable[str]) -> list[Any]:
    return [_number(v, int) for v in values if v.strip()]


def _words(text: str, *, lower: bool = False) -> list[str]:
    words = [w.strip() for w in text.split(",") if w.strip()]
    return [w.lower() for w in words] if lower else words


def condition_parse(row: Mapping[str, list[str]]) -> dict[str, Any]:
    name, op, values = _first(row, "field"), _first(row, "op"), row.get("value", [])
    text = values[0] if values else ""
    value: Any
    if name in ("platform", "kind"):
        value = [v for v in values if v]
    elif name in ("channel", "tags"):
        value = _ids(values)
    elif name == "text" and op == "matches_regex":
        value = text.strip()
    elif name == "text":
        value = _words(text)
    elif name == "language":
        value = _words(text, lower=True)
    elif name == "sentiment":
        value = _number(text, float)
    elif name in ("followers", "priority"):
        value = _number(text, int)
    elif name in ("vip", "open_escalation"):
        value = {"true": True, "false": False}.get(text, text)
    elif name == "business_hours":
        value = _number(text, int)
    else:
        value = text
    return {"field": name, "op": op, "value": value}


def action_parse(row: Mapping[str, list[str]]) -> dict[str, Any]:
    kind, values = _first(row, "type"), row.get("value", [])
    text = values[0] if values else ""
    value: Any
    if kind in ("set_priority", "set_team"):
        value = _number(text, int)
    elif kind == "assign":
        value = "auto" if text == "auto" else _number(text, int)
    elif kind == "add_tags":
        value = _ids(values)
    elif kind == "mark_monitoring":
        value = None
    elif kind == "acknowledge":
        value = text.strip()
    elif kind == "webhook":
        value = {"endpoint": _number(text, int)}
    elif kind == "escalate":
        target, _, pk = _first(row, "target").partition(":")
        value = {target: _number(pk, int)} if target in ("path", "department") else {}
        if reason := _first(row, "reason").strip():
            value["reason"] = reason
    elif kind == "notify":
        value = {
            "users": _ids(row.get("users", [])),
            "teams": _ids(row.get("teams", [])),
            "assignee": _first(row, "assignee") == "on",
            "email": _first(row, "email") == "on",
            "message": _first(row, "message").strip(),
        }
    else:
        value = text
    return {"type": kind, "value": value}


@dataclass
class RowView:
    """One editable row as the page shows it: what was stored or typed, and its problems."""

    prefix: str
    kind: str  # a condition's field or an action's type
    op: str = ""
    selected: frozenset[str] = frozenset()
    text: str = ""
    parts: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def ops(self) -> Choices:
        return [(op, OP_LABELS[op]) for op in CONDITION_FIELDS.get(self.kind, ())]


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _as_selected(value: Any) -> frozenset[str]:
    values = value if isinstance(value, list) else [value]
    return frozenset("" if v is None else _as_text(v) for v in values)


def condition_view(prefix: str, condition: Any) -> RowView:
    condition = condition if isinstance(condition, dict) else {}
    value = condition.get("value")
    return RowView(
        prefix=prefix,
        kind=str(condition.get("field", "")),
        op=str(condition.get("op", "")),
        selected=_as_selected(value),
        text=_as_text(value),
    )


def action_view(prefix: str, action: Any) -> RowView:
    action = action if isinstance(action, dict) else {}
    kind, value = str(action.get("type", "")), action.get("value")
    row = RowView(prefix=prefix, kind=kind)
    if kind == "webhook" and isinstance(value, dict):
        value = value.get("endpoint")
    if kind == "escalate" and isinstance(value, dict):
        target = next((k for k in ("path", "department") if k in value), "")
        row.parts = {
            "target": f"{target}:{value[target]}" if target else "",
            "reason": value.get("reason") or "",
        }
    elif kind == "notify" and isinstance(value, dict):
        row.parts = {
            "users": _as_selected(value.get("users") or []),
            "teams": _as_selected(value.get("teams") or []),
            "assignee": bool(value.get("assignee")),
            "email": bool(value.get("email")),
            "message": value.get("message") or "",
        }
    else:
        row.selected, row.text = _as_selected(value), _as_text(value)
    return row


def _problems_by_row(messages: list[str], noun: str) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for message in messages:
        if (match := re.match(rf"{noun} (\d+): (.*)", message)) is not None:
            found.setdefault(int(match[1]), []).append(match[2])
    return found


# --- Rules -----------------------------------------------------------------------------


class RuleForm(forms.ModelForm[RoutingRule]):
    """A rule's settings and its condition and action rows, checked by ``rule_validate``
    against what exists now; nothing invalid is saved."""

    events = forms.MultipleChoiceField(
        choices=list(EVENTS.items()),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Run when",
    )

    class Meta:
        model = RoutingRule
        fields = ["name", "is_active", "events", "match", "stop_processing"]
        labels = {"is_active": "Active", "match": "Conditions"}
        widgets = {"match": forms.RadioSelect}

    def __init__(
        self, data: Mapping[str, Any] | None = None, *, instance: RoutingRule, catalog: Catalog
    ) -> None:
        super().__init__(data, instance=instance)
        self.catalog = catalog
        cast(forms.ChoiceField, self.fields["match"]).choices = list(
            {"all": "All conditions must match", "any": "Any condition may match"}.items()
        )
        self.fields[
            "stop_processing"
        ].help_text = "Later rules are not run on the event when this one matches."
        self.rule_problems: list[str] = []
        self.conditions: list[Any]
        self.actions: list[Any]
        if data is not None:
            self.conditions = [condition_parse(row) for _, row in rows_parse(data, "conditions")]
            self.actions = [action_parse(row) for _, row in rows_parse(data, "actions")]
        else:
            self.conditions = list(instance.conditions or [])
            self.actions = list(instance.actions or [])

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        try:
            rule_validate(
                events=data.get("events") or [],
                match=data.get("match"),
                conditions=self.conditions,
                actions=self.actions,
                known=self.catalog.known(),
            )
        except RuleError as error:
            self.rule_problems = error.messages
            raise forms.ValidationError(error.messages) from None
        return data

    def condition_rows(self) -> list[RowView]:
        problems = _problems_by_row(self.rule_problems, "Condition")
        rows = [condition_view(f"conditions-{n}", c) for n, c in enumerate(self.conditions)]
        for n, row in enumerate(rows, 1):
            row.errors = problems.get(n, [])
        return rows

    def action_rows(self) -> list[RowView]:
        problems = _problems_by_row(self.rule_problems, "Action")
        rows = [action_view(f"actions-{n}", a) for n, a in enumerate(self.actions)]
        for n, row in enumerate(rows, 1):
            row.errors = problems.get(n, [])
        return rows

    def save(self, commit: bool = True, *, actor: User | None = None) -> RoutingRule:
        rule = super().save(commit=False)
        rule.conditions = self.conditions
        rule.actions = self.actions
        with transaction.atomic():
            if rule.pk is None:
                rule.position = rule_position_take(None)
                rule.created_by = actor
            rule.save()
        return rule


def rule_position_take(
    rule: RoutingRule | None, at: int | None = None, *, actor: User | None = None
) -> int:
    """The position a rule being saved takes: after the last when ``at`` is None, else ``at``
    (clamped to the running order), the others then numbered 0.. again around it. The other
    rules are locked until the caller's transaction ends, so two saves at once never share a
    position. ``rule``: the one saved, if it exists already; the caller records its change,
    this the others' (``actor``: who made it)."""
    others = [
        r
        for r in RoutingRule.objects.select_for_update().order_by("position", "id")
        if rule is None or r.pk != rule.pk
    ]
    if at is None:
        return others[-1].position + 1 if others else 0
    place = max(0, min(at, len(others)))
    _positions_save(
        [(n if n < place else n + 1, other) for n, other in enumerate(others)], actor=actor
    )
    return place


def _positions_save(
    wanted: list[tuple[int, RoutingRule]], *, actor: User | None, recorded: int | None = None
) -> None:
    """Give rules the positions ``wanted``, each change in the audit log: moving one rule
    moves others, and the running order is what an admin decides. ``recorded``: the rule
    whose change the caller records itself."""
    changed = []
    for position, rule in wanted:
        if rule.position != position:
            if rule.pk != recorded:
                audit_record(
                    action="routing_rule.updated",
                    actor=actor,
                    obj=rule,
                    before={"position": rule.position},
                    after={"position": position},
                )
            rule.position = position
            changed.append(rule)
    RoutingRule.objects.bulk_update(changed, ["position"])


class RuleMoveForm(forms.Form):
    direction = forms.ChoiceField(choices=[("up", "Up"), ("down", "Down")])

    def save(self, *, rule: RoutingRule, actor: User | None = None) -> None:
        """Swap the rule with its neighbour, numbering all rules 0.. so equal positions from
        elsewhere are resolved too. The caller records the rule's own change; the others'
        are recorded here (``actor``: who moved it)."""
        with transaction.atomic():
            rules = list(RoutingRule.objects.select_for_update().order_by("position", "id"))
            at = next(n for n, r in enumerate(rules) if r.pk == rule.pk)
            other = at - 1 if self.cleaned_data["direction"] == "up" else at + 1
            if 0 <= other < len(rules):
                rules[at], rules[other] = rules[other], rules[at]
            _positions_save(list(enumerate(rules)), actor=actor, recorded=rule.pk)


# --- SLA policies ------------------------------------------------------------------------

SLA_TARGETS: dict[str, str] = {
    "first_response": "First response",
    "next_response": "Next response",
    "resolution": "Resolution",
}
UNITS = [("minutes", "minutes"), ("hours", "hours")]
# The longest target a policy may set: a year. Longer ones are typing mistakes, and the due
# time of a target of years of business hours lies beyond what dates can hold.
SLA_TARGET_MAX_MINUTES = 365 * 24 * 60


def _minutes_text(minutes: int) -> str:
    return "1 minute" if minutes == 1 else f"{minutes} minutes"


def sla_policy_problems(
    *,
    pk: int | None,
    priority: int | None,
    channel: ChannelAccount | None,
    vip_only: bool,
    is_active: bool,
    targets: Mapping[str, int | None],
    at_risk_minutes: int | None,
    changed: set[str] | None = None,
) -> list[str]:
    """Why a policy cannot be saved, for the page and the API alike. ``targets``: minutes by
    ``SLA_TARGETS`` key. ``changed``: the fields an edit changes (None for a new policy);
    what it leaves alone is not checked again, so a policy saved before a check existed can
    still be renamed or switched off."""

    def touched(*names: str) -> bool:
        return changed is None or bool(changed.intersection(names))

    problems: list[str] = []
    # The limits, when the targets change or the policy is switched on (not off).
    if touched("targets", "at_risk_minutes") or (is_active and touched("is_active")):
        problems += [
            f"{SLA_TARGETS[target]}: at most 365 days ({SLA_TARGET_MAX_MINUTES:,} minutes)."
            for target, minutes in targets.items()
            if minutes and minutes > SLA_TARGET_MAX_MINUTES
        ]
        shortest = min((m for m in targets.values() if m), default=None)
        if shortest is not None and at_risk_minutes is not None and at_risk_minutes >= shortest:
            problems.append(
                f"“At risk” ({_minutes_text(at_risk_minutes)} before due) must be shorter "
                f"than the shortest target ({_minutes_text(shortest)}): otherwise every "
                "conversation is at risk as it arrives."
            )
    if is_active and touched("priority", "channel", "vip_only", "is_active"):
        others = SlaPolicy.objects.filter(
            is_active=True, priority=priority, channel=channel, vip_only=vip_only
        )
        clash = (others.exclude(pk=pk) if pk is not None else others).first()
        if clash is not None:
            problems.append(
                f"The active policy “{clash.name}” already applies to the same priority, "
                "channel and contacts: only one of them could ever apply. Change the scope "
                "of one, or switch one off."
            )
    return problems


def minutes_display(minutes: int | None) -> str:
    if minutes is None:
        return NONE_SHOWN
    if minutes % 60 == 0:
        return f"{minutes // 60} h"
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class SlaPolicyForm(forms.ModelForm[SlaPolicy]):
    """Targets are typed as a number and a unit and stored in minutes."""

    class Meta:
        model = SlaPolicy
        fields = [
            "name",
            "priority",
            "channel",
            "vip_only",
            "calendar",
            "at_risk_minutes",
            "is_active",
        ]
        labels = {
            "calendar": "Business hours",
            "at_risk_minutes": "At risk (minutes before due)",
            "is_active": "Active",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cast(forms.ChoiceField, self.fields["priority"]).choices = [
            ("", "Any priority"),
            *Priority.choices,
        ]
        cast(forms.ModelChoiceField[Any], self.fields["channel"]).empty_label = "Every channel"
        cast(forms.ModelChoiceField[Any], self.fields["calendar"]).empty_label = "Around the clock"
        for target, label in SLA_TARGETS.items():
            minutes = getattr(self.instance, f"{target}_minutes")
            hours = minutes is None or minutes % 60 == 0
            self.fields[f"{target}_amount"] = forms.IntegerField(
                label=f"{label} within",
                required=False,
                min_value=1,
                initial=None if minutes is None else (minutes // 60 if hours else minutes),
            )
            self.fields[f"{target}_unit"] = forms.ChoiceField(
                label=f"{label} unit", choices=UNITS, initial="hours" if hours else "minutes"
            )

    def targets(self) -> list[tuple[str, forms.BoundField, forms.BoundField]]:
        return [
            (label, self[f"{target}_amount"], self[f"{target}_unit"])
            for target, label in SLA_TARGETS.items()
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not any(data.get(f"{target}_amount") for target in SLA_TARGETS):
            raise forms.ValidationError(
                "Set at least one target: first response, next response or resolution."
            )
        if problems := sla_policy_problems(
            pk=self.instance.pk,
            priority=data.get("priority"),
            channel=data.get("channel"),
            vip_only=bool(data.get("vip_only")),
            is_active=bool(data.get("is_active")),
            targets={target: self._minutes(target) for target in SLA_TARGETS},
            at_risk_minutes=data.get("at_risk_minutes"),
            changed=self._changed() if self.instance.pk else None,
        ):
            raise forms.ValidationError(problems)
        return data

    def _changed(self) -> set[str]:
        """The fields this edit changes, the targets as one ("targets")."""
        changed = set(self.changed_data)
        if any(
            self._minutes(target) != getattr(self.instance, f"{target}_minutes")
            for target in SLA_TARGETS
        ):
            changed.add("targets")
        return changed

    def _minutes(self, target: str) -> int | None:
        amount = self.cleaned_data.get(f"{target}_amount")
        factor = 60 if self.cleaned_data.get(f"{target}_unit") == "hours" else 1
        return amount * factor if amount else None

    def save(self, commit: bool = True) -> SlaPolicy:
        policy = super().save(commit=False)
        for target in SLA_TARGETS:
            setattr(policy, f"{target}_minutes", self._minutes(target))
        policy.save()
        return policy


# --- Business hours ------------------------------------------------------------------------

SLOTS = (0, 1)


@dataclass
class DayRow:
    name: str
    slots: list[tuple[forms.BoundField, forms.BoundField, forms.BoundField]]


def _clock(value: time | None) -> str:
    return "" if value is None else value.strftime("%H:%M")


class CalendarForm(forms.ModelForm[BusinessCalendar]):
    """Weekly hours as a grid of up to two intervals a day, and holidays as rows; checked with
    the same code that computes the SLA due times."""

    time_zone = forms.ChoiceField(label="Time zone")

    class Meta:
        model = BusinessCalendar
        fields = ["name", "time_zone", "is_default"]
        labels = {"is_default": "The organisation's default hours"}

    def __init__(self, data: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(data, **kwargs)
        zones = sorted(available_timezones())
        cast(forms.ChoiceField, self.fields["time_zone"]).choices = [(z, z) for z in zones]
        if self.instance.pk is None:
            self.initial["time_zone"] = settings.TIME_ZONE
        stored = self.instance.weekly_hours if isinstance(self.instance.weekly_hours, dict) else {}
        for day, name in enumerate(WEEKDAY_NAMES):
            intervals = stored.get(str(day)) or []
            for slot in SLOTS:
                opens, closes = intervals[slot] if slot < len(intervals) else ("", "")
                midnight = closes in ("24:00", "00:00")
                which = "first" if slot == 0 else "second"
                self.fields[f"d{day}_{slot}_opens"] = forms.TimeField(
                    label=f"{name}, {which} interval: opens",
                    required=False,
                    initial=opens or None,
                    widget=forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
                )
                self.fields[f"d{day}_{slot}_closes"] = forms.TimeField(
                    label=f"{name}, {which} interval: closes",
                    required=False,
                    initial=None if midnight else closes or None,
                    widget=forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
                )
                self.fields[f"d{day}_{slot}_midnight"] = forms.BooleanField(
                    label=f"{name}, {which} interval: until midnight",
                    required=False,
                    initial=midnight,
                )
        self.weekly_hours: dict[str | int, list[list[str]]] = {}
        self.make_default = False
        self.holiday_rows: list[dict[str, str]]
        if data is not None:
            self.holiday_rows = [
                {"date": _first(row, "date").strip(), "name": _first(row, "name").strip()}
                for _, row in rows_parse(data, "holidays")
            ]
        elif self.instance.pk:
            self.holiday_rows = [
                {"date": h.date.isoformat(), "name": h.name} for h in self.instance.holidays.all()
            ]
        else:
            self.holiday_rows = []
        self.holidays: list[tuple[date, str]] = []
        # The problems of the weekly hours and of the holidays, apart (the API names them).
        self.problems: dict[str, list[str]] = {}

    def days(self) -> list[DayRow]:
        return [
            DayRow(
                name=name,
                slots=[
                    (
                        self[f"d{day}_{slot}_opens"],
                        self[f"d{day}_{slot}_closes"],
                        self[f"d{day}_{slot}_midnight"],
                    )
                    for slot in SLOTS
                ],
            )
            for day, name in enumerate(WEEKDAY_NAMES)
        ]

    def holiday_views(self) -> list[dict[str, str]]:
        """The rows to show: the holidays, and an empty one to add another."""
        rows = [row for row in self.holiday_rows if row["date"] or row["name"]]
        return [*rows, {"date": "", "name": ""}]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        problems: list[str] = []
        holiday_problems: list[str] = []
        weekly: dict[str | int, list[list[str]]] = {}
        for day, name in enumerate(WEEKDAY_NAMES):
            for slot in SLOTS:
                opens = data.get(f"d{day}_{slot}_opens")
                closes = data.get(f"d{day}_{slot}_closes")
                midnight = data.get(f"d{day}_{slot}_midnight")
                if opens is None and closes is None and not midnight:
                    continue
                if opens is None or (closes is None and not midnight):
                    problems.append(f"{name}: give both the opening and the closing time.")
                    continue
                end = "24:00" if midnight or closes == time(0) else _clock(closes)
                weekly.setdefault(str(day), []).append([_clock(opens), end])
            # Stored, they would be merged; typed, two that overlap are most likely a typo.
            intervals = sorted(weekly.get(str(day), []))
            if any(later[0] < earlier[1] for earlier, later in pairwise(intervals)):
                problems.append(f"{name}: the two intervals overlap.")
        seen: set[date] = set()
        for row in self.holiday_rows:
            if not row["date"]:  # a cleared date removes the holiday
                continue
            try:
                holiday = date.fromisoformat(row["date"])
            except ValueError:
                named = row["name"] or row["date"]
                holiday_problems.append(f"Holiday “{named}” needs a valid date.")
                continue
            if holiday in seen:
                holiday_problems.append(f"{holiday:%Y-%m-%d} is listed twice as a holiday.")
            seen.add(holiday)
            self.holidays.append((holiday, row["name"][:100]))
        if not problems and not holiday_problems and data.get("time_zone"):
            try:
                CalendarRules.from_config(
                    time_zone=data["time_zone"], weekly_hours=weekly, holidays=seen
                )
            except CalendarError as error:
                problems.append(str(error))
        self.problems = {"weekly_hours": problems, "holidays": holiday_problems}
        if problems or holiday_problems:
            raise forms.ValidationError(problems + holiday_problems)
        self.weekly_hours = weekly
        # The old default steps down when this one is saved; left on the instance, the model's
        # one-default constraint would refuse the form before that.
        self.make_default = bool(data.get("is_default"))
        data["is_default"] = False
        return data

    def save(self, commit: bool = True) -> BusinessCalendar:
        calendar = super().save(commit=False)
        calendar.weekly_hours = self.weekly_hours
        calendar.is_default = self.make_default
        with transaction.atomic():
            if calendar.is_default:
                # One default at a time: the old one steps down in the same transaction.
                BusinessCalendar.objects.filter(is_default=True).exclude(pk=calendar.pk).update(
                    is_default=False
                )
            calendar.save()
            # Only the days that changed are written: a holiday added or removed makes the
            # KPI facts of the conversations around its day compute their business time again.
            names = dict(self.holidays)
            stored = {h.date: h for h in Holiday.objects.filter(calendar=calendar)}
            removed = [h.pk for d, h in stored.items() if d not in names]
            Holiday.objects.filter(pk__in=removed).delete()
            renamed = [h for d, h in stored.items() if d in names and h.name != names[d]]
            for holiday in renamed:
                holiday.name = names[holiday.date]
            Holiday.objects.bulk_update(renamed, ["name"])
            Holiday.objects.bulk_create(
                Holiday(calendar=calendar, date=day, name=name)
                for day, name in self.holidays
                if day not in stored
            )
        return calendar


def weekly_summary(weekly_hours: Any) -> list[str]:
    """One entry per open day, such as "Mon 09:00-17:00"."""
    if not isinstance(weekly_hours, dict):
        return []
    lines = []
    for day, name in enumerate(WEEKDAY_NAMES):
        intervals = weekly_hours.get(str(day)) or []
        spans = ", ".join(
            f"{i[0]}\N{EN DASH}{i[1]}" for i in intervals if isinstance(i, list | tuple)
        )
        if spans:
            lines.append(f"{name[:3]} {spans}")
    return lines


# --- Departments, escalation paths and webhook endpoints -------------------------------------


class DepartmentForm(forms.ModelForm[Department]):
    class Meta:
        model = Department
        fields = ["name", "delivery", "team", "email", "endpoint"]
        labels = {"team": "Team", "email": "Email address", "endpoint": "Webhook endpoint"}
        help_texts = {
            "team": "Escalations land in this team's queue.",
            "email": "Escalations are mailed here with a link to answer.",
            "endpoint": "Escalations are posted to this endpoint, signed.",
        }
        widgets = {"delivery": forms.RadioSelect}

    NEEDS = {
        DepartmentDelivery.IN_APP: ("team", "Choose the team that takes these escalations."),
        DepartmentDelivery.EMAIL: ("email", "Give the address escalations are sent to."),
        DepartmentDelivery.WEBHOOK: ("endpoint", "Choose the webhook endpoint to call."),
    }

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        needed = self.NEEDS.get(data.get("delivery", ""))
        if needed and not data.get(needed[0]) and needed[0] not in self.errors:
            self.add_error(needed[0], needed[1])
        endpoint = data.get("endpoint")
        if (
            data.get("delivery") == DepartmentDelivery.WEBHOOK
            and endpoint
            and not endpoint.is_active
        ):
            self.add_error(
                "endpoint",
                f"“{endpoint.name}” is switched off, so escalations could not reach the "
                "department. Switch it on, or choose another endpoint.",
            )
        elif (
            data.get("delivery") == DepartmentDelivery.WEBHOOK and endpoint and not endpoint.secret
        ):
            # The department answers through the link back in the call: an unsigned call
            # could be forged by anyone who knows the address.
            self.add_error(
                "endpoint",
                f"“{endpoint.name}” has no secret, so its calls could not be signed. "
                "Set a secret on the endpoint first.",
            )
        return data

    def save(self, commit: bool = True) -> Department:
        department = super().save(commit=False)
        # Only the chosen way of delivery is kept, so the row says one thing.
        if department.delivery != DepartmentDelivery.IN_APP:
            department.team = None
        if department.delivery != DepartmentDelivery.EMAIL:
            department.email = ""
        if department.delivery != DepartmentDelivery.WEBHOOK:
            department.endpoint = None
        department.save()
        return department


class EscalationPathForm(forms.ModelForm[EscalationPath]):
    """A path and its levels, in order; each level is a department or a person."""

    class Meta:
        model = EscalationPath
        fields = ["name", "description"]
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}

    def __init__(
        self, data: Mapping[str, Any] | None = None, *, instance: EscalationPath, catalog: Catalog
    ) -> None:
        super().__init__(data, instance=instance)
        self.catalog = catalog
        self.targets: list[str]
        if data is not None:
            self.targets = [_first(row, "target") for _, row in rows_parse(data, "levels")]
        elif instance.pk:
            self.targets = [
                f"department:{level.department_id}"
                if level.department_id
                else f"user:{level.user_id}"
                for level in instance.levels.all()
            ]
        else:
            self.targets = []
        self.levels: list[tuple[str, int]] = []

    def level_options(self) -> dict[str, Choices]:
        options = self.catalog.options()
        return {
            "Departments": [(f"department:{pk}", name) for pk, name in options["department"]],
            "People": [(f"user:{pk}", name) for pk, name in options["user"]],
        }

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        problems = []
        pools = {"department": self.catalog.departments, "user": self.catalog.active_user_ids}
        for n, target in enumerate(self.targets, 1):
            kind, _, pk = target.partition(":")
            if kind not in pools or not pk.isdigit() or int(pk) not in pools[kind]:
                problems.append(f"Level {n}: choose a department or a person.")
                continue
            self.levels.append((kind, int(pk)))
        if not self.targets:
            problems.append("Add at least one level.")
        if problems:
            raise forms.ValidationError(problems)
        return data

    def save(self, commit: bool = True) -> EscalationPath:
        with transaction.atomic():
            path = super().save()
            EscalationLevel.objects.filter(path=path).delete()
            EscalationLevel.objects.bulk_create(
                EscalationLevel(
                    path=path,
                    position=position,
                    department_id=pk if kind == "department" else None,
                    user_id=pk if kind == "user" else None,
                )
                for position, (kind, pk) in enumerate(self.levels)
            )
        return path


def _departments_reached_through(endpoint: WebhookEndpoint) -> str:
    return ", ".join(
        f"“{name}”"
        for name in Department.objects.filter(
            endpoint=endpoint, delivery=DepartmentDelivery.WEBHOOK
        )
        .order_by("name")
        .values_list("name", flat=True)
    )


def endpoint_secret_needed(endpoint: WebhookEndpoint) -> str:
    """Why this endpoint must keep a secret: the webhook departments reached through it,
    whose calls must stay signed (empty when none is)."""
    names = _departments_reached_through(endpoint)
    if not names:
        return ""
    return (
        f"Escalations to {names} are posted here and must stay signed: "
        "give those departments another endpoint first."
    )


def endpoint_needed(endpoint: WebhookEndpoint) -> str:
    """Why this endpoint cannot be switched off: the webhook departments reached through it,
    whose escalations would all fail (empty when none is)."""
    names = _departments_reached_through(endpoint)
    if not names:
        return ""
    return (
        f"Escalations to {names} are posted here: give those departments another endpoint "
        "before switching it off."
    )


class WebhookEndpointForm(forms.ModelForm[WebhookEndpoint]):
    """The secret is write-only: never shown, kept when left empty."""

    new_secret = forms.CharField(
        label="Secret",
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
    )
    clear_secret = forms.BooleanField(label="Remove the secret", required=False)
    url = forms.URLField(label="URL", max_length=500, assume_scheme="https")

    events = forms.MultipleChoiceField(
        choices=[],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Send these events",
        help_text="Rules and departments call the endpoint whatever it subscribes to.",
    )

    class Meta:
        model = WebhookEndpoint
        fields = ["name", "url", "is_active", "events", "allow_private_network"]
        labels = {"is_active": "Active"}

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("url"):
            problem = webhook_address_problem(
                data["url"], allow_private=bool(data.get("allow_private_network"))
            )
            if problem:
                self.add_error("url", problem)
        if data.get("clear_secret") and not data.get("new_secret") and self.instance.pk:
            problem = endpoint_secret_needed(self.instance)
            if problem:
                self.add_error("clear_secret", problem)
        switched_off = self.instance.pk and self.instance.is_active and not data.get("is_active")
        if switched_off and (problem := endpoint_needed(self.instance)):
            self.add_error("is_active", problem)
        return data

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["new_secret"].help_text = (
            "A secret is set; leave empty to keep it."
            if self.instance.secret
            else "No secret is set. Calls are signed with HMAC-SHA256 when one is."
        )
        if not self.instance.secret:
            del self.fields["clear_secret"]
        cast(forms.MultipleChoiceField, self.fields["events"]).choices = list(
            WEBHOOK_EVENTS.items()
        )

    def save(self, commit: bool = True) -> WebhookEndpoint:
        endpoint = super().save(commit=False)
        if secret := self.cleaned_data.get("new_secret"):
            endpoint.secret = secret
        elif self.cleaned_data.get("clear_secret"):
            endpoint.secret = ""
        endpoint.save()
        return endpoint


# --- Auto-assignment -------------------------------------------------------------------------


class CapacityForm(forms.Form):
    """Every team member's capacity on one page; empty means no limit."""

    def __init__(
        self, data: Mapping[str, Any] | None = None, *, memberships: list[TeamMembership]
    ) -> None:
        super().__init__(data)
        self.memberships = memberships
        for membership in memberships:
            self.fields[f"capacity_{membership.pk}"] = forms.IntegerField(
                label=f"Capacity of {_user_label(membership.user)} in {membership.team.name}",
                required=False,
                min_value=0,
                initial=membership.capacity,
                widget=forms.NumberInput(attrs={"placeholder": "no limit", "class": "narrow"}),
            )

    def by_team(self) -> list[tuple[str, list[tuple[TeamMembership, forms.BoundField]]]]:
        teams: dict[str, list[tuple[TeamMembership, forms.BoundField]]] = {}
        for membership in self.memberships:
            teams.setdefault(membership.team.name, []).append(
                (membership, self[f"capacity_{membership.pk}"])
            )
        return list(teams.items())

    def save(self, *, actor: User | None = None) -> int:
        changed = []
        before: dict[int, int | None] = {}
        for membership in self.memberships:
            capacity = self.cleaned_data.get(f"capacity_{membership.pk}")
            if membership.capacity != capacity:
                before[membership.pk] = membership.capacity
                membership.capacity = capacity
                changed.append(membership)
        with transaction.atomic():
            TeamMembership.objects.bulk_update(changed, ["capacity"])
            for membership in changed:
                audit_record(
                    action="capacity.updated",
                    actor=actor,
                    obj=membership,
                    before={"capacity": before[membership.pk]},
                    after={"capacity": membership.capacity},
                )
        return len(changed)


# --- Dry run -------------------------------------------------------------------------------


class DryRunForm(forms.Form):
    """The facts of an event, typed or taken from a stored message. Reads only."""

    message = forms.IntegerField(
        label="Message id",
        required=False,
        min_value=1,
        help_text="Takes the facts from a stored customer message, its conversation and contact "
        "instead of the fields above; only the event (and the time, if given) are used.",
    )
    text = forms.CharField(
        label="Message text", required=False, widget=forms.Textarea(attrs={"rows": 4})
    )
    event = forms.ChoiceField(
        label="Event",
        choices=list(EVENTS.items()),
        help_text="A conversation created or reopened by the message also raises "
        "“Message received” after it, as the ingest does.",
    )
    channel = forms.ModelChoiceField(
        queryset=ChannelAccount.objects.all(), required=False, empty_label="No channel"
    )
    platform = forms.ChoiceField(
        label="Platform",
        required=False,
        choices=[("", "—"), *Platform.choices],
        help_text="Used when no channel is chosen.",
    )
    kind = forms.ChoiceField(label="Message kind", choices=list(KINDS.items()), initial="mention")
    sentiment = forms.FloatField(
        required=False,
        min_value=-1,
        max_value=1,
        help_text="-1 to 1; empty: computed from the text.",
        widget=forms.NumberInput(attrs={"step": "0.05"}),
    )
    language = forms.CharField(
        required=False, max_length=2, help_text="Two letters such as en; empty: detected."
    )
    followers = forms.IntegerField(required=False, min_value=0)
    priority = forms.TypedChoiceField(
        label="Priority before the rules", coerce=int, choices=list(PRIORITIES.items()), initial=2
    )
    tags = forms.ModelMultipleChoiceField(
        label="Tags before the rules", queryset=Tag.objects.all(), required=False
    )
    vip = forms.BooleanField(label="VIP contact", required=False)
    open_escalation = forms.BooleanField(label="The contact has an open escalation", required=False)
    at = forms.DateTimeField(
        label="At",
        required=False,
        help_text="For business-hours conditions; empty: now.",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )

    def __init__(self, data: Mapping[str, Any] | None = None, *, user: User) -> None:
        super().__init__(data)
        self.user = user
        self.stored_message: Any = None

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if pk := data.get("message"):
            self.stored_message = (
                messages_visible_to(user=self.user)
                .filter(pk=pk, direction=Direction.IN)
                .select_related("channel", "conversation__contact", "author_identity")
                .first()
            )
            if self.stored_message is None:
                self.add_error("message", f"There is no customer message #{pk} you can see.")
        elif not (data.get("text") or "").strip() and "message" not in self.errors:
            self.add_error("text", "Paste a message text, or give the id of a stored message.")
        return data

    def facts(self) -> Facts:
        """The facts as the pipeline would see them, and where each computed one came from."""
        data = self.cleaned_data
        event = data["event"]
        message = self.stored_message
        if message is not None:
            conversation = message.conversation
            identity = message.author_identity
            return Facts(
                event=event,
                platform=message.channel.platform,
                channel_id=message.channel_id,
                kind=message.kind,
                text=message.body,
                sentiment=message.sentiment,
                language=message.language,
                is_vip=conversation.contact.is_vip,
                followers=identity.followers_count if identity else None,
                has_open_escalation=Escalation.objects.filter(
                    conversation__contact_id=conversation.contact_id,
                    status=EscalationStatus.OPEN,
                ).exists(),
                tag_ids=frozenset(conversation.tags.values_list("pk", flat=True)),
                priority=conversation.priority,
                at=data.get("at") or message.created_at,
            )
        text = data["text"]
        channel = data.get("channel")
        sentiment = data.get("sentiment")
        return Facts(
            event=event,
            platform=channel.platform if channel else data.get("platform") or "",
            channel_id=channel.pk if channel else 0,
            kind=data["kind"],
            text=text,
            sentiment=sentiment if sentiment is not None else sentiment_score(text),
            language=(data.get("language") or "").lower() or language_of(text, stated=""),
            is_vip=bool(data.get("vip")),
            followers=data.get("followers"),
            has_open_escalation=bool(data.get("open_escalation")),
            tag_ids=frozenset(t.pk for t in data.get("tags") or []),
            priority=data["priority"],
            at=data.get("at") or timezone.now(),
        )


DRY_RUN_STATES: dict[str, str] = {
    "matched": "matched",
    "no_match": "conditions not met",
    "other_event": "runs on other events",
    "skipped": "not run: an earlier rule stopped processing",
}


@dataclass(frozen=True)
class DryRunRow:
    rule: RoutingRule
    summary: dict[str, Any]
    state: str  # a key of DRY_RUN_STATES
    by: str  # the rule that stopped processing, for a skipped one


@dataclass(frozen=True)
class DryRun:
    rows: list[DryRunRow]
    matched: int
    priority: int  # after the matching rules' actions
    added_tags: list[int]


def rules_dry_run(*, facts: Facts, catalog: Catalog) -> DryRun:
    """What the active rules would do with an event, in order; nothing is written. The rules
    are evaluated as the ingest evaluates them: a conversation created or reopened by a
    message also raises "message received" after it, and a rule that stops processing stops
    both."""
    book = RuleBook.load()
    events = events_raised(facts.event)
    found = book.evaluate(facts, events)
    matches = {match.rule.id: match for _, match in found}
    # Where the evaluation stopped, in its order (each event's rules in turn): what comes
    # after it was not run.
    order = [(event, rule.id) for event in events for rule in book.rules if event in rule.events]
    stop_at, stopped_by = len(order), ""
    for event, match in found:
        if match.rule.stop_processing:
            stop_at, stopped_by = order.index((event, match.rule.id)), match.rule.name
            break
    ran = {rule_id for _, rule_id in order[: stop_at + 1]}
    priority, added_tags = facts.priority, list[int]()
    for _, match in found:  # in the order the actions are taken
        for action in match.actions:
            if action.type == "set_priority":
                priority = action.value
            elif action.type == "add_tags":
                added_tags += [t for t in action.value if t not in added_tags]
    stored = RoutingRule.objects.in_bulk([rule.id for rule in book.rules])
    names = catalog.names()
    rows = []
    for compiled in book.rules:
        rule = stored.get(compiled.id)
        if rule is None:  # deleted since the rules were loaded
            continue
        if compiled.id in matches:
            state, by = "matched", ""
        elif compiled.events.isdisjoint(events):
            state, by = "other_event", ""
        elif compiled.id not in ran:
            state, by = "skipped", stopped_by
        else:
            state, by = "no_match", ""
        rows.append(DryRunRow(rule=rule, summary=rule_summary(rule, names), state=state, by=by))
    return DryRun(rows=rows, matched=len(matches), priority=priority, added_tags=added_tags)


def rules_naming(kind: str, pk: int) -> list[RoutingRule]:
    """The rules whose definition names this calendar, path, department or endpoint: they are
    not protected by the database, so the delete page warns about them. "default-calendar":
    the rules whose business-hours condition names none, using the default hours."""

    def names_it(rule: RoutingRule) -> bool:
        for condition in rule.conditions if isinstance(rule.conditions, list) else []:
            if (
                kind in ("calendar", "default-calendar")
                and isinstance(condition, dict)
                and condition.get("field") == "business_hours"
                and condition.get("value") == (pk if kind == "calendar" else None)
            ):
                return True
        for action in rule.actions if isinstance(rule.actions, list) else []:
            value = action.get("value") if isinstance(action, dict) else None
            if not isinstance(value, dict):
                continue
            wanted = {"path": "escalate", "department": "escalate", "endpoint": "webhook"}
            if action.get("type") == wanted.get(kind) and value.get(kind) == pk:
                return True
        return False

    return [rule for rule in RoutingRule.objects.order_by("position", "id") if names_it(rule)]


def still_used_message(noun: str, name: str, users: Iterable[Model]) -> str:
    """Why a delete was refused: what still uses the thing."""
    return (
        f"{noun} “{name}” cannot be deleted: it is still used by {_users_of(users)}."
        " Change those first."
    )


def _users_of(objects: Iterable[Model]) -> str:
    """Such as: SLA policies “Gold”, “Silver” and 3 escalations. Levels name their path."""
    named: dict[tuple[str, str], list[str]] = {}
    counted: dict[tuple[str, str], int] = {}
    for thing in objects:
        if isinstance(thing, EscalationLevel):
            thing = thing.path
        meta = thing._meta
        key = (str(meta.verbose_name), str(meta.verbose_name_plural))
        if isinstance(thing, Escalation):
            counted[key] = counted.get(key, 0) + 1
        elif str(thing) not in named.setdefault(key, []):
            named[key].append(str(thing))
    parts = [
        # By name: the database gives the protected rows in no particular order.
        f"{one if len(names) == 1 else many} {', '.join(f'“{n}”' for n in sorted(names))}"
        for (one, many), names in named.items()
    ]
    parts += [f"{n} {one if n == 1 else many}" for (one, many), n in counted.items()]
    return " and ".join(parts)
