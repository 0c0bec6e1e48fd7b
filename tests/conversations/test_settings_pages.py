"""The routing settings pages: rules and their editor, the dry run, SLA policies, business
hours, departments, escalation paths, webhook endpoints and auto-assignment capacities."""

import html
import re
from datetime import date

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext

from channels_ingest.pipeline import ingest
from conversations.models import (
    BusinessCalendar,
    Conversation,
    ConversationEvent,
    Department,
    EscalationLevel,
    EscalationPath,
    Message,
    RoutingRule,
    SlaPolicy,
    WebhookEndpoint,
)
from conversations.presence import agent_seen
from governance.models import TeamMembership
from tests.factories import (
    BusinessCalendarFactory,
    DepartmentFactory,
    EscalationLevelFactory,
    EscalationPathFactory,
    RoutingRuleFactory,
    SlaPolicyFactory,
    TagFactory,
    WebhookEndpointFactory,
    post,
)

pytestmark = pytest.mark.django_db

PAGES = [
    "/routing/",
    "/routing/rules/new/",
    "/routing/dry-run/",
    "/routing/sla/",
    "/routing/sla/new/",
    "/routing/hours/",
    "/routing/hours/new/",
    "/routing/departments/",
    "/routing/departments/new/",
    "/routing/paths/",
    "/routing/paths/new/",
    "/routing/endpoints/",
    "/routing/endpoints/new/",
    "/routing/assignment/",
]


@pytest.fixture
def things(world):
    """One of everything the pages edit, the ones referred to by others included."""
    calendar = BusinessCalendarFactory(name="Office hours")
    endpoint = WebhookEndpointFactory(name="Logistics hook")
    department = DepartmentFactory(name="Billing", team=world.team_a)
    path = EscalationPathFactory(name="Complaints")
    EscalationLevelFactory(path=path, department=department, position=0)
    EscalationLevelFactory(path=path, user=world.manager, position=1)
    return {
        "rule": RoutingRuleFactory(name="Refunds"),
        "policy": SlaPolicyFactory(name="Standard", calendar=calendar),
        "calendar": calendar,
        "department": department,
        "path": path,
        "endpoint": endpoint,
    }


def _object_pages(things) -> list[str]:
    return [
        f"/routing/rules/{things['rule'].pk}/",
        f"/routing/rules/{things['rule'].pk}/delete/",
        f"/routing/sla/{things['policy'].pk}/",
        f"/routing/sla/{things['policy'].pk}/delete/",
        f"/routing/hours/{things['calendar'].pk}/",
        f"/routing/hours/{things['calendar'].pk}/delete/",
        f"/routing/departments/{things['department'].pk}/",
        f"/routing/departments/{things['department'].pk}/delete/",
        f"/routing/paths/{things['path'].pk}/",
        f"/routing/paths/{things['path'].pk}/delete/",
        f"/routing/endpoints/{things['endpoint'].pk}/",
        f"/routing/endpoints/{things['endpoint'].pk}/delete/",
    ]


def _messages(response) -> list[str]:
    """The messages the response added (those of earlier responses stay unread here)."""
    return [str(m) for m in get_messages(response.wsgi_request)][-1:]


# --- Access -----------------------------------------------------------------------------


def test_every_page_renders_for_an_admin_with_the_sub_navigation(login, world, things):
    client = login(world.admin)
    for url in PAGES + _object_pages(things):
        response = client.get(url)
        assert response.status_code == 200, url
        content = response.content.decode()
        assert 'aria-label="Routing settings"' in content, url
        assert 'href="/routing/assignment/"' in content, url


@pytest.mark.parametrize("persona", ["manager", "agent_a", "agent_b"])
def test_managers_and_agents_are_refused(login, world, things, persona):
    client = login(world.persona(persona))
    for url in PAGES + _object_pages(things):
        assert client.get(url).status_code == 403, url
    rule = things["rule"]
    for url, data in (
        (f"/routing/rules/{rule.pk}/move/", {"direction": "down"}),
        (f"/routing/rules/{rule.pk}/toggle/", {"active": "0"}),
        (f"/routing/rules/{rule.pk}/delete/", {}),
        (f"/routing/endpoints/{things['endpoint'].pk}/delete/", {}),
        ("/routing/rules/new/", {"name": "x"}),
        ("/routing/assignment/", {}),
    ):
        assert client.post(url, data).status_code == 403, url
    rule.refresh_from_db()
    assert rule.is_active and RoutingRule.objects.count() == 1
    assert WebhookEndpoint.objects.filter(pk=things["endpoint"].pk).exists()


def test_anonymous_visitors_are_sent_to_the_login_page(client, things):
    for url in PAGES + _object_pages(things):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/accounts/login/"), url


def test_only_admins_see_the_routing_link(login, world):
    assert 'href="/routing/"' in login(world.admin).get("/inbox/").content.decode()
    assert 'href="/routing/"' not in login(world.manager).get("/inbox/").content.decode()


# --- Rules -------------------------------------------------------------------------------


def test_a_rule_built_in_the_editor_is_stored_as_rule_json(login, world):
    billing = TagFactory(name="billing")
    calendar = BusinessCalendarFactory()
    path = EscalationPathFactory()
    endpoint = WebhookEndpointFactory()
    RoutingRuleFactory(position=7)
    response = login(world.admin).post(
        "/routing/rules/new/",
        {
            "name": "Angry refunds",
            "is_active": "on",
            "events": ["message_received", "conversation_created"],
            "match": "all",
            "stop_processing": "on",
            "conditions-0-field": "text",
            "conditions-0-op": "contains_any",
            "conditions-0-value": "refund, money back ,",
            # Rows are read in page order, whatever their index.
            "conditions-5-field": "channel",
            "conditions-5-op": "is_not",
            "conditions-5-value": [str(world.channel_b.pk), str(world.channel_a.pk)],
            "conditions-1-field": "sentiment",
            "conditions-1-op": "below",
            "conditions-1-value": "-0.5",
            "conditions-2-field": "business_hours",
            "conditions-2-op": "outside",
            "conditions-2-value": str(calendar.pk),
            "conditions-3-field": "vip",
            "conditions-3-op": "is",
            "conditions-3-value": "false",
            "conditions-4-field": "language",
            "conditions-4-op": "is",
            "conditions-4-value": "EN, de",
            "conditions-6-field": "followers",
            "conditions-6-op": "above",
            "conditions-6-value": "1000",
            "conditions-7-field": "business_hours",
            "conditions-7-op": "within",
            "conditions-7-value": "",
            "actions-0-type": "set_priority",
            "actions-0-value": "4",
            "actions-1-type": "add_tags",
            "actions-1-value": [str(billing.pk)],
            "actions-2-type": "assign",
            "actions-2-value": "auto",
            "actions-3-type": "escalate",
            "actions-3-target": f"path:{path.pk}",
            "actions-3-reason": " Angry customer ",
            "actions-4-type": "notify",
            "actions-4-users": [str(world.manager.pk)],
            "actions-4-teams": [str(world.team_a.pk)],
            "actions-4-assignee": "on",
            "actions-4-message": "",
            "actions-5-type": "webhook",
            "actions-5-value": str(endpoint.pk),
            "actions-6-type": "mark_monitoring",
            "actions-7-type": "set_team",
            "actions-7-value": str(world.team_b.pk),
            "actions-8-type": "acknowledge",
            "actions-8-value": "Thanks {first_name}, we are on it.",
        },
    )
    assert response.status_code == 302, response.context["form"].errors
    assert response["Location"] == "/routing/"
    rule = RoutingRule.objects.get(name="Angry refunds")
    assert rule.is_active and rule.stop_processing and rule.match == "all"
    assert rule.events == ["message_received", "conversation_created"]
    assert rule.position == 8
    assert rule.created_by == world.admin
    assert rule.conditions == [
        {"field": "text", "op": "contains_any", "value": ["refund", "money back"]},
        {
            "field": "channel",
            "op": "is_not",
            "value": [world.channel_b.pk, world.channel_a.pk],
        },
        {"field": "sentiment", "op": "below", "value": -0.5},
        {"field": "business_hours", "op": "outside", "value": calendar.pk},
        {"field": "vip", "op": "is", "value": False},
        {"field": "language", "op": "is", "value": ["en", "de"]},
        {"field": "followers", "op": "above", "value": 1000},
        {"field": "business_hours", "op": "within", "value": None},
    ]
    assert rule.actions == [
        {"type": "set_priority", "value": 4},
        {"type": "add_tags", "value": [billing.pk]},
        {"type": "assign", "value": "auto"},
        {"type": "escalate", "value": {"path": path.pk, "reason": "Angry customer"}},
        {
            "type": "notify",
            "value": {
                "users": [world.manager.pk],
                "teams": [world.team_a.pk],
                "assignee": True,
                "email": False,
                "message": "",
            },
        },
        {"type": "webhook", "value": {"endpoint": endpoint.pk}},
        {"type": "mark_monitoring", "value": None},
        {"type": "set_team", "value": world.team_b.pk},
        {"type": "acknowledge", "value": "Thanks {first_name}, we are on it."},
    ]
    assert ConversationEvent.objects.count() == 0


def test_the_first_rule_gets_position_zero_and_the_editor_shows_what_was_stored(login, world):
    billing = TagFactory(name="billing")
    client = login(world.admin)
    client.post(
        "/routing/rules/new/",
        {
            "name": "Billing",
            "events": ["message_received"],
            "match": "any",
            "conditions-0-field": "tags",
            "conditions-0-op": "has_any",
            "conditions-0-value": [str(billing.pk)],
            "actions-0-type": "escalate",
            "actions-0-target": "department:" + str(DepartmentFactory(name="Finance").pk),
        },
    )
    rule = RoutingRule.objects.get()
    assert rule.position == 0 and not rule.is_active and rule.match == "any"
    content = client.get(f"/routing/rules/{rule.pk}/").content.decode()
    assert f'<option value="{billing.pk}" selected>billing</option>' in content
    assert f'value="department:{rule.actions[0]["value"]["department"]}" selected' in content
    assert '<option value="has_any" selected>has any of</option>' in content


@pytest.mark.parametrize(
    ("rows", "problems"),
    [
        (
            {
                "conditions-0-field": "text",
                "conditions-0-op": "matches_regex",
                "conditions-0-value": "(refund",
                "actions-0-type": "set_team",
                "actions-0-value": "999999",
            },
            [
                "Condition 1: 'text' has an invalid regular expression: "
                "missing ), unterminated subpattern at position 0.",
                "Action 1: 'set_team' refers to the unknown team id 999999.",
            ],
        ),
        (
            {
                "conditions-0-field": "followers",
                "conditions-0-op": "above",
                "conditions-0-value": "lots",
            },
            [
                "Condition 1: 'followers' needs a whole number of followers, 0 or more.",
                "Add at least one action.",
            ],
        ),
    ],
)
def test_an_invalid_rule_is_shown_again_with_every_problem_and_not_saved(
    login, world, rows, problems
):
    response = login(world.admin).post(
        "/routing/rules/new/", {"name": "Broken", "match": "all", **rows}
    )
    assert response.status_code == 200
    assert RoutingRule.objects.count() == 0
    content = response.content.decode()
    for problem in ["Choose at least one event.", *problems]:
        assert html.escape(problem) in content, problem
    # The rows come back as they were typed.
    typed = rows["conditions-0-value"]
    assert f'value="{html.escape(typed)}"' in content
    assert 'class="edit-row invalid"' in content


def test_a_rule_naming_something_deleted_still_lists_and_asks_for_a_fix_on_save(login, world):
    endpoint = WebhookEndpointFactory(name="Old hook")
    rule = RoutingRuleFactory(
        name="Calls out", actions=[{"type": "webhook", "value": {"endpoint": endpoint.pk}}]
    )
    endpoint_pk = endpoint.pk
    endpoint.delete()
    client = login(world.admin)
    content = client.get("/routing/").content.decode()
    assert f"Call the webhook #{endpoint_pk}" in content
    response = client.post(
        f"/routing/rules/{rule.pk}/",
        {
            "name": "Calls out",
            "events": ["message_received"],
            "match": "all",
            "actions-0-type": "webhook",
            "actions-0-value": str(endpoint_pk),
        },
    )
    assert response.status_code == 200
    assert f"refers to the unknown endpoint id {endpoint_pk}" in response.content.decode()


def test_the_rules_list_describes_rules_with_names(login, world):
    billing = TagFactory(name="billing")
    RoutingRuleFactory(
        name="Billing to team A",
        conditions=[{"field": "channel", "op": "is", "value": [world.channel_a.pk]}],
        actions=[
            {"type": "set_team", "value": world.team_a.pk},
            {"type": "add_tags", "value": [billing.pk]},
            {"type": "assign", "value": world.agent_a.pk},
        ],
        stop_processing=True,
    )
    content = login(world.admin).get("/routing/").content.decode()
    assert "Channel is Channel A" in content
    assert "Set team to Team A" in content
    assert "Add tags billing" in content
    assert f"Assign to {world.agent_a.first_name}" in content
    assert "stops processing" in content


def test_rules_move_up_and_down(login, world):
    first, second, third = (RoutingRuleFactory(name=n) for n in ("first", "second", "third"))
    client = login(world.admin)

    def order() -> list[str]:
        return list(RoutingRule.objects.order_by("position", "id").values_list("name", flat=True))

    assert client.post(f"/routing/rules/{third.pk}/move/", {"direction": "up"}).status_code == 302
    assert order() == ["first", "third", "second"]
    client.post(f"/routing/rules/{first.pk}/move/", {"direction": "down"})
    assert order() == ["third", "first", "second"]
    client.post(f"/routing/rules/{third.pk}/move/", {"direction": "up"})  # already first
    assert order() == ["third", "first", "second"]
    assert sorted(RoutingRule.objects.values_list("position", flat=True)) == [0, 1, 2]
    assert second.pk


def test_rules_with_equal_positions_still_move(login, world):
    a = RoutingRuleFactory(name="a", position=0)
    RoutingRuleFactory(name="b", position=0)
    login(world.admin).post(f"/routing/rules/{a.pk}/move/", {"direction": "down"})
    names = RoutingRule.objects.order_by("position", "id").values_list("name", flat=True)
    assert list(names) == ["b", "a"]


def test_deactivating_from_two_pages_open_at_once_leaves_the_rule_inactive(login, world):
    """The button sets the state it showed: the second of two "Deactivate" clicks, from a
    page opened before the first, does not switch the rule back on."""
    rule = RoutingRuleFactory(name="Refunds", is_active=True)
    page = login(world.admin).get("/routing/").content.decode()
    assert 'name="active" value="0"' in page
    first, second = login(world.admin), login(world.admin)
    first.post(f"/routing/rules/{rule.pk}/toggle/", {"active": "0"})
    second.post(f"/routing/rules/{rule.pk}/toggle/", {"active": "0"})
    rule.refresh_from_db()
    assert rule.is_active is False
    assert first.post(f"/routing/rules/{rule.pk}/toggle/").status_code == 400


def test_a_rule_is_deactivated_activated_and_deleted_after_confirmation(login, world):
    rule = RoutingRuleFactory(name="Refunds")
    client = login(world.admin)
    client.post(f"/routing/rules/{rule.pk}/toggle/", {"active": "0"})
    rule.refresh_from_db()
    assert not rule.is_active
    client.post(f"/routing/rules/{rule.pk}/toggle/", {"active": "1"})
    rule.refresh_from_db()
    assert rule.is_active
    confirm = client.get(f"/routing/rules/{rule.pk}/delete/")
    assert "Delete rule “Refunds”?" in confirm.content.decode()
    assert RoutingRule.objects.filter(pk=rule.pk).exists()
    response = client.post(f"/routing/rules/{rule.pk}/delete/")
    assert response["Location"] == "/routing/"
    assert not RoutingRule.objects.filter(pk=rule.pk).exists()
    assert client.get(f"/routing/rules/{rule.pk}/move/").status_code == 405


def test_the_rules_list_runs_a_fixed_number_of_queries(login, world, django_assert_max_num_queries):
    client = login(world.admin)
    client.get("/routing/")  # the session and role are warm, as on any later page
    RoutingRuleFactory()
    with CaptureQueriesContext(connection) as few:
        assert client.get("/routing/").status_code == 200
    tags = [TagFactory() for _ in range(5)]
    for n in range(25):
        RoutingRuleFactory(
            conditions=[{"field": "tags", "op": "has_any", "value": [tags[n % 5].pk]}],
            actions=[
                {"type": "set_team", "value": world.team_a.pk},
                {"type": "assign", "value": world.agent_a.pk},
            ],
        )
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert client.get("/routing/").status_code == 200
    assert len(few.captured_queries) <= 16


# --- Dry run ---------------------------------------------------------------------------------


def _dry_run_rules(world):
    billing = TagFactory(name="billing")
    RoutingRuleFactory(
        name="Tag refunds",
        actions=[
            {"type": "add_tags", "value": [billing.pk]},
            {"type": "set_priority", "value": 3},
        ],
    )
    RoutingRuleFactory(
        name="Invoices",
        conditions=[{"field": "text", "op": "contains_any", "value": ["invoice"]}],
    )
    RoutingRuleFactory(name="New only", events=["conversation_created"])
    RoutingRuleFactory(name="Switched off", is_active=False)
    RoutingRuleFactory(
        name="Billing is urgent",
        conditions=[{"field": "tags", "op": "has_any", "value": [billing.pk]}],
        actions=[{"type": "set_priority", "value": 4}],
        stop_processing=True,
    )
    RoutingRuleFactory(name="Never reached", actions=[{"type": "mark_monitoring"}])
    return billing


def test_the_dry_run_shows_matches_in_order_and_where_processing_stopped(login, world):
    _dry_run_rules(world)
    before = (Conversation.objects.count(), ConversationEvent.objects.count())
    response = login(world.admin).post(
        "/routing/dry-run/",
        {
            "text": "I want a REFUND now",
            "event": "message_received",
            "kind": "mention",
            "priority": "2",
        },
    )
    assert response.status_code == 200
    states = [(r["rule"].name, r["state"]) for r in response.context["results"]]
    assert states == [
        ("Tag refunds", "matched"),
        ("Invoices", "no_match"),
        ("New only", "other_event"),
        ("Billing is urgent", "matched"),
        ("Never reached", "skipped"),
    ]
    content = response.content.decode()
    assert "2 rules would apply." in content
    assert "Set priority to Urgent" in content
    assert "not run: “Billing is urgent” stopped processing" in content
    assert "Switched off" not in content
    assert response.context["outcome"]["tags"] == ["billing"]
    assert response.context["outcome"]["priority"] == "Urgent"
    assert (Conversation.objects.count(), ConversationEvent.objects.count()) == before


def _dry_run(client, event: str, text: str = "I want a refund"):
    return client.post(
        "/routing/dry-run/",
        {"text": text, "event": event, "kind": "mention", "priority": "2"},
    )


def test_a_dry_run_of_a_new_conversation_also_runs_the_message_received_rules_as_ingest_does(
    login, world
):
    new = TagFactory(name="new")
    RoutingRuleFactory(
        name="Refunds are urgent",
        conditions=[{"field": "text", "op": "contains_any", "value": ["refund"]}],
        actions=[{"type": "set_priority", "value": 4}],
    )
    RoutingRuleFactory(
        name="Tag new ones",
        events=["conversation_created"],
        actions=[{"type": "add_tags", "value": [new.pk]}],
    )
    response = _dry_run(login(world.admin), "conversation_created")
    states = [(r["rule"].name, r["state"]) for r in response.context["results"]]
    assert states == [("Refunds are urgent", "matched"), ("Tag new ones", "matched")]
    assert response.context["outcome"]["priority"] == "Urgent"
    assert response.context["outcome"]["tags"] == ["new"]

    # The ingest of the same post does the same.
    ingest(channel=world.channel_a, posts=[post("dry-1", author="dry", body="I want a refund")])
    conversation = Message.objects.get(external_id="dry-1").conversation
    assert conversation.priority == 4
    assert [t.name for t in conversation.tags.all()] == ["new"]


def test_a_rule_of_the_creation_that_stops_processing_stops_the_message_received_rules(
    login, world
):
    RoutingRuleFactory(name="Any message", actions=[{"type": "set_priority", "value": 4}])
    RoutingRuleFactory(
        name="New: normal, and stop",
        events=["conversation_created"],
        actions=[{"type": "set_priority", "value": 2}],
        stop_processing=True,
    )
    client = login(world.admin)
    created = _dry_run(client, "conversation_created")
    assert [(r["rule"].name, r["state"], r["by"]) for r in created.context["results"]] == [
        ("Any message", "skipped", "New: normal, and stop"),
        ("New: normal, and stop", "matched", ""),
    ]
    assert created.context["outcome"]["priority"] == "Normal"
    received = _dry_run(client, "message_received")
    assert [r["state"] for r in received.context["results"]] == ["matched", "other_event"]
    assert received.context["outcome"]["priority"] == "Urgent"


def test_the_dry_run_computes_sentiment_and_language_when_left_empty(login, world):
    RoutingRuleFactory(
        name="Unhappy English",
        conditions=[
            {"field": "sentiment", "op": "below", "value": -0.3},
            {"field": "language", "op": "is", "value": ["en"]},
        ],
    )
    response = login(world.admin).post(
        "/routing/dry-run/",
        {
            "text": "This is terrible, awful service and I hate waiting for you people.",
            "event": "message_received",
            "kind": "mention",
            "priority": "2",
        },
    )
    assert [r["state"] for r in response.context["results"]] == ["matched"]
    facts = dict(response.context["facts"])
    assert facts["Language"] == "en"
    assert float(facts["Sentiment"]) < -0.3


def test_the_dry_run_takes_the_facts_of_a_stored_message(login, world):
    RoutingRuleFactory(
        name="Orders on channel A",
        conditions=[
            {"field": "text", "op": "contains_any", "value": ["order"]},
            {"field": "channel", "op": "is", "value": [world.channel_a.pk]},
        ],
    )
    message = world.conversation_a.messages.get()
    client = login(world.admin)
    response = client.post(
        "/routing/dry-run/",
        {"message": str(message.pk), "event": "message_received", "kind": "post", "priority": "2"},
    )
    assert [r["state"] for r in response.context["results"]] == ["matched"]
    assert dict(response.context["facts"])["Channel"] == "Channel A"
    missing = client.post(
        "/routing/dry-run/",
        {"message": "999999", "event": "message_received", "kind": "post", "priority": "2"},
    )
    assert "There is no customer message #999999 you can see." in missing.content.decode()
    empty = client.post("/routing/dry-run/", {"event": "message_received", "kind": "post"})
    assert "Paste a message text, or give the id of a stored message." in empty.content.decode()


# --- SLA policies ----------------------------------------------------------------------------


def test_an_sla_policy_is_entered_in_hours_and_minutes_and_stored_in_minutes(login, world):
    calendar = BusinessCalendarFactory()
    client = login(world.admin)
    response = client.post(
        "/routing/sla/new/",
        {
            "name": "Urgent VIPs",
            "priority": "4",
            "channel": str(world.channel_a.pk),
            "vip_only": "on",
            "first_response_amount": "2",
            "first_response_unit": "hours",
            "next_response_amount": "45",
            "next_response_unit": "minutes",
            "resolution_amount": "",
            "resolution_unit": "hours",
            "calendar": str(calendar.pk),
            "at_risk_minutes": "20",
            "is_active": "on",
        },
    )
    assert response.status_code == 302
    policy = SlaPolicy.objects.get(name="Urgent VIPs")
    assert (policy.first_response_minutes, policy.next_response_minutes) == (120, 45)
    assert policy.resolution_minutes is None
    assert (policy.priority, policy.channel, policy.calendar) == (4, world.channel_a, calendar)
    assert policy.vip_only and policy.is_active and policy.at_risk_minutes == 20
    listing = client.get("/routing/sla/").content.decode()
    assert "2 h" in listing and "45 min" in listing
    form = client.get(f"/routing/sla/{policy.pk}/").context["form"]
    assert form["first_response_amount"].value() == 2
    assert form["first_response_unit"].value() == "hours"
    assert form["next_response_unit"].value() == "minutes"


def test_an_sla_policy_needs_a_target(login, world):
    response = login(world.admin).post(
        "/routing/sla/new/",
        {
            "name": "Empty",
            "priority": "",
            "channel": "",
            "calendar": "",
            "at_risk_minutes": "30",
            "first_response_unit": "hours",
            "next_response_unit": "hours",
            "resolution_unit": "hours",
        },
    )
    assert response.status_code == 200
    assert "Set at least one target" in response.content.decode()
    assert not SlaPolicy.objects.exists()


# --- Business hours --------------------------------------------------------------------------


def _calendar_post(**extra):
    return {"name": "Office", "time_zone": "Europe/Berlin", **extra}


def test_business_hours_are_saved_with_intervals_midnight_and_holidays(login, world):
    client = login(world.admin)
    response = client.post(
        "/routing/hours/new/",
        _calendar_post(
            is_default="on",
            d0_0_opens="09:00",
            d0_0_closes="12:00",
            d0_1_opens="13:00",
            d0_1_closes="17:30",
            d4_0_opens="20:00",
            d4_0_midnight="on",
            d5_0_opens="10:00",
            d5_0_closes="00:00",
            **{
                "holidays-0-date": "2026-12-25",
                "holidays-0-name": "Christmas",
                "holidays-3-date": "",
                "holidays-3-name": "",
                "holidays-1-date": "2026-01-01",
                "holidays-1-name": "",
            },
        ),
    )
    assert response.status_code == 302, response.context["form"].errors
    calendar = BusinessCalendar.objects.get(name="Office")
    assert calendar.is_default and calendar.time_zone == "Europe/Berlin"
    assert calendar.weekly_hours == {
        "0": [["09:00", "12:00"], ["13:00", "17:30"]],
        "4": [["20:00", "24:00"]],
        "5": [["10:00", "24:00"]],
    }
    assert list(calendar.holidays.values_list("date", "name")) == [
        (date(2026, 1, 1), ""),
        (date(2026, 12, 25), "Christmas"),
    ]
    form = client.get(f"/routing/hours/{calendar.pk}/").context["form"]
    assert form["d4_0_midnight"].value() is True
    assert form["d0_1_closes"].value() == "17:30"


def test_business_hours_that_close_before_they_open_are_refused(login, world):
    response = login(world.admin).post(
        "/routing/hours/new/", _calendar_post(d0_0_opens="17:00", d0_0_closes="09:00")
    )
    assert response.status_code == 200
    assert "Monday: 17:00-09:00 must close after it opens." in response.content.decode()
    assert not BusinessCalendar.objects.exists()


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({}, "The calendar has no open hours on any day of the week."),
        ({"d1_0_opens": "09:00"}, "Tuesday: give both the opening and the closing time."),
        (
            {"d1_0_opens": "09:00", "d1_0_closes": "17:00", "holidays-0-date": "25/12"},
            "needs a valid date",
        ),
    ],
)
def test_business_hours_problems_are_named(login, world, fields, problem):
    response = login(world.admin).post("/routing/hours/new/", _calendar_post(**fields))
    assert problem in html.unescape(response.content.decode())
    assert not BusinessCalendar.objects.exists()


def test_a_new_default_calendar_replaces_the_old_one(login, world):
    old = BusinessCalendarFactory(name="Old", is_default=True)
    response = login(world.admin).post(
        "/routing/hours/new/",
        _calendar_post(is_default="on", d0_0_opens="08:00", d0_0_closes="16:00"),
    )
    assert response.status_code == 302
    old.refresh_from_db()
    assert not old.is_default
    assert list(
        BusinessCalendar.objects.filter(is_default=True).values_list("name", flat=True)
    ) == ["Office"]


def test_editing_business_hours_replaces_the_holidays(login, world):
    calendar = BusinessCalendarFactory(name="Office")
    calendar.holidays.create(date=date(2026, 5, 1), name="Labour day")
    login(world.admin).post(
        f"/routing/hours/{calendar.pk}/",
        _calendar_post(
            d0_0_opens="09:00",
            d0_0_closes="17:00",
            **{
                "holidays-0-date": "",
                "holidays-0-name": "Labour day",
                "holidays-1-date": "2026-10-03",
                "holidays-1-name": "Unity",
            },
        ),
    )
    assert list(calendar.holidays.values_list("name", flat=True)) == ["Unity"]


# --- Departments, paths and endpoints ------------------------------------------------------


@pytest.mark.parametrize(
    ("delivery", "field", "problem"),
    [
        ("in_app", "team", "Choose the team that takes these escalations."),
        ("email", "email", "Give the address escalations are sent to."),
        ("webhook", "endpoint", "Choose the webhook endpoint to call."),
    ],
)
def test_a_department_needs_what_its_delivery_uses(login, world, delivery, field, problem):
    response = login(world.admin).post(
        "/routing/departments/new/", {"name": "Logistics", "delivery": delivery}
    )
    assert response.status_code == 200
    assert response.context["form"].errors[field] == [problem]
    assert not Department.objects.exists()


def test_a_department_keeps_only_the_chosen_delivery(login, world):
    endpoint = WebhookEndpointFactory()
    client = login(world.admin)
    client.post(
        "/routing/departments/new/",
        {"name": "Logistics", "delivery": "in_app", "team": str(world.team_b.pk)},
    )
    department = Department.objects.get(name="Logistics")
    assert department.team == world.team_b
    client.post(
        f"/routing/departments/{department.pk}/",
        {
            "name": "Logistics",
            "delivery": "webhook",
            "team": str(world.team_b.pk),
            "email": "ops@example.com",
            "endpoint": str(endpoint.pk),
        },
    )
    department.refresh_from_db()
    assert (department.team, department.email, department.endpoint) == (None, "", endpoint)


def test_an_escalation_path_keeps_its_levels_in_page_order(login, world):
    department = DepartmentFactory(name="Tier 2", team=world.team_a)
    client = login(world.admin)
    response = client.post(
        "/routing/paths/new/",
        {
            "name": "Complaints",
            "description": "Tier 2, then the manager",
            "levels-4-target": f"department:{department.pk}",
            "levels-1-target": f"user:{world.manager.pk}",
        },
    )
    assert response.status_code == 302
    path = EscalationPath.objects.get(name="Complaints")
    levels = list(path.levels.order_by("position").values_list("department", "user", "position"))
    assert levels == [(department.pk, None, 0), (None, world.manager.pk, 1)]
    client.post(
        f"/routing/paths/{path.pk}/",
        {"name": "Complaints", "levels-0-target": f"user:{world.manager.pk}"},
    )
    assert list(path.levels.values_list("user", flat=True)) == [world.manager.pk]


def test_an_escalation_path_needs_known_levels(login, world):
    client = login(world.admin)
    response = client.post("/routing/paths/new/", {"name": "Empty"})
    assert "Add at least one level." in response.content.decode()
    response = client.post(
        "/routing/paths/new/", {"name": "Ghost", "levels-0-target": "department:999999"}
    )
    assert "Level 1: choose a department or a person." in response.content.decode()
    assert not EscalationPath.objects.exists()


def test_a_webhook_department_needs_an_endpoint_that_signs_its_calls(login, world):
    unsigned = WebhookEndpointFactory(name="Plain", secret="")
    signed = WebhookEndpointFactory(name="Signed")
    client = login(world.admin)
    form = {"name": "Logistics", "delivery": "webhook", "endpoint": str(unsigned.pk)}
    response = client.post("/routing/departments/new/", form)
    assert response.context["form"].errors["endpoint"] == [
        "“Plain” has no secret, so its calls could not be signed. "
        "Set a secret on the endpoint first."
    ]
    assert not Department.objects.exists()

    client.post("/routing/departments/new/", {**form, "endpoint": str(signed.pk)})
    department = Department.objects.get(name="Logistics")
    assert department.endpoint == signed
    # Nor can the endpoint lose its secret while the department is reached through it.
    response = client.post(
        f"/routing/endpoints/{signed.pk}/",
        {"name": "Signed", "url": signed.url, "is_active": "on", "clear_secret": "on"},
    )
    assert response.context["form"].errors["clear_secret"] == [
        "Escalations to “Logistics” are posted here and must stay signed: "
        "give those departments another endpoint first."
    ]
    signed.refresh_from_db()
    assert signed.secret == "whsec-test"
    # A new secret in place of the old one is fine.
    client.post(
        f"/routing/endpoints/{signed.pk}/",
        {"name": "Signed", "url": signed.url, "is_active": "on", "new_secret": "rotated"},
    )
    signed.refresh_from_db()
    assert signed.secret == "rotated"

    # One saved before secrets were required is pointed out on the list.
    Department.objects.create(name="Legacy", delivery="webhook", endpoint=unsigned)
    listing = client.get("/routing/departments/").content.decode()
    assert listing.count("not signed") == 1
    assert re.search(r"Plain\s*<span[^>]*>not signed</span>", listing)


def test_an_endpoint_secret_is_write_only(login, world):
    client = login(world.admin)
    client.post(
        "/routing/endpoints/new/",
        {
            "name": "Ops",
            "url": "https://ops.example.com/hook",
            "new_secret": "s3cr3t-value",
            "is_active": "on",
        },
    )
    endpoint = WebhookEndpoint.objects.get(name="Ops")
    assert endpoint.secret == "s3cr3t-value"
    page = client.get(f"/routing/endpoints/{endpoint.pk}/").content.decode()
    assert "s3cr3t-value" not in page and "A secret is set" in page
    listing = client.get("/routing/endpoints/").content.decode()
    assert "s3cr3t-value" not in listing and "<td>set</td>" in listing

    client.post(
        f"/routing/endpoints/{endpoint.pk}/",
        {"name": "Ops", "url": "https://ops.example.com/v2", "new_secret": ""},
    )
    endpoint.refresh_from_db()
    assert endpoint.secret == "s3cr3t-value" and endpoint.url.endswith("/v2")
    assert not endpoint.is_active

    client.post(
        f"/routing/endpoints/{endpoint.pk}/",
        {"name": "Ops", "url": "https://ops.example.com/v2", "clear_secret": "on"},
    )
    endpoint.refresh_from_db()
    assert endpoint.secret == ""
    assert "not set" in client.get("/routing/endpoints/").content.decode()


# --- Deleting what is still used ---------------------------------------------------------


def test_deleting_something_still_used_explains_why_instead_of_failing(login, world, things):
    client = login(world.admin)
    calendar, department = things["calendar"], things["department"]
    endpoint = things["endpoint"]
    department.delivery, department.endpoint = "webhook", endpoint
    department.save()

    response = client.post(f"/routing/hours/{calendar.pk}/delete/")
    assert response.status_code == 302
    assert _messages(response) == [
        "Business hours “Office hours” cannot be deleted: it is still used by SLA policy "
        "“Standard”. Change those first."
    ]
    response = client.post(f"/routing/departments/{department.pk}/delete/")
    assert _messages(response) == [
        "Department “Billing” cannot be deleted: it is still used by escalation path "
        "“Complaints”. Change those first."
    ]
    response = client.post(f"/routing/endpoints/{endpoint.pk}/delete/")
    assert "still used by department “Billing”" in _messages(response)[0]
    assert BusinessCalendar.objects.filter(pk=calendar.pk).exists()
    assert Department.objects.filter(pk=department.pk).exists()
    assert WebhookEndpoint.objects.filter(pk=endpoint.pk).exists()

    # Once nothing uses it, it goes.
    things["path"].delete()
    response = client.post(f"/routing/departments/{department.pk}/delete/")
    assert _messages(response) == ["Department “Billing” deleted."]
    assert not EscalationLevel.objects.exists()


def test_the_delete_page_warns_about_rules_that_name_the_thing(login, world, things):
    path = things["path"]
    RoutingRuleFactory(
        name="Escalate complaints",
        actions=[{"type": "escalate", "value": {"path": path.pk}}],
    )
    client = login(world.admin)
    content = client.get(f"/routing/paths/{path.pk}/delete/").content.decode()
    assert (
        "Routing rules that name it: “Escalate complaints”. They skip that part until you edit"
        in content
    )
    # A business-hours condition is not skipped: it falls back to the default hours.
    BusinessCalendar.objects.filter(pk=things["calendar"].pk).update(is_default=True)
    nights = BusinessCalendar.objects.create(name="Nights", time_zone="UTC", weekly_hours={})
    RoutingRuleFactory(
        name="Night owls",
        conditions=[{"field": "business_hours", "op": "within", "value": nights.pk}],
    )
    content = client.get(f"/routing/hours/{nights.pk}/delete/").content.decode()
    assert (
        "Routing rules that name it: “Night owls”. Their business-hours conditions use the "
        "default business hours until you edit them" in content
    )
    # Without other hours to fall back on, every hour is open.
    BusinessCalendar.objects.exclude(pk=nights.pk).update(is_default=False)
    content = client.get(f"/routing/hours/{nights.pk}/delete/").content.decode()
    assert "Their business-hours conditions take every hour as open until you edit" in content


def test_deleting_the_default_hours_warns_about_rules_on_the_default_hours(login, world):
    office = BusinessCalendar.objects.create(
        name="Office", time_zone="UTC", weekly_hours={"0": [["09:00", "17:00"]]}, is_default=True
    )
    RoutingRuleFactory(
        name="After hours",
        conditions=[{"field": "business_hours", "op": "outside", "value": None}],
        actions=[{"type": "set_priority", "value": 4}],
    )
    client = login(world.admin)
    content = client.get(f"/routing/hours/{office.pk}/delete/").content.decode()
    assert "Routing rules that use the default business hours: “After hours”." in content
    # Other hours, not the default, are no concern of theirs.
    shop = BusinessCalendar.objects.create(name="Shop", time_zone="UTC", weekly_hours={})
    content = client.get(f"/routing/hours/{shop.pk}/delete/").content.decode()
    assert "use the default business hours" not in content


# --- Auto-assignment -----------------------------------------------------------------------


def test_capacities_are_edited_in_one_form_and_online_members_shown(login, world):
    bob = TeamMembership.objects.get(user=world.agent_a)
    charlie = TeamMembership.objects.get(user=world.agent_b)
    charlie.capacity = 5
    charlie.save()
    agent_seen(user_id=world.agent_a.pk)
    client = login(world.admin)
    page = client.get("/routing/assignment/")
    teams = dict(page.context["teams"])
    online = {m.user.username: is_online for m, _, is_online, _ in teams["Team A"]}
    assert online == {"mona": False, "bob": True}
    assert "online" in page.content.decode()

    fields = {f"capacity_{m.pk}": "" for m in TeamMembership.objects.all()}
    response = client.post("/routing/assignment/", {**fields, f"capacity_{bob.pk}": "3"})
    assert response.status_code == 302
    bob.refresh_from_db()
    charlie.refresh_from_db()
    assert (bob.capacity, charlie.capacity) == (3, None)

    response = client.post("/routing/assignment/", {**fields, f"capacity_{bob.pk}": "-1"})
    assert response.status_code == 200
    bob.refresh_from_db()
    assert bob.capacity == 3


def test_the_refusal_names_every_user_in_plural_where_needed(login, world):
    calendar = BusinessCalendarFactory(name="Office")
    SlaPolicyFactory(name="Gold", calendar=calendar)
    SlaPolicyFactory(name="Silver", calendar=calendar)
    response = login(world.admin).post(f"/routing/hours/{calendar.pk}/delete/")
    assert _messages(response) == [
        "Business hours “Office” cannot be deleted: it is still used by SLA policies “Gold”, "
        "“Silver”. Change those first."
    ]
