"""The routing setup of a typical support team, for ``bench/run.py --routing``.

A default business calendar, three SLA policies on it, a few tags, one team and ten active
routing rules, created through the ORM in the throwaway database. Every rule is checked with
``rule_validate`` against what exists, as the rule editor checks it, so a definition the
product would refuse stops the benchmark instead of being skipped unseen at run time.

Left out on purpose: ``assign: auto`` (needs agents online), ``notify``, ``webhook`` and
``escalate`` (external calls or per-item services); only in-memory actions, tags and one
acknowledgement, restricted to rare posts, are measured.
"""

from dataclasses import dataclass
from datetime import date
from typing import Any

LEFT_OUT = "assign 'auto' (needs agents online), notify, webhook and escalate (external calls)"
CALENDAR_NAME = "Berlin support hours"
TIME_ZONE = "Europe/Berlin"
WEEKLY_HOURS = {
    **{str(day): [["08:00", "20:00"]] for day in range(5)},
    "5": [["10:00", "16:00"]],
}
HOLIDAYS = (
    (date(2025, 1, 1), "Neujahr"),
    (date(2025, 4, 18), "Karfreitag"),
    (date(2025, 12, 25), "1. Weihnachtstag"),
)
TAGS = ("urgent", "orders", "negative", "influencer", "vip", "after-hours")
TEAM = "Customer care"
ACKNOWLEDGEMENT = (
    "Hi {first_name}, thanks for your message to {channel}. "
    "Someone from our team will call you back during business hours."
)
# One in this many contacts known before the run is made a VIP.
VIP_EVERY = 10


@dataclass(frozen=True)
class RoutingSetup:
    rules: int
    policies: int
    calendar: str
    holidays: int
    tags: int
    teams: int
    vip_contacts: int = 0

    def describe(self) -> str:
        return (
            f"{self.rules} active rules, {self.policies} SLA policies on '{self.calendar}' "
            f"({TIME_ZONE}, {self.holidays} holidays), {self.tags} tags, {self.teams} team, "
            f"{self.vip_contacts} VIP contacts"
        )


PARTS = ("all", "rules", "sla")


def routing_setup(parts: str = "all") -> RoutingSetup:
    """Create calendar, tags, team and, as ``parts`` says, the SLA policies ("sla"), the rules
    ("rules") or both ("all"); raise SystemExit on an invalid rule."""
    if parts not in PARTS:
        raise ValueError(f"parts must be one of {PARTS}")
    from conversations.models import (
        BusinessCalendar,
        Holiday,
        Priority,
        RoutingRule,
        SlaPolicy,
        Tag,
    )
    from conversations.rules import RuleError, rule_validate
    from conversations.settings_forms import Catalog
    from governance.models import Team

    calendar = BusinessCalendar.objects.create(
        name=CALENDAR_NAME, time_zone=TIME_ZONE, weekly_hours=WEEKLY_HOURS, is_default=True
    )
    Holiday.objects.bulk_create(
        Holiday(calendar=calendar, date=day, name=name) for day, name in HOLIDAYS
    )
    policies = [
        SlaPolicy(
            name="Standard",
            first_response_minutes=60,
            next_response_minutes=120,
            resolution_minutes=24 * 60,
            at_risk_minutes=15,
        ),
        SlaPolicy(
            name="Urgent",
            priority=Priority.URGENT,
            first_response_minutes=15,
            next_response_minutes=30,
            resolution_minutes=4 * 60,
            at_risk_minutes=5,
        ),
        SlaPolicy(
            name="VIP",
            vip_only=True,
            first_response_minutes=30,
            next_response_minutes=60,
            resolution_minutes=8 * 60,
            at_risk_minutes=10,
        ),
    ]
    for policy in policies:
        policy.calendar = calendar
    if parts == "rules":
        policies = []
    SlaPolicy.objects.bulk_create(policies)
    tag = {name: Tag.objects.create(name=name).pk for name in TAGS}
    team = Team.objects.create(name=TEAM, slug="customer-care").pk

    definitions = _rules(tag=tag, team=team, calendar=calendar.pk) if parts != "sla" else []
    known = Catalog.load().known()
    problems = []
    for definition in definitions:
        try:
            rule_validate(
                events=definition["events"],
                match=definition["match"],
                conditions=definition["conditions"],
                actions=definition["actions"],
                known=known,
            )
        except RuleError as error:
            problems.append(f"  {definition['name']}: {error}")
    if problems:
        raise SystemExit("Invalid routing rules in the benchmark:\n" + "\n".join(problems))
    RoutingRule.objects.bulk_create(
        RoutingRule(position=position, is_active=True, **definition)
        for position, definition in enumerate(definitions)
    )
    return RoutingSetup(
        rules=len(definitions),
        policies=len(policies),
        calendar=CALENDAR_NAME,
        holidays=len(HOLIDAYS),
        tags=len(TAGS),
        teams=1,
    )


def vip_contacts_mark() -> int:
    """Make every ``VIP_EVERY``-th contact that exists (those of the warm-up) a VIP."""
    from contacts.models import Contact

    ids = list(Contact.objects.order_by("pk").values_list("pk", flat=True)[::VIP_EVERY])
    return Contact.objects.filter(pk__in=ids).update(is_vip=True)


def _text(op: str, value: Any) -> dict[str, Any]:
    return {"field": "text", "op": op, "value": value}


def _rules(*, tag: dict[str, int], team: int, calendar: int) -> list[dict[str, Any]]:
    """Ten rules as a support team writes them, in the order they run."""
    received = ["message_received"]
    created = ["conversation_created"]
    return [
        {
            "name": "Outages and cancellations are urgent",
            "events": received,
            "match": "all",
            "conditions": [
                _text(
                    "contains_any",
                    [
                        "not working",
                        "keeps crashing",
                        "charged twice",
                        "cancelling",
                        "never showed up",
                    ],
                )
            ],
            "actions": [
                {"type": "set_priority", "value": 4},
                {"type": "add_tags", "value": [tag["urgent"]]},
            ],
            "stop_processing": False,
        },
        {
            "name": "Order numbers",
            "events": received,
            "match": "all",
            "conditions": [_text("matches_regex", r"#\d{6}\b")],
            "actions": [{"type": "add_tags", "value": [tag["orders"]]}],
            "stop_processing": False,
        },
        {
            "name": "Unhappy customers",
            "events": received,
            "match": "all",
            "conditions": [
                {"field": "sentiment", "op": "below", "value": -0.3},
                {"field": "priority", "op": "at_most", "value": 2},
            ],
            "actions": [
                {"type": "set_priority", "value": 3},
                {"type": "add_tags", "value": [tag["negative"]]},
            ],
            "stop_processing": False,
        },
        {
            "name": "Influencers",
            "events": created,
            "match": "all",
            "conditions": [{"field": "followers", "op": "above", "value": 10_000}],
            "actions": [{"type": "add_tags", "value": [tag["influencer"]]}],
            "stop_processing": False,
        },
        {
            "name": "VIP customers",
            "events": ["conversation_created", "message_received"],
            "match": "all",
            "conditions": [{"field": "vip", "op": "is", "value": True}],
            "actions": [
                {"type": "set_priority", "value": 4},
                {"type": "add_tags", "value": [tag["vip"]]},
            ],
            "stop_processing": False,
        },
        {
            "name": "Direct messages go to customer care",
            "events": created,
            "match": "all",
            "conditions": [{"field": "kind", "op": "is", "value": ["dm"]}],
            "actions": [{"type": "set_team", "value": team}],
            "stop_processing": False,
        },
        {
            "name": "After hours",
            "events": created,
            "match": "all",
            "conditions": [{"field": "business_hours", "op": "outside", "value": calendar}],
            "actions": [{"type": "add_tags", "value": [tag["after-hours"]]}],
            "stop_processing": False,
        },
        {
            "name": "Callback requests are acknowledged",
            "events": created,
            "match": "all",
            "conditions": [
                {"field": "kind", "op": "is", "value": ["dm"]},
                _text("contains_any", ["call me back", "call back", "callback"]),
            ],
            "actions": [{"type": "acknowledge", "value": ACKNOWLEDGEMENT}],
            "stop_processing": False,
        },
        {
            "name": "Urgent and negative to customer care",
            "events": received,
            "match": "all",
            "conditions": [
                {"field": "tags", "op": "has_any", "value": [tag["urgent"], tag["negative"]]},
                {"field": "priority", "op": "at_least", "value": 3},
            ],
            "actions": [{"type": "set_team", "value": team}],
            "stop_processing": False,
        },
        {
            "name": "Chatter and praise: monitoring only",
            "events": created,
            "match": "any",
            "conditions": [
                _text(
                    "contains_any",
                    ["unboxing", "anyone else using", "ad on tv", "shout-out", "well done"],
                )
            ],
            "actions": [{"type": "mark_monitoring"}],
            "stop_processing": True,
        },
    ]
