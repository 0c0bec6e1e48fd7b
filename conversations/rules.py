"""Routing rules: validate an admin's definition, compile it once, evaluate it per event.

Pure code without database access: the caller loads the rules and the facts of an event, and
performs the actions that come back.
"""

from __future__ import annotations

import math
import re
import re._parser as re_parser  # the parsed form, to refuse catastrophic patterns
from collections import Counter
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeGuard

EVENTS: dict[str, str] = {
    "message_received": "Message received",
    "conversation_created": "Conversation created",
    "conversation_reopened": "Conversation reopened",
    "sla_breached": "SLA breached",
}
# The events a message raises for the rules, in the order they are evaluated: a conversation's
# first message also creates it, a message to a closed or resolved one reopens it.
RAISED_WITH: dict[str, tuple[str, ...]] = {
    "conversation_created": ("conversation_created", "message_received"),
    "conversation_reopened": ("conversation_reopened", "message_received"),
}


def events_raised(event: str) -> tuple[str, ...]:
    """The events the rules are evaluated for, in order, when ``event`` happens."""
    return RAISED_WITH.get(event, (event,))


MATCH_MODES: dict[str, str] = {"all": "All conditions match", "any": "Any condition matches"}
CONDITION_FIELDS: dict[str, tuple[str, ...]] = {
    "platform": ("is", "is_not"),
    "channel": ("is", "is_not"),
    "kind": ("is", "is_not"),
    "text": ("contains_any", "contains_none", "matches_regex"),
    "sentiment": ("below", "above"),
    "language": ("is", "is_not"),
    "vip": ("is",),
    "followers": ("above", "below"),
    "open_escalation": ("is",),
    "business_hours": ("within", "outside"),
    "tags": ("has_any", "has_all", "has_none"),
    "priority": ("is", "at_least", "at_most"),
}
ACTION_TYPES: tuple[str, ...] = (
    "set_priority",
    "set_team",
    "assign",
    "add_tags",
    "mark_monitoring",
    "acknowledge",
    "escalate",
    "notify",
    "webhook",
)
KINDS: dict[str, str] = {
    "post": "post",
    "comment": "comment",
    "mention": "mention",
    "dm": "direct message",
    "reply": "reply",
}
PRIORITIES: dict[int, str] = {1: "Low", 2: "Normal", 3: "High", 4: "Urgent"}
ACKNOWLEDGE_PLACEHOLDERS: tuple[str, ...] = ("first_name", "name", "channel")
ACKNOWLEDGE_MAX_LENGTH = 1000
REGEX_MAX_LENGTH = 500
NOTE_MAX_LENGTH = 500

_SINGLE_USE_ACTIONS = {
    "set_priority": "set the priority",
    "set_team": "set the team",
    "assign": "assign",
}
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_LANGUAGE_CODE = re.compile(r"[a-z]{2}")
_PRIORITY_PROBLEM = "needs a priority from 1 (Low) to 4 (Urgent)."
# Cheap attribute checks run first so that a failing one spares the text search and the
# business-hours callback; the conditions are pure, so their order never changes the result.
_COST = {"text": 1, "business_hours": 2}


class RuleError(ValueError):
    def __init__(self, messages: Sequence[str]) -> None:
        self.messages = list(messages)
        super().__init__(" ".join(self.messages))


@dataclass(frozen=True)
class Known:
    """The ids and platforms a rule may refer to when an admin saves it."""

    platforms: frozenset[str] = frozenset()
    channel_ids: frozenset[int] = frozenset()
    team_ids: frozenset[int] = frozenset()
    agent_ids: frozenset[int] = frozenset()
    user_ids: frozenset[int] = frozenset()
    tag_ids: frozenset[int] = frozenset()
    calendar_ids: frozenset[int] = frozenset()
    path_ids: frozenset[int] = frozenset()
    department_ids: frozenset[int] = frozenset()
    endpoint_ids: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        if not self.agent_ids <= self.user_ids:
            raise ValueError("Every agent must also be a known user.")


@dataclass(frozen=True)
class Action:
    """`value` is normalised: add_tags a tuple of ids, webhook the endpoint id, mark_monitoring
    None, escalate {"path", "department", "reason"} and notify {"users", "teams", "assignee",
    "email", "message"} with every key present."""

    type: str
    value: Any


# Not frozen: one is built for every post routed, and a frozen dataclass takes four times as
# long to build (slots make it quicker still). Nothing changes the facts once built.
@dataclass(slots=True)
class Facts:
    event: str
    platform: str
    channel_id: int
    kind: str
    text: str
    sentiment: float | None
    language: str
    is_vip: bool
    followers: int | None
    has_open_escalation: bool
    tag_ids: frozenset[int]
    priority: int
    at: datetime


@dataclass(frozen=True)
class CompiledRule:
    id: int
    name: str
    events: frozenset[str]
    stop_processing: bool
    actions: tuple[Action, ...]
    match_all: bool = True
    # (field, op, value), cheapest first: what the evaluation tests, in this order.
    conditions: tuple[tuple[str, str, Any], ...] = field(default=(), repr=False, compare=False)
    fields: frozenset[str] = frozenset()
    set_priority: int | None = None
    added_tag_ids: frozenset[int] = frozenset()


@dataclass(frozen=True)
class RuleMatch:
    rule: CompiledRule
    actions: tuple[Action, ...]


def rule_validate(*, events: Any, match: Any, conditions: Any, actions: Any, known: Known) -> None:
    if problems := _problems(events, match, conditions, actions, known):
        raise RuleError(problems)


def rule_compile(
    *,
    id: int,
    name: str,
    events: Any,
    match: Any,
    conditions: Any,
    actions: Any,
    stop_processing: bool,
) -> CompiledRule:
    """Raises RuleError if the stored definition is malformed. Ids are not checked against what
    exists now: a rule whose team was deleted still compiles, and the caller skips that action."""
    if problems := _problems(events, match, conditions, actions, known=None):
        raise RuleError(problems)
    ordered = sorted(conditions, key=lambda c: _COST.get(c["field"], 0))
    compiled_actions = tuple(_action(a["type"], a.get("value")) for a in actions)
    priorities = [a.value for a in compiled_actions if a.type == "set_priority"]
    tags = [a.value for a in compiled_actions if a.type == "add_tags"]
    return CompiledRule(
        id=id,
        name=name,
        events=frozenset(events),
        stop_processing=bool(stop_processing),
        actions=compiled_actions,
        match_all=match == "all",
        conditions=tuple((c["field"], c["op"], c["value"]) for c in ordered),
        fields=frozenset(c["field"] for c in conditions),
        set_priority=priorities[0] if priorities else None,
        added_tag_ids=frozenset().union(*tags),
    )


def rules_evaluate(
    rules: Sequence[CompiledRule],
    facts: Facts,
    *,
    within_hours: Callable[[int | None, datetime], bool],
    event: str | None = None,
) -> list[RuleMatch]:
    """The rules of the event (``facts.event`` unless given) that match, in order; each sees
    the priority and tags earlier matches set, and one that stops processing ends the list."""
    event = facts.event if event is None else event
    return [
        match
        for _, match in rules_evaluate_events(
            {event: [r for r in rules if event in r.events]}, facts, [event], within_hours
        )
    ]


def rules_evaluate_events(
    by_event: Mapping[str, Sequence[CompiledRule]],
    facts: Facts,
    events: Sequence[str],
    within_hours: Callable[[int | None, datetime], bool],
) -> list[tuple[str, RuleMatch]]:
    """The rules listening to any of ``events`` (``by_event``: each event's rules in order)
    that match, each rule once, event by event. A match's priority and tags are visible to
    every later rule, of the same event or the next; one that stops processing ends it."""
    return _evaluator(by_event, events)(facts, within_hours)


Evaluator = Callable[[Facts, Callable[[int | None, datetime], bool]], list[tuple[str, RuleMatch]]]


class RuleSet:
    """Rules ready for evaluation, kept as long as the rules are: for each sequence of events
    asked about, an evaluator of the rules to try, built once (``_evaluator``)."""

    def __init__(self, rules: Sequence[CompiledRule]) -> None:
        self.rules = list(rules)
        self.needed = facts_needed(self.rules)
        self._by_event: dict[str, list[CompiledRule]] = {}
        for rule in self.rules:
            for event in sorted(rule.events):
                self._by_event.setdefault(event, []).append(rule)
        self._evaluators: dict[tuple[str, ...], Evaluator] = {}

    def listening(self, event: str) -> bool:
        return event in self._by_event

    def evaluate(
        self,
        facts: Facts,
        events: Sequence[str],
        within_hours: Callable[[int | None, datetime], bool],
    ) -> list[tuple[str, RuleMatch]]:
        """As ``rules_evaluate_events`` with these rules."""
        key = tuple(events)
        evaluator = self._evaluators.get(key)
        if evaluator is None:
            evaluator = self._evaluators[key] = _evaluator(self._by_event, key)
        return evaluator(facts, within_hours)


def _evaluator(by_event: Mapping[str, Sequence[CompiledRule]], events: Sequence[str]) -> Evaluator:
    """One function that evaluates the rules of ``events`` in order, written out as Python
    source and compiled: every condition is an expression in its body, every match a few
    statements, so a post costs no call per rule or condition (it runs for every post, and
    most posts fail most conditions). The rules' values are never written into the source:
    it names them, and they are handed to it in its namespace.

    The function reads ``facts``, keeps the priority and tags the matches so far have set, and
    the text lowered once, on first need. A rule listening to two of the events is tried for
    the second only if it did not match for the first; one that stops processing returns."""
    order = [(event, rule) for event in events for rule in by_event.get(event, ())]
    times = Counter(rule.id for _, rule in order)
    namespace: dict[str, Any] = {}

    def name(value: Any) -> str:
        key = f"_{len(namespace)}"
        namespace[key] = value
        return key

    flags: dict[int, str] = {}  # rule id: the local that says it matched for an earlier event
    body: list[str] = []
    for event, rule in order:
        test = _rule_source(rule, name)
        flag = flags.get(rule.id)
        if flag is not None:
            test = f"not {flag} and ({test})"
        body.append(f"    if {test}:")
        body.append(
            f"        found.append({name((event, RuleMatch(rule=rule, actions=rule.actions)))})"
        )
        if times[rule.id] > 1:
            if flag is None:
                flag = flags[rule.id] = f"matched_{len(flags)}"
            body.append(f"        {flag} = True")
        if rule.set_priority is not None:
            body.append(f"        priority = {name(rule.set_priority)}")
        if rule.added_tag_ids:
            body.append(f"        tag_ids = tag_ids | {name(rule.added_tag_ids)}")
        if rule.stop_processing:
            body.append("        return found")
    source = "\n".join(
        [
            "def evaluate(facts, within_hours):",
            "    found = []",
            "    priority = facts.priority",
            "    tag_ids = facts.tag_ids",
            "    text = None",
            *(f"    {flag} = False" for flag in flags.values()),
            *body,
            "    return found",
        ]
    )
    exec(compile(source, f"<rules for {', '.join(events) or 'no event'}>", "exec"), namespace)
    evaluate: Evaluator = namespace["evaluate"]
    return evaluate


def _rule_source(rule: CompiledRule, name: Callable[[Any], str]) -> str:
    """The rule's conditions as one expression, cheapest first. Without conditions a rule
    always matches, whether it needs all of them or any."""
    if not rule.conditions:
        return "True"
    parts = [f"({_condition_source(*condition, name)})" for condition in rule.conditions]
    return (" and " if rule.match_all else " or ").join(parts)


# What each condition field reads of the facts.
_FACT_ATTRIBUTES = {
    "platform": "platform",
    "channel": "channel_id",
    "kind": "kind",
    "language": "language",
    "sentiment": "sentiment",
    "followers": "followers",
    "vip": "is_vip",
    "open_escalation": "has_open_escalation",
}
# The text, lowered on first need and then kept in the local ``text``.
_LOWERED = "(text := facts.text.lower() if text is None else text)"


def _condition_source(field: str, op: str, value: Any, name: Callable[[Any], str]) -> str:
    """One validated condition as an expression of the evaluator (``_evaluator``): ``facts``
    and the locals ``priority``, ``tag_ids`` and ``text``; ``name`` turns a value into the name
    it has there."""
    if field in ("platform", "channel", "kind", "language"):
        negation = "not " if op == "is_not" else ""
        return f"facts.{_FACT_ATTRIBUTES[field]} {negation}in {name(frozenset(value))}"
    if field == "text" and op == "matches_regex":
        return f"{name(re.compile(value, re.IGNORECASE).search)}(facts.text) is not None"
    if field == "text":
        # A keyword cannot match unless its longest word is in the lowered text, a test much
        # cheaper than the search that most posts fail: the search runs only after it.
        words = dict.fromkeys(max(k.lower().split(), key=len) for k in value)
        quick = " or ".join(
            f"{name(word)} in {_LOWERED if index == 0 else 'text'}"
            for index, word in enumerate(words)
        )
        found = f"({quick}) and {name(_keywords_pattern(value).search)}(text) is not None"
        return found if op == "contains_any" else f"not ({found})"
    if field in ("sentiment", "followers"):
        comparison = "<" if op == "below" else ">"
        return (
            f"(v := facts.{_FACT_ATTRIBUTES[field]}) is not None and v {comparison} {name(value)}"
        )
    if field in ("vip", "open_escalation"):
        return f"facts.{_FACT_ATTRIBUTES[field]} == {name(value)}"
    if field == "business_hours":
        negation = "" if op == "within" else "not "
        return f"{negation}within_hours({name(value)}, facts.at)"
    if field == "tags":
        tags = name(frozenset(value))
        if op == "has_any":
            return f"not {tags}.isdisjoint(tag_ids)"
        if op == "has_all":
            return f"{tags} <= tag_ids"
        return f"{tags}.isdisjoint(tag_ids)"
    comparison = {"at_least": ">=", "at_most": "<="}.get(op, "==")
    return f"priority {comparison} {name(value)}"


def facts_needed(rules: Sequence[CompiledRule]) -> frozenset[str]:
    return frozenset().union(*(rule.fields for rule in rules))


def acknowledgement_render(*, text: str, first_name: str, name: str, channel: str) -> str:
    # One pass, so a customer named "{channel}" is not substituted a second time.
    values = {"first_name": first_name, "name": name, "channel": channel}
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


# Validation


def _problems(
    events: Any, match: Any, conditions: Any, actions: Any, known: Known | None
) -> list[str]:
    problems = []
    if not isinstance(events, list) or not events:
        problems.append("Choose at least one event.")
    else:
        problems += [f"Unknown event {e!r}." for e in events if not _is_one_of(e, EVENTS)]
    if not _is_one_of(match, MATCH_MODES):
        problems.append("Match must be 'all' or 'any'.")
    if not isinstance(conditions, list):
        problems.append("Conditions must be a list.")
    else:
        for n, condition in enumerate(conditions, 1):
            problems += [f"Condition {n}: {p}" for p in _condition_problems(condition, known)]
    if not isinstance(actions, list) or not actions:
        problems.append("Add at least one action.")
        return problems
    seen: set[str] = set()
    for n, action in enumerate(actions, 1):
        problems += [f"Action {n}: {p}" for p in _action_problems(action, known)]
        kind = action.get("type") if isinstance(action, dict) else None
        if _is_one_of(kind, _SINGLE_USE_ACTIONS):
            if kind in seen:
                problems.append(f"Action {n}: a rule can {_SINGLE_USE_ACTIONS[kind]} only once.")
            seen.add(kind)
    return problems


def _condition_problems(condition: Any, known: Known | None) -> list[str]:
    if not isinstance(condition, dict) or not {"field", "op", "value"} <= condition.keys():
        return ["needs a 'field', an 'op' and a 'value'."]
    problems = [f"unexpected key {k!r}." for k in _extra_keys(condition, {"field", "op", "value"})]
    name, op, value = condition["field"], condition["op"], condition["value"]
    if not _is_one_of(name, CONDITION_FIELDS):
        return [*problems, f"unknown field {name!r}."]
    if op not in CONDITION_FIELDS[name]:
        choices = _join([repr(o) for o in CONDITION_FIELDS[name]], "or")
        return [*problems, f"'{name}' has no operator {op!r}; use {choices}."]
    if problem := _condition_value_problem(name, op, value, known):
        problems.append(f"'{name}' {problem}")
    return problems


def _condition_value_problem(name: str, op: str, value: Any, known: Known | None) -> str | None:
    if name == "platform":
        return _strings_problem(value, "platform", _pool(known, "platforms"))
    if name == "channel":
        return _ids_problem(value, "channel", _pool(known, "channel_ids"))
    if name == "kind":
        return _strings_problem(value, "message kind", KINDS)
    if name == "tags":
        return _ids_problem(value, "tag", _pool(known, "tag_ids"))
    if name == "business_hours" and value is not None:
        return _id_problem(value, "calendar", _pool(known, "calendar_ids"))
    if name == "text" and op == "matches_regex":
        # Patterns saved before the backtracking check keep running: it is a heuristic.
        return _regex_problem(value, saving=known is not None)
    if name == "text" and not (_list_of(value, str) and all(v.strip() for v in value)):
        return "needs a non-empty list of keywords or phrases, none of them blank."
    if name == "language" and not (
        _list_of(value, str) and all(_LANGUAGE_CODE.fullmatch(v) for v in value)
    ):
        return "needs a list of two-letter lowercase ISO 639-1 codes such as 'en'."
    if name == "sentiment" and not (_is_number(value) and -1 <= value <= 1):
        return "needs a number between -1 and 1."
    if name == "followers" and not (_is_int(value) and value >= 0):
        return "needs a whole number of followers, 0 or more."
    if name in ("vip", "open_escalation") and not isinstance(value, bool):
        return "needs true or false."
    if name == "priority" and not _is_priority(value):
        return _PRIORITY_PROBLEM
    return None


def _action_problems(action: Any, known: Known | None) -> list[str]:
    if not isinstance(action, dict) or "type" not in action:
        return ["needs a 'type'."]
    problems = [f"unexpected key {k!r}." for k in _extra_keys(action, {"type", "value"})]
    kind, value = action["type"], action.get("value")
    if not _is_one_of(kind, ACTION_TYPES):
        return [*problems, f"unknown action type {kind!r}."]
    if problem := _action_value_problem(kind, value, known):
        problems.append(f"'{kind}' {problem}")
    return problems


def _action_value_problem(kind: str, value: Any, known: Known | None) -> str | None:
    if kind == "set_priority":
        return None if _is_priority(value) else _PRIORITY_PROBLEM
    if kind == "set_team":
        return _id_problem(value, "team", _pool(known, "team_ids"))
    if kind == "assign" and value != "auto":
        return _id_problem(
            value, "agent", _pool(known, "agent_ids"), "needs an agent id or 'auto'."
        )
    if kind == "add_tags":
        return _ids_problem(value, "tag", _pool(known, "tag_ids"))
    if kind == "acknowledge":
        return _acknowledgement_problem(value)
    if kind == "escalate":
        return _escalation_problem(value, known)
    if kind == "notify":
        return _notification_problem(value, known)
    if kind == "webhook" and not (isinstance(value, dict) and value.keys() == {"endpoint"}):
        return "needs an object with an 'endpoint'."
    if kind == "webhook":
        return _id_problem(value["endpoint"], "endpoint", _pool(known, "endpoint_ids"))
    return None


def _acknowledgement_problem(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return "needs the text of the reply."
    if len(value) > ACKNOWLEDGE_MAX_LENGTH:
        return f"needs a reply of at most {ACKNOWLEDGE_MAX_LENGTH} characters."
    unknown = [f"{{{p}}}" for p in _PLACEHOLDER.findall(value) if p not in ACKNOWLEDGE_PLACEHOLDERS]
    if unknown:
        return (
            f"uses the unknown placeholder {', '.join(unknown)};"
            " only {first_name}, {name} and {channel} are filled in."
        )
    return None


def _escalation_problem(value: Any, known: Known | None) -> str | None:
    if not isinstance(value, dict) or _extra_keys(value, {"path", "department", "reason"}):
        return "needs an object with a 'path' or a 'department' and an optional 'reason'."
    targets = [key for key in ("path", "department") if key in value]
    if len(targets) != 1:
        return "needs exactly one of 'path' or 'department'."
    if problem := _note_problem(value.get("reason"), "reason"):
        return problem
    if targets == ["path"]:
        return _id_problem(value["path"], "escalation path", _pool(known, "path_ids"))
    return _id_problem(value["department"], "department", _pool(known, "department_ids"))


def _notification_problem(value: Any, known: Known | None) -> str | None:
    if not isinstance(value, dict) or _extra_keys(
        value, {"users", "teams", "assignee", "email", "message"}
    ):
        return "needs an object with 'users', 'teams', 'assignee', 'email' and 'message'."
    for key, noun, pool in (("users", "user", "user_ids"), ("teams", "team", "team_ids")):
        recipients = value.get(key, [])
        if recipients != [] and (problem := _ids_problem(recipients, noun, _pool(known, pool))):
            return problem
    if not all(isinstance(value.get(key, False), bool) for key in ("assignee", "email")):
        return "needs true or false for 'assignee' and 'email'."
    if not (value.get("users") or value.get("teams") or value.get("assignee")):
        return "needs at least one recipient: users, teams or the assignee."
    return _note_problem(value.get("message"), "message")


def _note_problem(value: Any, noun: str) -> str | None:
    if value is not None and (not isinstance(value, str) or len(value) > NOTE_MAX_LENGTH):
        return f"needs a {noun} of at most {NOTE_MAX_LENGTH} characters."
    return None


def _regex_problem(value: Any, *, saving: bool = True) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return "needs a regular expression."
    if len(value) > REGEX_MAX_LENGTH:
        return f"needs a regular expression of at most {REGEX_MAX_LENGTH} characters."
    try:
        re.compile(value, re.IGNORECASE)
    except (re.error, OverflowError, RecursionError) as error:
        return f"has an invalid regular expression: {error}."
    if not saving:
        return None
    try:
        nested = _unbounded_repeat_nested(re_parser.parse(value, re.IGNORECASE))
    except RecursionError:
        return "has groups nested too deeply: write it with fewer nested groups."
    if nested:
        return (
            "has a repetition inside a repetition, such as (a+)+ or (\\w+\\s?)*: on some "
            "messages it takes exponentially long, and every post is matched against it. "
            "Repeat the group alone, such as (\\w|\\s)+."
        )
    return None


# Repeats without an upper bound, whatever their greediness. Possessive repeats give nothing
# back, so nothing inside them is tried again: they are safe.
_UNBOUNDED_REPEATS = (re_parser.MAX_REPEAT, re_parser.MIN_REPEAT)


def _unbounded_repeat_nested(items: Any, inside: bool = False) -> bool:
    """Whether an unbounded repeat (``+``, ``*``, ``{n,}``) holds another: the shape whose
    backtracking grows exponentially with the text (catastrophic backtracking). A heuristic:
    it refuses some patterns that would be harmless, and bounded repeats are let through."""
    for op, argument in items:
        children: list[Any] = []
        within = inside
        if op in _UNBOUNDED_REPEATS:
            unbounded = argument[1] == re_parser.MAXREPEAT
            if unbounded and inside:
                return True
            children, within = [argument[2]], inside or unbounded
        elif op == re_parser.SUBPATTERN:
            children = [argument[3]]
        elif op == re_parser.BRANCH:
            children = list(argument[1])
        elif op in (re_parser.ASSERT, re_parser.ASSERT_NOT):
            children = [argument[1]]
        elif op == re_parser.GROUPREF_EXISTS:  # (?(1)yes|no)
            children = [branch for branch in argument[1:] if branch is not None]
        # An atomic group gives nothing back: what is inside it is never tried again.
        if any(_unbounded_repeat_nested(child, within) for child in children):
            return True
    return False


def _strings_problem(value: Any, noun: str, allowed: Container[str] | None) -> str | None:
    if not _list_of(value, str):
        return f"needs a non-empty list of {noun}s."
    if allowed is not None and (unknown := [v for v in value if v not in allowed]):
        return f"has the unknown {noun} {', '.join(map(repr, unknown))}."
    return None


def _ids_problem(value: Any, noun: str, pool: Container[int] | None) -> str | None:
    if not _list_of(value, int):
        return f"needs a non-empty list of {noun} ids."
    if pool is not None and (unknown := [v for v in value if v not in pool]):
        return f"refers to the unknown {noun} id {', '.join(map(str, unknown))}."
    return None


def _id_problem(value: Any, noun: str, pool: Container[int] | None, needs: str = "") -> str | None:
    if not _is_int(value):
        return needs or f"needs {'an' if noun[0] in 'aeiou' else 'a'} {noun} id."
    return _ids_problem([value], noun, pool)


def _pool(known: Known | None, name: str) -> Container[Any] | None:
    return None if known is None else getattr(known, name)


def _list_of(value: Any, kind: type) -> bool:
    if not isinstance(value, list) or not value:
        return False
    return all(_is_int(v) if kind is int else isinstance(v, kind) for v in value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_priority(value: Any) -> bool:
    return _is_int(value) and value in PRIORITIES


def _is_number(value: Any) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def _is_one_of(value: Any, allowed: Container[str]) -> TypeGuard[str]:
    return isinstance(value, str) and value in allowed


def _extra_keys(value: dict[Any, Any], allowed: set[str]) -> list[Any]:
    return sorted(value.keys() - allowed, key=str)


# Compilation


def _keywords_pattern(keywords: Sequence[str]) -> re.Pattern[str]:
    # Whole words and phrases only: "refund" matches "Refund!" but not "refunded", and the
    # words of a phrase may be separated by any whitespace. Searched in the lowered text.
    # "No word character before" is checked just after the first character, (?<!\w.), not
    # before it, (?<!\w): a pattern that starts with a character lets the search skip to
    # the places where one of the first characters stands instead of trying every place.
    phrases = dict.fromkeys(_phrase_pattern(k.lower().split()) for k in keywords)
    return re.compile(r"(?:" + "|".join(phrases) + r")(?!\w)")


def _phrase_pattern(words: Sequence[str]) -> str:
    first = re.escape(words[0][0])
    return first + r"(?<!\w.)" + r"\s+".join(map(re.escape, words))[len(first) :]


def _action(kind: str, value: Any) -> Action:
    if kind == "add_tags":
        value = tuple(dict.fromkeys(value))
    elif kind == "mark_monitoring":
        value = None
    elif kind == "webhook":
        value = value["endpoint"]
    elif kind == "escalate":
        value = {"path": None, "department": None, **value, "reason": value.get("reason") or ""}
    elif kind == "notify":
        defaults = {"users": [], "teams": [], "assignee": False, "email": False}
        value = {**defaults, **value, "message": value.get("message") or ""}
    return Action(type=kind, value=value)


# Description


def rule_describe(
    *, conditions: Any, actions: Any, names: Mapping[str, Mapping[Any, str]] | None = None
) -> list[str]:
    labels = names or {}

    def label(kind: str, value: Any) -> str:
        fallback = value if isinstance(value, str) else f"#{value}"
        return labels.get(kind, {}).get(value, fallback)

    return [_describe_condition(c, label) for c in conditions] + [
        _describe_action(a["type"], a.get("value"), label) for a in actions
    ]


def _describe_condition(condition: dict[str, Any], label: Callable[[str, Any], str]) -> str:
    name, op, value = condition["field"], condition["op"], condition["value"]
    verb = {"is": "is", "is_not": "is not"}.get(op, op.replace("_", " "))
    if name in ("platform", "channel", "language"):
        return f"{name.capitalize()} {verb} {_join([label(name, v) for v in value], 'or')}"
    if name == "kind":
        return f"Message kind {verb} {_join([KINDS[v] for v in value], 'or')}"
    if name == "text" and op == "matches_regex":
        return f"Text matches the pattern /{value}/"
    if name == "text":
        quoted = [f'"{v}"' for v in value]
        if op == "contains_any":
            return f"Text contains {_join(quoted, 'or')}"
        return f"Text contains none of {', '.join(quoted)}"
    if name == "sentiment":
        return f"Sentiment {verb} {value:g}"
    if name == "followers":
        return f"Followers {verb} {value:,}"
    if name == "vip":
        return "Contact is VIP" if value else "Contact is not VIP"
    if name == "open_escalation":
        return f"Contact has {'an' if value else 'no'} open escalation"
    if name == "business_hours":
        calendar = "" if value is None else f" of {label('calendar', value)}"
        return f"{'Within' if op == 'within' else 'Outside'} business hours{calendar}"
    if name == "tags":
        quantity = {"has_any": "any of", "has_all": "all of", "has_none": "none of"}[op]
        return f"Has {quantity} the tags {', '.join(label('tag', v) for v in value)}"
    return f"Priority {verb} {PRIORITIES.get(value, value)}"


def _describe_action(kind: str, value: Any, label: Callable[[str, Any], str]) -> str:
    if kind == "set_priority":
        return f"Set priority to {PRIORITIES.get(value, value)}"
    if kind == "set_team":
        return f"Set team to {label('team', value)}"
    if kind == "assign":
        if value == "auto":
            return "Assign automatically within the team"
        return f"Assign to {label('user', value)}"
    if kind == "add_tags":
        return f"Add tags {', '.join(label('tag', v) for v in value)}"
    if kind == "mark_monitoring":
        return "Mark as monitoring (no reply needed)"
    if kind == "acknowledge":
        text = value if len(value) <= 60 else value[:59] + "…"
        return f'Acknowledge with "{text}"'
    if kind == "escalate":
        if "path" in value:
            target = f"along the path {label('path', value['path'])}"
        else:
            target = f"to the department {label('department', value['department'])}"
        reason = f" (reason: {value['reason']})" if value.get("reason") else ""
        return f"Escalate {target}{reason}"
    if kind == "notify":
        recipients = [label("user", v) for v in value.get("users", [])]
        recipients += [f"team {label('team', v)}" for v in value.get("teams", [])]
        recipients += ["the assignee"] if value.get("assignee") else []
        email = " (also by email)" if value.get("email") else ""
        return f"Notify {_join(recipients, 'and')}{email}"
    return f"Call the webhook {label('endpoint', value['endpoint'])}"


def _join(items: Sequence[str], word: str) -> str:
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {word} {items[-1]}"
