import re
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from conversations import rules
from conversations.rules import (
    ACTION_TYPES,
    CONDITION_FIELDS,
    EVENTS,
    Action,
    CompiledRule,
    Facts,
    Known,
    RuleError,
    acknowledgement_render,
    facts_needed,
    rule_compile,
    rule_describe,
    rule_validate,
    rules_evaluate,
)

AT = datetime(2025, 3, 3, 10, 0, tzinfo=UTC)
KNOWN = Known(
    platforms=frozenset({"x", "facebook"}),
    channel_ids=frozenset({1, 2}),
    team_ids=frozenset({10, 11}),
    agent_ids=frozenset({20}),
    user_ids=frozenset({20, 21}),
    tag_ids=frozenset({30, 31, 32}),
    calendar_ids=frozenset({40}),
    path_ids=frozenset({50}),
    department_ids=frozenset({60}),
    endpoint_ids=frozenset({70}),
)
FACTS = Facts(
    event="message_received",
    platform="x",
    channel_id=1,
    kind="comment",
    text="Hello there",
    sentiment=0.0,
    language="en",
    is_vip=False,
    followers=100,
    has_open_escalation=False,
    tag_ids=frozenset(),
    priority=2,
    at=AT,
)
MONITOR = [{"type": "mark_monitoring", "value": None}]


def always_within(calendar_id: int | None, at: datetime) -> bool:
    return True


def build(
    *conditions: tuple[str, str, Any],
    match: str = "all",
    events: tuple[str, ...] = ("message_received",),
    actions: list[dict[str, Any]] | None = None,
    stop_processing: bool = False,
    id: int = 1,
) -> CompiledRule:
    """A rule that is first validated, so every rule a test evaluates is one an admin could save."""
    definition = {
        "events": list(events),
        "match": match,
        "conditions": [{"field": f, "op": o, "value": v} for f, o, v in conditions],
        "actions": actions if actions is not None else MONITOR,
    }
    rule_validate(**definition, known=KNOWN)
    return rule_compile(id=id, name=f"Rule {id}", stop_processing=stop_processing, **definition)


def matched_ids(rules: list[CompiledRule], facts: Facts = FACTS, within=always_within) -> list[int]:
    return [m.rule.id for m in rules_evaluate(rules, facts, within_hours=within)]


def matches(condition: tuple[str, str, Any], **facts: Any) -> bool:
    return matched_ids([build(condition)], replace(FACTS, **facts)) == [1]


def problems(**definition: Any) -> list[str]:
    valid = {"events": ["message_received"], "match": "all", "conditions": [], "actions": MONITOR}
    try:
        rule_validate(**{**valid, **definition}, known=KNOWN)
    except RuleError as error:
        return error.messages
    return []


def condition_problems(field: str, op: str, value: Any) -> list[str]:
    return problems(conditions=[{"field": field, "op": op, "value": value}])


def action_problems(*actions: dict[str, Any]) -> list[str]:
    return problems(actions=list(actions))


# Conditions


MATCHING = [
    (("platform", "is", ["x", "facebook"]), {"platform": "facebook"}, True),
    (("platform", "is", ["x"]), {"platform": "facebook"}, False),
    (("platform", "is_not", ["x"]), {"platform": "facebook"}, True),
    (("platform", "is_not", ["x"]), {"platform": "x"}, False),
    (("channel", "is", [2]), {"channel_id": 2}, True),
    (("channel", "is", [2]), {"channel_id": 1}, False),
    (("channel", "is_not", [2]), {"channel_id": 1}, True),
    (("channel", "is_not", [2]), {"channel_id": 2}, False),
    (("kind", "is", ["dm", "mention"]), {"kind": "dm"}, True),
    (("kind", "is", ["dm"]), {"kind": "post"}, False),
    (("kind", "is_not", ["dm"]), {"kind": "reply"}, True),
    (("kind", "is_not", ["dm"]), {"kind": "dm"}, False),
    (("language", "is", ["de", "fr"]), {"language": "fr"}, True),
    (("language", "is", ["de"]), {"language": "en"}, False),
    (("language", "is_not", ["de"]), {"language": "en"}, True),
    (("language", "is_not", ["de"]), {"language": "de"}, False),
    (("text", "contains_any", ["refund", "broken"]), {"text": "It is BROKEN."}, True),
    (("text", "contains_any", ["refund"]), {"text": "All good"}, False),
    (("text", "contains_none", ["refund"]), {"text": "All good"}, True),
    (("text", "contains_none", ["refund"]), {"text": "I want a refund"}, False),
    (("text", "matches_regex", r"order #?\d{5}"), {"text": "ORDER 12345 late"}, True),
    (("text", "matches_regex", r"order #?\d{5}"), {"text": "order 123"}, False),
    (("sentiment", "below", -0.5), {"sentiment": -0.8}, True),
    (("sentiment", "below", -0.5), {"sentiment": -0.5}, False),
    (("sentiment", "above", 0.5), {"sentiment": 0.9}, True),
    (("sentiment", "above", 0.5), {"sentiment": 0.1}, False),
    (("vip", "is", True), {"is_vip": True}, True),
    (("vip", "is", True), {"is_vip": False}, False),
    (("vip", "is", False), {"is_vip": False}, True),
    (("followers", "above", 1000), {"followers": 5000}, True),
    (("followers", "above", 1000), {"followers": 1000}, False),
    (("followers", "below", 10), {"followers": 3}, True),
    (("followers", "below", 10), {"followers": 30}, False),
    (("open_escalation", "is", True), {"has_open_escalation": True}, True),
    (("open_escalation", "is", True), {"has_open_escalation": False}, False),
    (("open_escalation", "is", False), {"has_open_escalation": False}, True),
    (("tags", "has_any", [30, 31]), {"tag_ids": frozenset({31})}, True),
    (("tags", "has_any", [30, 31]), {"tag_ids": frozenset({32})}, False),
    (("tags", "has_all", [30, 31]), {"tag_ids": frozenset({30, 31, 32})}, True),
    (("tags", "has_all", [30, 31]), {"tag_ids": frozenset({30})}, False),
    (("tags", "has_none", [30]), {"tag_ids": frozenset({31})}, True),
    (("tags", "has_none", [30]), {"tag_ids": frozenset({30})}, False),
    (("priority", "is", 3), {"priority": 3}, True),
    (("priority", "is", 3), {"priority": 4}, False),
    (("priority", "at_least", 3), {"priority": 4}, True),
    (("priority", "at_least", 3), {"priority": 2}, False),
    (("priority", "at_most", 2), {"priority": 1}, True),
    (("priority", "at_most", 2), {"priority": 3}, False),
]


@pytest.mark.parametrize(("condition", "facts", "expected"), MATCHING)
def test_each_condition_matches_exactly_the_facts_it_describes(condition, facts, expected):
    assert matches(condition, **facts) is expected


def test_the_matching_table_has_a_match_and_a_miss_for_every_field_and_operator():
    # business_hours needs a callback and has its own test below.
    every = {(f, o, e) for f, ops in CONDITION_FIELDS.items() for o in ops for e in (True, False)}
    covered = {(f, o, e) for (f, o, _), _, e in MATCHING}
    assert every - covered == {
        ("business_hours", op, e) for op in ("within", "outside") for e in (True, False)
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Refund!", True),
        ("I want my refund.", True),
        ("(refund)", True),
        ("refunded yesterday", False),
        ("nonrefundable", False),
        ("Money\n  back please", True),
        ("moneyback", False),
    ],
)
def test_keywords_match_whole_words_and_phrases_ignoring_case(text, expected):
    assert matches(("text", "contains_any", ["refund", "money back"]), text=text) is expected


def test_keywords_are_literal_text_not_patterns():
    assert matches(("text", "contains_any", ["c++"]), text="I love C++ code")
    assert not matches(("text", "contains_any", ["a.c"]), text="abc")


@pytest.mark.parametrize(
    "keyword",
    ['") or True or ("', "' or 1 or '", "__import__('os')", "x\\n    return found", "{_0}"],
)
def test_keywords_that_read_as_code_are_only_ever_text(keyword):
    # The rules' evaluator is compiled from source: the values it tests are handed to it,
    # never written into that source.
    assert not matches(("text", "contains_any", [keyword]), text="Hello there")
    assert matches(("text", "contains_any", [keyword]), text=f"see {keyword} here")
    assert matches(("text", "contains_none", [keyword]), text="Hello there")


def test_regex_is_searched_case_insensitively_anywhere_in_the_text():
    assert matches(("text", "matches_regex", "^help"), text="HELP me")
    assert not matches(("text", "matches_regex", "^help"), text="please help")


@pytest.mark.parametrize("op", ["below", "above"])
def test_a_message_without_sentiment_matches_no_sentiment_condition(op):
    assert not matches(("sentiment", op, 0), sentiment=None)


@pytest.mark.parametrize("op", ["below", "above"])
def test_an_author_without_a_follower_count_matches_no_follower_condition(op):
    assert not matches(("followers", op, 10), followers=None)


@pytest.mark.parametrize(
    ("op", "within", "expected"),
    [("within", True, True), ("within", False, False), ("outside", False, True)],
)
def test_business_hours_ask_the_callback_with_calendar_and_event_time(op, within, expected):
    calls = []

    def within_hours(calendar_id, at):
        calls.append((calendar_id, at))
        return within

    rules = [build(("business_hours", op, 40)), build(("business_hours", op, None), id=2)]
    assert matched_ids(rules, within=within_hours) == ([1, 2] if expected else [])
    assert calls == [(40, AT), (None, AT)]


# Combining conditions and rules


def test_all_needs_every_condition_and_any_needs_one():
    vip, dm = ("vip", "is", True), ("kind", "is", ["dm"])
    rules = [build(vip, dm, id=1), build(vip, dm, match="any", id=2)]
    assert matched_ids(rules, replace(FACTS, is_vip=True)) == [2]
    assert matched_ids(rules, replace(FACTS, is_vip=True, kind="dm")) == [1, 2]
    assert matched_ids(rules, FACTS) == []


@pytest.mark.parametrize("match", ["all", "any"])
def test_a_rule_without_conditions_always_matches(match):
    assert matched_ids([build(match=match)]) == [1]


def test_only_rules_for_the_event_are_evaluated():
    rules = [build(id=1, events=("sla_breached",)), build(id=2, events=tuple(EVENTS))]
    assert matched_ids(rules) == [2]
    assert matched_ids(rules, replace(FACTS, event="sla_breached")) == [1, 2]


def test_a_matching_rule_that_stops_processing_hides_later_rules():
    rules = [
        build(("vip", "is", True), id=1, stop_processing=True),
        build(id=2, stop_processing=True),
        build(id=3),
    ]
    assert matched_ids(rules) == [2]
    assert matched_ids(rules, replace(FACTS, is_vip=True)) == [1]


def test_later_rules_see_tags_and_priority_set_by_earlier_matching_rules():
    rules = [
        build(
            ("text", "contains_any", ["lawyer"]),
            id=1,
            actions=[{"type": "add_tags", "value": [30]}, {"type": "set_priority", "value": 4}],
        ),
        build(("tags", "has_all", [30]), ("priority", "is", 4), id=2),
    ]
    assert matched_ids(rules, replace(FACTS, text="My lawyer will call")) == [1, 2]
    assert matched_ids(rules) == []


def test_later_rules_see_tags_from_every_add_tags_action_of_an_earlier_rule():
    tag = [{"type": "add_tags", "value": [30]}, {"type": "add_tags", "value": [31]}]
    rules = [build(id=1, actions=tag), build(("tags", "has_all", [30, 31]), id=2)]
    assert matched_ids(rules) == [1, 2]


def test_a_match_returns_the_rules_actions_in_order():
    actions = [
        {"type": "set_priority", "value": 3},
        {"type": "assign", "value": "auto"},
        {"type": "add_tags", "value": [31, 30, 31]},
    ]
    [found] = rules_evaluate([build(actions=actions)], FACTS, within_hours=always_within)
    assert found.actions == (
        Action(type="set_priority", value=3),
        Action(type="assign", value="auto"),
        Action(type="add_tags", value=(31, 30)),
    )


def test_compiled_actions_have_every_optional_key_filled_in():
    rule = build(
        actions=[
            {"type": "escalate", "value": {"department": 60}},
            {"type": "notify", "value": {"assignee": True}},
            {"type": "webhook", "value": {"endpoint": 70}},
            {"type": "mark_monitoring"},
        ]
    )
    assert [a.value for a in rule.actions] == [
        {"path": None, "department": 60, "reason": ""},
        {"users": [], "teams": [], "assignee": True, "email": False, "message": ""},
        70,
        None,
    ]


def test_cheap_conditions_run_before_the_business_hours_callback():
    def within_hours(calendar_id, at):
        raise AssertionError("not needed: the VIP condition already failed")

    rule = build(("business_hours", "within", None), ("vip", "is", True))
    assert matched_ids([rule], within=within_hours) == []


@pytest.mark.parametrize(
    ("keywords", "text", "expected"),
    [
        # The longest word is present, but not as a whole word or phrase.
        (["refund"], "Refunded already", False),
        (["money back"], "backing up my money", False),
        (["money back"], "MONEY\t\tBACK!", True),
        # The longest word alone is not the phrase.
        (["call me back"], "call me later, back soon", False),
        (["shout-out", "ad on tv"], "Saw your AD ON TV", True),
        (["shout-out"], "a shout out to you", False),
        (["c++"], "C++!", True),
        (["straße"], "STRASSE", False),
        (["straße"], "Straße", True),
    ],
)
def test_keywords_match_the_same_with_and_without_their_quick_word_test(keywords, text, expected):
    assert matches(("text", "contains_any", keywords), text=text) is expected
    assert matches(("text", "contains_none", keywords), text=text) is not expected
    reference = rules._keywords_pattern(keywords).search(text.lower()) is not None
    assert reference is expected


@pytest.mark.parametrize(
    "keywords",
    [["refund", "money back"], ["#deal", "(paren)", "-x"], ["ünï", "c++", "a"], ["ad on tv"]],
)
def test_keywords_are_found_where_no_word_character_comes_before_them(keywords):
    import re

    # The plain definition, which tries every place in the text.
    phrases = [r"\s+".join(map(re.escape, k.lower().split())) for k in keywords]
    plain = re.compile(r"(?<!\w)(?:" + "|".join(phrases) + r")(?!\w)")
    texts = [
        f"{before}{keyword}{after}"
        for keyword in keywords
        for before in ("", " ", "x", "é", "#", "-", "(", "\n", "1", "_")
        for after in ("", " ", "x", "!", "\n")
    ]
    texts += ["bad on tv", "ad  on\ttv", "a#deal", "refunds", "say a word", "ba a"]
    pattern = rules._keywords_pattern(keywords)
    for text in texts:
        found, expected = pattern.search(text), plain.search(text)
        assert (found and found.span()) == (expected and expected.span()), text


@pytest.mark.parametrize(("match", "expected"), [("all", [2]), ("any", [1, 2, 3])])
def test_rules_with_three_conditions_need_all_or_any_of_them(match, expected):
    vip, dm, lawyer = ("vip", "is", True), ("kind", "is", ["dm"]), ("sentiment", "below", 0)
    facts = [
        replace(FACTS, is_vip=True),
        replace(FACTS, is_vip=True, kind="dm", sentiment=-0.5),
        replace(FACTS, kind="dm"),
        FACTS,
    ]
    rule = build(vip, dm, lawyer, match=match)
    assert [n for n, f in enumerate(facts, 1) if matched_ids([rule], f)] == expected


def test_a_rule_of_two_events_is_tried_again_for_the_second_but_returned_once():
    created, received = "conversation_created", "message_received"
    rule_set = rules.RuleSet(
        [
            build(id=1, events=(received,), actions=[{"type": "set_priority", "value": 4}]),
            build(("priority", "is", 4), id=2, events=(created, received)),
            build(id=3, events=(created, received)),
        ]
    )

    def found(events: list[str]) -> list[tuple[str, int]]:
        return [(e, m.rule.id) for e, m in rule_set.evaluate(FACTS, events, always_within)]

    # Rule 2 fails for the first event and matches for the second, after rule 1 raised the
    # priority; rule 3 matches for the first and is not returned again.
    assert found([created, received]) == [(created, 3), (received, 1), (received, 2)]
    assert found([received]) == [(received, 1), (received, 2), (received, 3)]
    assert found([created]) == [(created, 3)]
    assert found(["sla_breached"]) == []


def _reference_evaluate(
    rule_list: list[CompiledRule], facts: Facts, events: list[str], within: Any
) -> list[tuple[str, int]]:
    """The rules' meaning in the plainest code: each condition tested as described."""

    def holds(condition: dict[str, Any], priority: int, tag_ids: frozenset[int]) -> bool:
        name, op, value = condition["field"], condition["op"], condition["value"]
        attribute = {
            "channel": "channel_id",
            "vip": "is_vip",
            "open_escalation": "has_open_escalation",
        }.get(name, name)
        fact = getattr(facts, attribute, None)
        if op in ("is", "is_not") and name != "priority":
            inside = fact in value if isinstance(value, list) else fact == value
            return inside if op == "is" else not inside
        if name == "text":
            if op == "matches_regex":
                return re.search(value, facts.text, re.IGNORECASE) is not None
            text = facts.text.lower()
            found = any(_phrase_in(keyword.lower(), text) for keyword in value)
            return found if op == "contains_any" else not found
        if name in ("sentiment", "followers"):
            return fact is not None and (fact < value if op == "below" else fact > value)
        if name == "business_hours":
            return within(value, facts.at) is (op == "within")
        if name == "tags":
            wanted = set(value)
            return {
                "has_any": bool(wanted & tag_ids),
                "has_all": wanted <= tag_ids,
                "has_none": not wanted & tag_ids,
            }[op]
        return {"is": priority == value, "at_least": priority >= value}.get(op, priority <= value)

    found: list[tuple[str, int]] = []
    matched: set[int] = set()
    priority, tag_ids = facts.priority, facts.tag_ids
    for event in events:
        for rule in rule_list:
            if event not in rule.events or rule.id in matched:
                continue
            results = [holds(c, priority, tag_ids) for c in RAW[rule.id]["conditions"]]
            if not results or (all(results) if RAW[rule.id]["match"] == "all" else any(results)):
                matched.add(rule.id)
                found.append((event, rule.id))
                for action in rule.actions:
                    if action.type == "set_priority":
                        priority = action.value
                    if action.type == "add_tags":
                        tag_ids = tag_ids | set(action.value)
                if rule.stop_processing:
                    return found
    return found


def _phrase_in(keyword: str, text: str) -> bool:
    """A keyword's words, in order, each separated by whitespace only, as whole words."""
    words = keyword.split()
    pattern = r"\s+".join(re.escape(w) for w in words)
    return re.search(r"(?<!\w)" + pattern + r"(?!\w)", text) is not None


RAW: dict[int, dict[str, Any]] = {}

_CONDITIONS = [c for c, _, _ in MATCHING] + [
    ("text", "contains_any", ["not working", "call me back", "c++"]),
    ("text", "contains_none", ["refund", "money back"]),
    ("business_hours", "within", None),
    ("business_hours", "outside", 40),
]
_FACT_VALUES = [f for _, f, _ in MATCHING] + [
    {"text": "It is NOT  working, call me\nback"},
    {"text": "c++ refunds"},
    {"text": "money back now"},
    {"text": "nothing"},
    {"sentiment": None, "followers": None},
]


@pytest.mark.parametrize("seed", range(60))
def test_evaluation_agrees_with_the_plain_reading_of_the_rules(seed):
    import random

    chance = random.Random(seed)
    events = list(EVENTS)
    rule_list = []
    RAW.clear()
    for rule_id in range(1, chance.randint(1, 8) + 1):
        conditions = chance.sample(_CONDITIONS, chance.randint(0, 4))
        actions = chance.choice(
            [
                MONITOR,
                [{"type": "set_priority", "value": chance.randint(1, 4)}],
                [{"type": "add_tags", "value": chance.sample([30, 31, 32], 2)}],
                [
                    {"type": "add_tags", "value": [chance.choice([30, 31, 32])]},
                    {"type": "set_priority", "value": chance.randint(1, 4)},
                ],
            ]
        )
        match = chance.choice(["all", "any"])
        rule_events = tuple(chance.sample(events, chance.randint(1, 2)))
        rule_list.append(
            build(
                *conditions,
                match=match,
                events=rule_events,
                actions=actions,
                stop_processing=chance.random() < 0.15,
                id=rule_id,
            )
        )
        RAW[rule_id] = {
            "conditions": [{"field": f, "op": o, "value": v} for f, o, v in conditions],
            "match": match,
        }
    rule_set = rules.RuleSet(rule_list)
    for _ in range(40):
        facts = FACTS
        for change in chance.sample(_FACT_VALUES, 3):
            facts = replace(facts, **change)
        facts = replace(
            facts, priority=chance.randint(1, 4), tag_ids=frozenset(chance.sample([30, 31, 32], 1))
        )
        sequence = chance.sample(events, chance.randint(1, 2))
        open_now = chance.random() < 0.5

        def within(calendar_id, at, open_now=open_now):
            return open_now

        expected = _reference_evaluate(rule_list, facts, sequence, within)
        got = [(e, m.rule.id) for e, m in rule_set.evaluate(facts, sequence, within)]
        assert got == expected
        if len(sequence) == 1:
            plain = rules_evaluate(rule_list, facts, within_hours=within, event=sequence[0])
            assert [m.rule.id for m in plain] == [i for _, i in expected]


def test_facts_needed_lists_the_fields_any_rule_uses():
    rules = [
        build(("tags", "has_any", [30])),
        build(("open_escalation", "is", True), ("vip", "is", True)),
    ]
    assert facts_needed(rules) == {"tags", "open_escalation", "vip"}
    assert facts_needed([]) == frozenset()


def test_compile_rejects_a_malformed_definition_instead_of_crashing():
    with pytest.raises(RuleError) as raised:
        rule_compile(
            id=1,
            name="broken",
            events=["message_received"],
            match="all",
            conditions=[{"field": "tags", "op": "has_any"}],
            actions=MONITOR,
            stop_processing=False,
        )
    assert raised.value.messages == ["Condition 1: needs a 'field', an 'op' and a 'value'."]


def test_compile_accepts_ids_that_no_longer_exist():
    rule = rule_compile(
        id=1,
        name="old team",
        events=["message_received"],
        match="any",
        conditions=[],
        actions=[{"type": "set_team", "value": 999}],
        stop_processing=True,
    )
    assert rule.actions == (Action(type="set_team", value=999),)


# Validation


def test_a_complete_valid_rule_passes_validation():
    assert (
        problems(
            events=list(EVENTS),
            match="any",
            conditions=[
                {"field": "platform", "op": "is", "value": ["x"]},
                {"field": "channel", "op": "is_not", "value": [1, 2]},
                {
                    "field": "kind",
                    "op": "is",
                    "value": ["post", "comment", "mention", "dm", "reply"],
                },
                {"field": "text", "op": "contains_none", "value": ["spam", "buy now"]},
                {"field": "text", "op": "matches_regex", "value": r"\border\b"},
                {"field": "sentiment", "op": "below", "value": -1},
                {"field": "language", "op": "is", "value": ["en", "de"]},
                {"field": "vip", "op": "is", "value": False},
                {"field": "followers", "op": "above", "value": 0},
                {"field": "open_escalation", "op": "is", "value": True},
                {"field": "business_hours", "op": "outside", "value": 40},
                {"field": "tags", "op": "has_none", "value": [32]},
                {"field": "priority", "op": "at_most", "value": 1},
            ],
            actions=[
                {"type": "set_priority", "value": 4},
                {"type": "set_team", "value": 11},
                {"type": "assign", "value": 20},
                {"type": "add_tags", "value": [30]},
                {"type": "mark_monitoring", "value": None},
                {"type": "acknowledge", "value": "Thanks {first_name}, we read {channel}."},
                {"type": "escalate", "value": {"path": 50, "reason": "Legal threat"}},
                {"type": "notify", "value": {"users": [21], "teams": [10], "email": True}},
                {"type": "webhook", "value": {"endpoint": 70}},
            ],
        )
        == []
    )


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        ({"events": []}, "Choose at least one event."),
        ({"events": "message_received"}, "Choose at least one event."),
        ({"events": ["message_received", "liked"]}, "Unknown event 'liked'."),
        ({"match": "most"}, "Match must be 'all' or 'any'."),
        ({"conditions": None}, "Conditions must be a list."),
        ({"actions": []}, "Add at least one action."),
        ({"conditions": ["vip"]}, "Condition 1: needs a 'field', an 'op' and a 'value'."),
        ({"actions": [{"value": 1}]}, "Action 1: needs a 'type'."),
    ],
)
def test_the_shape_of_a_definition_is_validated(definition, message):
    assert problems(**definition) == [message]


@pytest.mark.parametrize(
    ("field", "op", "value", "message"),
    [
        ("colour", "is", ["red"], "unknown field 'colour'."),
        ("sentiment", "is", 0, "'sentiment' has no operator 'is'; use 'below' or 'above'."),
        ("platform", "is", [], "'platform' needs a non-empty list of platforms."),
        ("platform", "is", ["myspace"], "'platform' has the unknown platform 'myspace'."),
        ("channel", "is", ["1"], "'channel' needs a non-empty list of channel ids."),
        ("channel", "is", [True], "'channel' needs a non-empty list of channel ids."),
        ("channel", "is_not", [1, 9], "'channel' refers to the unknown channel id 9."),
        ("kind", "is", ["story"], "'kind' has the unknown message kind 'story'."),
        ("text", "contains_any", [], "'text' needs a non-empty list of keywords or phrases,"),
        ("text", "contains_none", ["ok", "  "], "'text' needs a non-empty list of keywords"),
        ("text", "matches_regex", "", "'text' needs a regular expression."),
        ("text", "matches_regex", "a" * 501, "'text' needs a regular expression of at most 500"),
        ("sentiment", "below", 1.5, "'sentiment' needs a number between -1 and 1."),
        ("sentiment", "above", "0.5", "'sentiment' needs a number between -1 and 1."),
        ("sentiment", "above", True, "'sentiment' needs a number between -1 and 1."),
        ("language", "is", ["EN"], "'language' needs a list of two-letter lowercase ISO 639-1"),
        ("language", "is", ["eng"], "'language' needs a list of two-letter lowercase ISO 639-1"),
        ("vip", "is", 1, "'vip' needs true or false."),
        ("followers", "above", -1, "'followers' needs a whole number of followers, 0 or more."),
        ("followers", "above", 1.5, "'followers' needs a whole number of followers, 0 or more."),
        ("open_escalation", "is", "yes", "'open_escalation' needs true or false."),
        ("business_hours", "within", 41, "'business_hours' refers to the unknown calendar id 41."),
        ("business_hours", "within", "default", "'business_hours' needs a calendar id."),
        ("tags", "has_all", [], "'tags' needs a non-empty list of tag ids."),
        ("tags", "has_any", [30, 99, 98], "'tags' refers to the unknown tag id 99, 98."),
        ("priority", "at_least", 5, "'priority' needs a priority from 1 (Low) to 4 (Urgent)."),
        ("priority", "is", True, "'priority' needs a priority from 1 (Low) to 4 (Urgent)."),
    ],
)
def test_a_condition_with_a_wrong_value_is_rejected(field, op, value, message):
    [problem] = condition_problems(field, op, value)
    assert problem.startswith(f"Condition 1: {message}")


def test_an_invalid_regex_is_rejected_with_the_regex_error():
    assert condition_problems("text", "matches_regex", "order (\\d+") == [
        "Condition 1: 'text' has an invalid regular expression:"
        " missing ), unterminated subpattern at position 6."
    ]


@pytest.mark.parametrize("pattern", [r"(a+)+$", r"(\w+\s?)*!", r"(x+x+)+y", r"(?:[a-z]*,)+"])
def test_a_regex_with_a_repetition_inside_a_repetition_is_rejected(pattern):
    """Catastrophic backtracking: one crafted post would stall the ingest."""
    [problem] = condition_problems("text", "matches_regex", pattern)
    assert problem.startswith("Condition 1: 'text' has a repetition inside a repetition")


@pytest.mark.parametrize(
    "pattern",
    [r"#\d{6}\b", r"(\d{1,3}\.){3}\d{1,3}", r"(?:refund|money back)+", r"(?>a+)+", r"a++"],
)
def test_a_regex_with_bounded_or_single_repetitions_is_accepted(pattern):
    assert condition_problems("text", "matches_regex", pattern) == []


def test_a_condition_with_an_unexpected_key_is_rejected():
    condition = {"field": "vip", "op": "is", "value": True, "negate": True}
    assert problems(conditions=[condition]) == ["Condition 1: unexpected key 'negate'."]


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ({"type": "explode"}, "unknown action type 'explode'."),
        ({"type": "set_priority", "value": 0}, "'set_priority' needs a priority from 1 (Low) to 4"),
        ({"type": "set_priority", "value": "4"}, "'set_priority' needs a priority from 1 (Low)"),
        ({"type": "set_team", "value": 12}, "'set_team' refers to the unknown team id 12."),
        ({"type": "set_team", "value": None}, "'set_team' needs a team id."),
        ({"type": "assign", "value": 21}, "'assign' refers to the unknown agent id 21."),
        ({"type": "assign", "value": "round robin"}, "'assign' needs an agent id or 'auto'."),
        ({"type": "add_tags", "value": []}, "'add_tags' needs a non-empty list of tag ids."),
        ({"type": "add_tags", "value": [33]}, "'add_tags' refers to the unknown tag id 33."),
        ({"type": "acknowledge", "value": "  "}, "'acknowledge' needs the text of the reply."),
        ({"type": "acknowledge", "value": "x" * 1001}, "'acknowledge' needs a reply of at most"),
        (
            {"type": "acknowledge", "value": "Hi {first_name} {agent} {}"},
            "'acknowledge' uses the unknown placeholder {agent}, {};"
            " only {first_name}, {name} and {channel} are filled in.",
        ),
        (
            {"type": "escalate", "value": {"path": 50, "department": 60}},
            "'escalate' needs exactly one of 'path' or 'department'.",
        ),
        ({"type": "escalate", "value": {"reason": "x"}}, "'escalate' needs exactly one of"),
        ({"type": "escalate", "value": {"path": 51}}, "'escalate' refers to the unknown escal"),
        ({"type": "escalate", "value": {"department": 61}}, "'escalate' refers to the unknown"),
        (
            {"type": "escalate", "value": {"path": 50, "reason": "x" * 501}},
            "'escalate' needs a reason of at most 500 characters.",
        ),
        ({"type": "escalate", "value": {"team": 10}}, "'escalate' needs an object with a 'path'"),
        (
            {"type": "notify", "value": {"email": True}},
            "'notify' needs at least one recipient: users, teams or the assignee.",
        ),
        (
            {"type": "notify", "value": {"users": [99]}},
            "'notify' refers to the unknown user id 99.",
        ),
        (
            {"type": "notify", "value": {"teams": [99]}},
            "'notify' refers to the unknown team id 99.",
        ),
        (
            {"type": "notify", "value": {"users": 21}},
            "'notify' needs a non-empty list of user ids.",
        ),
        ({"type": "notify", "value": {"assignee": "yes"}}, "'notify' needs true or false for"),
        (
            {"type": "notify", "value": {"assignee": True, "message": "x" * 501}},
            "'notify' needs a message of at most 500 characters.",
        ),
        ({"type": "notify", "value": {"cc": [21]}}, "'notify' needs an object with 'users'"),
        ({"type": "webhook", "value": {"endpoint": 71}}, "'webhook' refers to the unknown endp"),
        ({"type": "webhook", "value": 70}, "'webhook' needs an object with an 'endpoint'."),
        ({"type": "webhook", "value": {"endpoint": "70"}}, "'webhook' needs an endpoint id."),
    ],
)
def test_an_action_with_a_wrong_value_is_rejected(action, message):
    [problem] = action_problems(action)
    assert problem.startswith(f"Action 1: {message}")


@pytest.mark.parametrize(
    ("action", "what"),
    [
        ({"type": "set_priority", "value": 3}, "set the priority"),
        ({"type": "set_team", "value": 10}, "set the team"),
        ({"type": "assign", "value": "auto"}, "assign"),
    ],
)
def test_a_rule_may_set_priority_team_and_assignee_only_once(action, what):
    other = {"type": "add_tags", "value": [30]}
    assert action_problems(action, other, action) == [f"Action 3: a rule can {what} only once."]


def test_every_problem_is_reported_at_once_with_its_position():
    assert problems(
        events=["message_received", "liked"],
        conditions=[
            {"field": "vip", "op": "is", "value": True},
            {"field": "sentiment", "op": "below", "value": 2},
            {"field": "tags", "op": "has_any", "value": [99]},
        ],
        actions=[{"type": "set_priority", "value": 9}, {"type": "webhook", "value": {}}],
    ) == [
        "Unknown event 'liked'.",
        "Condition 2: 'sentiment' needs a number between -1 and 1.",
        "Condition 3: 'tags' refers to the unknown tag id 99.",
        "Action 1: 'set_priority' needs a priority from 1 (Low) to 4 (Urgent).",
        "Action 2: 'webhook' needs an object with an 'endpoint'.",
    ]


def test_rule_error_reads_as_all_its_messages():
    error = RuleError(["Match must be 'all' or 'any'.", "Add at least one action."])
    assert isinstance(error, ValueError)
    assert str(error) == "Match must be 'all' or 'any'. Add at least one action."


def test_unhashable_values_are_reported_not_raised():
    assert problems(
        events=[["message_received"]],
        match=["all"],
        conditions=[{"field": ["vip"], "op": "is", "value": True}],
        actions=[{"type": {"set": 1}}],
    ) == [
        "Unknown event ['message_received'].",
        "Match must be 'all' or 'any'.",
        "Condition 1: unknown field ['vip'].",
        "Action 1: unknown action type {'set': 1}.",
    ]


def test_known_agents_must_be_known_users():
    with pytest.raises(ValueError, match="agent"):
        Known(agent_ids=frozenset({1}), user_ids=frozenset({2}))


# Acknowledgements


def test_acknowledgement_fills_the_placeholders_once():
    text = "Hi {first_name} ({name}), thanks for writing on {channel}. {unknown} stays."
    assert (
        acknowledgement_render(text=text, first_name="{channel}", name="Ada L", channel="X")
        == "Hi {channel} (Ada L), thanks for writing on X. {unknown} stays."
    )


# Description


def test_constants_describe_every_field_action_and_event():
    assert set(CONDITION_FIELDS) == {
        "platform",
        "channel",
        "kind",
        "text",
        "sentiment",
        "language",
        "vip",
        "followers",
        "open_escalation",
        "business_hours",
        "tags",
        "priority",
    }
    assert len(ACTION_TYPES) == 9
    assert EVENTS["message_received"] == "Message received"


def test_describe_turns_conditions_and_actions_into_sentences():
    names = {
        "platform": {"x": "X", "facebook": "Facebook"},
        "channel": {1: "@acme"},
        "tag": {30: "Refund", 31: "Legal"},
        "team": {10: "Support"},
        "user": {20: "Ada"},
        "calendar": {40: "Weekend"},
        "path": {50: "Legal review"},
        "department": {60: "Legal"},
        "endpoint": {70: "Zapier"},
    }
    conditions = [
        {"field": "platform", "op": "is", "value": ["x", "facebook"]},
        {"field": "channel", "op": "is_not", "value": [1, 2]},
        {"field": "kind", "op": "is", "value": ["dm", "mention", "reply"]},
        {"field": "text", "op": "contains_any", "value": ["refund", "money back"]},
        {"field": "text", "op": "contains_none", "value": ["thanks"]},
        {"field": "text", "op": "matches_regex", "value": r"\d{5}"},
        {"field": "sentiment", "op": "below", "value": -0.5},
        {"field": "language", "op": "is_not", "value": ["en"]},
        {"field": "vip", "op": "is", "value": True},
        {"field": "vip", "op": "is", "value": False},
        {"field": "followers", "op": "above", "value": 10000},
        {"field": "open_escalation", "op": "is", "value": False},
        {"field": "business_hours", "op": "within", "value": None},
        {"field": "business_hours", "op": "outside", "value": 40},
        {"field": "tags", "op": "has_any", "value": [30, 31]},
        {"field": "tags", "op": "has_none", "value": [30]},
        {"field": "priority", "op": "at_least", "value": 3},
    ]
    actions = [
        {"type": "set_priority", "value": 4},
        {"type": "set_team", "value": 10},
        {"type": "assign", "value": "auto"},
        {"type": "assign", "value": 20},
        {"type": "add_tags", "value": [30, 32]},
        {"type": "mark_monitoring", "value": None},
        {"type": "acknowledge", "value": "Thanks {first_name}!"},
        {"type": "acknowledge", "value": "x" * 80},
        {"type": "escalate", "value": {"path": 50}},
        {"type": "escalate", "value": {"department": 60, "reason": "Threat"}},
        {
            "type": "notify",
            "value": {"users": [20], "teams": [10], "assignee": True, "email": True},
        },
        {"type": "webhook", "value": {"endpoint": 70}},
    ]
    assert rule_describe(conditions=conditions, actions=actions, names=names) == [
        "Platform is X or Facebook",
        "Channel is not @acme or #2",
        "Message kind is direct message, mention or reply",
        'Text contains "refund" or "money back"',
        'Text contains none of "thanks"',
        r"Text matches the pattern /\d{5}/",
        "Sentiment below -0.5",
        "Language is not en",
        "Contact is VIP",
        "Contact is not VIP",
        "Followers above 10,000",
        "Contact has no open escalation",
        "Within business hours",
        "Outside business hours of Weekend",
        "Has any of the tags Refund, Legal",
        "Has none of the tags Refund",
        "Priority at least High",
        "Set priority to Urgent",
        "Set team to Support",
        "Assign automatically within the team",
        "Assign to Ada",
        "Add tags Refund, #32",
        "Mark as monitoring (no reply needed)",
        'Acknowledge with "Thanks {first_name}!"',
        f'Acknowledge with "{"x" * 59}…"',
        "Escalate along the path Legal review",
        "Escalate to the department Legal (reason: Threat)",
        "Notify Ada, team Support and the assignee (also by email)",
        "Call the webhook Zapier",
    ]


def test_describe_falls_back_to_ids_without_names():
    assert rule_describe(
        conditions=[{"field": "tags", "op": "has_all", "value": [7]}],
        actions=[{"type": "set_team", "value": 3}],
    ) == ["Has all of the tags #7", "Set team to #3"]


# 499 characters, under REGEX_MAX_LENGTH: 166 optional groups, one inside the other.
_DEEP = "(" * 166 + "a" + ")?" * 166


def test_a_regex_nested_too_deeply_to_check_is_refused_not_a_crash():
    assert condition_problems("text", "matches_regex", _DEEP) == [
        "Condition 1: 'text' has groups nested too deeply: write it with fewer nested groups."
    ]


def test_a_repetition_inside_a_repetition_in_a_conditional_group_is_refused():
    [problem] = condition_problems("text", "matches_regex", r"(x)?(?(1)(a+)+c|b)")
    assert "repetition inside a repetition" in problem


@pytest.mark.django_db
def test_stored_rules_the_backtracking_check_would_refuse_still_run():
    """Saved before the check: it is a heuristic, so they are not dropped at run time; nor
    does one nested too deeply to check stop the others."""
    from conversations.routing import RuleBook
    from tests.factories import RoutingRuleFactory

    nested = RoutingRuleFactory(
        conditions=[{"field": "text", "op": "matches_regex", "value": r"\d+(?:,\d+)*"}]
    )
    deep = RoutingRuleFactory(conditions=[{"field": "text", "op": "matches_regex", "value": _DEEP}])
    assert {nested.pk, deep.pk} <= {rule.id for rule in RuleBook.load().rules}
