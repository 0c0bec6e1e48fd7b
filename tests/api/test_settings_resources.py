"""The routing settings and KPI targets over the API: business hours, departments, escalation
paths, auto-assignment capacities, moving rules and their dry run, and KPI targets. Input is
checked as the pages check it and every change is audited as the pages audit it."""

from datetime import date

import pytest

from conversations.models import (
    BusinessCalendar,
    Conversation,
    ConversationEvent,
    Department,
    EscalationLevel,
    EscalationPath,
    RoutingRule,
    Status,
)
from conversations.presence import agent_seen
from governance.models import AuditEntry, TeamMembership
from kpis.models import KpiTarget, Metric
from tests.factories import (
    BusinessCalendarFactory,
    ChannelFactory,
    DepartmentFactory,
    EscalationLevelFactory,
    EscalationPathFactory,
    RoutingRuleFactory,
    SlaPolicyFactory,
    TagFactory,
    UserFactory,
    WebhookEndpointFactory,
)

pytestmark = pytest.mark.django_db


def _audit(action: str) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(action=action).order_by("id"))


def _problems(response) -> dict[str, list[str]]:
    assert response.status_code == 400, response.json()
    body = response.json()
    assert body["code"] == "invalid"
    return body["fields"]


# --- Business hours --------------------------------------------------------------------------


def test_business_hours_are_saved_with_intervals_midnight_and_holidays(world, api):
    old = BusinessCalendarFactory(name="Old", is_default=True)
    made = api("admin").post(
        "/api/v1/business-hours/",
        {
            "name": "Office",
            "time_zone": "Europe/Berlin",
            "is_default": True,
            "weekly_hours": {
                "0": [["09:00", "12:00"], ["13:00", "17:30"]],
                "4": [["20:00", "24:00"]],
                "5": [["10:00", "00:00"]],
            },
            "holidays": [
                {"date": "2026-12-25", "name": "Christmas"},
                {"date": "2026-01-01"},
            ],
        },
        format="json",
    )
    assert made.status_code == 201, made.json()
    calendar = BusinessCalendar.objects.get(name="Office")
    assert made.json() == {
        "id": calendar.pk,
        "name": "Office",
        "time_zone": "Europe/Berlin",
        "is_default": True,
        "weekly_hours": {
            "0": [["09:00", "12:00"], ["13:00", "17:30"]],
            "4": [["20:00", "24:00"]],
            "5": [["10:00", "24:00"]],
        },
        "holidays": [
            {"date": "2026-01-01", "name": ""},
            {"date": "2026-12-25", "name": "Christmas"},
        ],
    }
    old.refresh_from_db()
    assert not old.is_default
    [entry] = _audit("business_hours.created")
    assert (entry.actor, entry.object_id) == (world.admin, str(calendar.pk))
    assert entry.after["holidays"] == ["2026-01-01", "2026-12-25 Christmas"]
    assert entry.after["weekly_hours"]["4"] == [["20:00", "24:00"]]


def test_a_new_calendar_starts_with_the_pages_defaults(world, api, settings):
    made = api("admin").post("/api/v1/business-hours/", {"name": "Plain"}, format="json")
    assert made.status_code == 201, made.json()
    body = made.json()
    assert body["time_zone"] == settings.TIME_ZONE
    assert body["weekly_hours"] == {str(day): [["09:00", "17:00"]] for day in range(5)}
    assert (body["is_default"], body["holidays"]) == (False, [])


@pytest.mark.parametrize(
    ("payload", "field", "problem"),
    [
        (
            {"weekly_hours": {"0": [["17:00", "09:00"]]}},
            "weekly_hours",
            "Monday: 17:00-09:00 must close after it opens.",
        ),
        (
            {"weekly_hours": {}},
            "weekly_hours",
            "The calendar has no open hours on any day of the week.",
        ),
        (
            {"weekly_hours": {"0": [["09:00", "17:00"]], "2": [["25:00", "17:00"]]}},
            "weekly_hours",
            ["Enter a valid time.", "Wednesday: give both the opening and the closing time."],
        ),
        (
            {"holidays": [{"date": "2026-12-25"}, {"date": "2026-12-25", "name": "Again"}]},
            "holidays",
            "2026-12-25 is listed twice as a holiday.",
        ),
        (
            {"time_zone": "Mars/Olympus"},
            "time_zone",
            "Select a valid choice. Mars/Olympus is not one of the available choices.",
        ),
    ],
)
def test_business_hours_are_checked_as_on_the_page(world, api, payload, field, problem):
    response = api("admin").post(
        "/api/v1/business-hours/", {"name": "Office", **payload}, format="json"
    )
    assert _problems(response) == {field: problem if isinstance(problem, list) else [problem]}
    assert not BusinessCalendar.objects.exists()
    assert not _audit("business_hours.created")


def test_business_hours_take_at_most_two_intervals_a_day_and_a_unique_name(world, api):
    BusinessCalendarFactory(name="Office")
    client = api("admin")
    three = [["08:00", "09:00"], ["10:00", "11:00"], ["12:00", "13:00"]]
    response = client.post(
        "/api/v1/business-hours/",
        {"name": "Other", "weekly_hours": {"1": three}},
        format="json",
    )
    assert list(_problems(response)) == ["weekly_hours"]
    taken = client.post("/api/v1/business-hours/", {"name": "Office"}, format="json")
    assert _problems(taken) == {"name": ["Business calendar with this Name already exists."]}


def test_patching_business_hours_keeps_what_is_left_out_and_is_audited(world, api):
    calendar = BusinessCalendarFactory(
        name="Office", weekly_hours={"0": [["08:00", "16:00"]], "6": [["10:00", "24:00"]]}
    )
    calendar.holidays.create(date=date(2026, 5, 1), name="Labour day")
    response = api("admin").patch(
        f"/api/v1/business-hours/{calendar.pk}/",
        {"holidays": [{"date": "2026-10-03", "name": "Unity"}]},
        format="json",
    )
    assert response.status_code == 200, response.json()
    calendar.refresh_from_db()
    assert calendar.weekly_hours == {"0": [["08:00", "16:00"]], "6": [["10:00", "24:00"]]}
    assert calendar.time_zone == "Europe/Berlin"
    assert list(calendar.holidays.values_list("date", "name")) == [(date(2026, 10, 3), "Unity")]
    [entry] = _audit("business_hours.updated")
    assert entry.before == {"holidays": ["2026-05-01 Labour day"]}
    assert entry.after == {"holidays": ["2026-10-03 Unity"]}


def test_business_hours_in_use_are_not_deleted(world, api):
    calendar = BusinessCalendarFactory(name="Office")
    SlaPolicyFactory(name="Gold", calendar=calendar)
    SlaPolicyFactory(name="Silver", calendar=calendar)
    client = api("admin")
    response = client.delete(f"/api/v1/business-hours/{calendar.pk}/")
    assert response.status_code == 409
    assert response.json() == {
        "code": "conflict",
        "detail": "Business hours “Office” cannot be deleted: it is still used by SLA policies "
        "“Gold”, “Silver”. Change those first.",
    }
    assert BusinessCalendar.objects.filter(pk=calendar.pk).exists()
    assert not _audit("business_hours.deleted")
    unused = BusinessCalendarFactory(name="Spare")
    assert client.delete(f"/api/v1/business-hours/{unused.pk}/").status_code == 204
    [entry] = _audit("business_hours.deleted")
    assert (entry.object_repr, entry.actor) == ("Spare", world.admin)


def test_business_hours_list_in_name_order(world, api, django_assert_max_num_queries):
    for name in ("Weekend", "Office", "Night"):
        BusinessCalendarFactory(name=name).holidays.create(date=date(2026, 1, 1))
    client = api("admin")
    with django_assert_max_num_queries(6):
        response = client.get("/api/v1/business-hours/")
    assert [row["name"] for row in response.json()["results"]] == ["Night", "Office", "Weekend"]


# --- Departments ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delivery", "field", "problem"),
    [
        ("in_app", "team", "Choose the team that takes these escalations."),
        ("email", "email", "Give the address escalations are sent to."),
        ("webhook", "endpoint", "Choose the webhook endpoint to call."),
    ],
)
def test_a_department_needs_what_its_delivery_uses(world, api, delivery, field, problem):
    response = api("admin").post(
        "/api/v1/departments/", {"name": "Logistics", "delivery": delivery}, format="json"
    )
    assert _problems(response) == {field: [problem]}
    assert not Department.objects.exists()


def test_a_department_keeps_only_the_chosen_delivery(world, api):
    endpoint = WebhookEndpointFactory()
    client = api("admin")
    made = client.post(
        "/api/v1/departments/",
        {"name": "Logistics", "delivery": "in_app", "team": world.team_b.pk},
        format="json",
    )
    assert made.status_code == 201, made.json()
    department = Department.objects.get(name="Logistics")
    assert department.team == world.team_b
    changed = client.patch(
        f"/api/v1/departments/{department.pk}/",
        {"delivery": "webhook", "email": "ops@example.com", "endpoint": endpoint.pk},
        format="json",
    )
    assert changed.status_code == 200, changed.json()
    body = changed.json()
    del body["created_at"]
    assert body == {
        "id": department.pk,
        "name": "Logistics",
        "delivery": "webhook",
        "team": None,
        "email": "",
        "endpoint": endpoint.pk,
    }
    department.refresh_from_db()
    assert (department.team, department.email, department.endpoint) == (None, "", endpoint)
    [created] = _audit("department.created")
    [updated] = _audit("department.updated")
    assert created.after["team"] == world.team_b.pk
    assert updated.before == {"delivery": "in_app", "team": world.team_b.pk, "endpoint": None}
    assert updated.after == {"delivery": "webhook", "team": None, "endpoint": endpoint.pk}


def test_a_department_names_a_team_that_exists_and_a_valid_address(world, api):
    client = api("admin")
    ghost = client.post(
        "/api/v1/departments/",
        {"name": "Ghost", "delivery": "in_app", "team": 999999},
        format="json",
    )
    assert _problems(ghost) == {
        "team": ["Select a valid choice. That choice is not one of the available choices."]
    }
    mail = client.post(
        "/api/v1/departments/",
        {"name": "Mail", "delivery": "email", "email": "not an address"},
        format="json",
    )
    assert _problems(mail) == {"email": ["Enter a valid email address."]}


def test_a_department_on_an_escalation_path_is_not_deleted(world, api):
    department = DepartmentFactory(name="Billing", team=world.team_a)
    path = EscalationPathFactory(name="Complaints")
    EscalationLevelFactory(path=path, department=department, position=0)
    client = api("admin")
    response = client.delete(f"/api/v1/departments/{department.pk}/")
    assert response.status_code == 409
    assert response.json()["detail"] == (
        "Department “Billing” cannot be deleted: it is still used by escalation path "
        "“Complaints”. Change those first."
    )
    path.delete()
    assert client.delete(f"/api/v1/departments/{department.pk}/").status_code == 204
    assert not Department.objects.exists()
    assert [e.object_repr for e in _audit("department.deleted")] == ["Billing"]


# --- Escalation paths ----------------------------------------------------------------------


def test_an_escalation_path_keeps_its_levels_in_order(world, api):
    department = DepartmentFactory(name="Tier 2", team=world.team_a)
    client = api("admin")
    made = client.post(
        "/api/v1/escalation-paths/",
        {
            "name": "Complaints",
            "description": "Tier 2, then the manager",
            "levels": [{"department": department.pk}, {"user": world.manager.pk}],
        },
        format="json",
    )
    assert made.status_code == 201, made.json()
    path = EscalationPath.objects.get(name="Complaints")
    assert made.json() == {
        "id": path.pk,
        "name": "Complaints",
        "description": "Tier 2, then the manager",
        "levels": [
            {"position": 0, "department": department.pk, "user": None},
            {"position": 1, "department": None, "user": world.manager.pk},
        ],
    }
    [created] = _audit("escalation_path.created")
    assert created.after["levels"] == [
        "Complaints level 1: Tier 2",
        "Complaints level 2: mona",
    ]
    renamed = client.patch(
        f"/api/v1/escalation-paths/{path.pk}/", {"name": "Complaints 2"}, format="json"
    )
    assert renamed.json()["levels"] == made.json()["levels"]
    replaced = client.patch(
        f"/api/v1/escalation-paths/{path.pk}/",
        {"levels": [{"user": world.admin.pk}]},
        format="json",
    )
    only = {"position": 0, "department": None, "user": world.admin.pk}
    assert replaced.json()["levels"] == [only]
    assert list(path.levels.values_list("user", flat=True)) == [world.admin.pk]
    assert len(_audit("escalation_path.updated")) == 2


@pytest.mark.parametrize(
    ("levels", "problem"),
    [
        ([], "Add at least one level."),
        ([{"department": 999999}], "Level 1: choose a department or a person."),
        ([{}], "Level 1: choose a department or a person."),
    ],
)
def test_an_escalation_path_needs_known_levels(world, api, levels, problem):
    response = api("admin").post(
        "/api/v1/escalation-paths/", {"name": "Ghost", "levels": levels}, format="json"
    )
    assert _problems(response) == {"levels": [problem]}
    assert not EscalationPath.objects.exists()


def test_a_level_names_a_department_or_a_person_not_both(world, api):
    department = DepartmentFactory(team=world.team_a)
    response = api("admin").post(
        "/api/v1/escalation-paths/",
        {"name": "Both", "levels": [{"department": department.pk, "user": world.manager.pk}]},
        format="json",
    )
    assert _problems(response) == {"levels": ["Level 1: choose a department or a person."]}


def test_deleting_an_escalation_path_removes_its_levels(world, api):
    path = EscalationLevelFactory(user=world.manager).path
    assert api("admin").delete(f"/api/v1/escalation-paths/{path.pk}/").status_code == 204
    assert not EscalationLevel.objects.exists()
    assert len(_audit("escalation_path.deleted")) == 1


# --- Auto-assignment capacities ------------------------------------------------------------


def test_capacities_list_members_with_presence_and_load(world, api, django_assert_max_num_queries):
    agent_seen(user_id=world.agent_a.pk)
    world.conversation_a.assignee = world.agent_a
    world.conversation_a.save()
    Conversation.objects.filter(pk=world.conversation_b.pk).update(
        assignee=world.agent_b, status=Status.RESOLVED
    )
    TeamMembership.objects.filter(user=world.agent_b).update(capacity=5)
    gone = UserFactory(username="gone", is_active=False)
    TeamMembership.objects.create(team=world.team_a, user=gone)
    client = api("admin")
    with django_assert_max_num_queries(6):
        response = client.get("/api/v1/capacities/")
    rows = {row["user"]: row for row in response.json()["results"]}
    assert set(rows) == {world.manager.pk, world.agent_a.pk, world.agent_b.pk}
    bob = TeamMembership.objects.get(user=world.agent_a)
    assert rows[world.agent_a.pk] == {
        "id": bob.pk,
        "team": world.team_a.pk,
        "team_name": "Team A",
        "user": world.agent_a.pk,
        "user_name": world.agent_a.get_full_name(),
        "capacity": None,
        "online": True,
        "active_conversations": 1,
    }
    charlie = rows[world.agent_b.pk]
    assert (charlie["capacity"], charlie["active_conversations"], charlie["online"]) == (
        5,
        0,
        False,
    )
    assert rows[world.manager.pk]["online"] is False
    filtered = client.get(f"/api/v1/capacities/?team={world.team_b.pk}").json()
    assert [row["user"] for row in filtered["results"]] == [world.agent_b.pk]


def test_a_capacity_is_set_checked_and_audited(world, api):
    bob = TeamMembership.objects.get(user=world.agent_a)
    client = api("admin")
    response = client.patch(f"/api/v1/capacities/{bob.pk}/", {"capacity": 3}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["capacity"] == 3
    bob.refresh_from_db()
    assert bob.capacity == 3
    [entry] = _audit("capacity.updated")
    assert (entry.before, entry.after) == ({"capacity": None}, {"capacity": 3})
    assert entry.actor == world.admin

    refused = client.patch(f"/api/v1/capacities/{bob.pk}/", {"capacity": -1}, format="json")
    assert _problems(refused) == {"capacity": ["Ensure this value is greater than or equal to 0."]}
    unchanged = client.patch(f"/api/v1/capacities/{bob.pk}/", {}, format="json")
    assert unchanged.json()["capacity"] == 3
    cleared = client.patch(f"/api/v1/capacities/{bob.pk}/", {"capacity": None}, format="json")
    assert cleared.json()["capacity"] is None
    assert len(_audit("capacity.updated")) == 2
    assert client.delete(f"/api/v1/capacities/{bob.pk}/").status_code == 405


def test_an_inactive_members_capacity_is_not_offered(world, api):
    gone = UserFactory(username="gone", is_active=False)
    membership = TeamMembership.objects.create(team=world.team_a, user=gone)
    response = api("admin").patch(
        f"/api/v1/capacities/{membership.pk}/", {"capacity": 2}, format="json"
    )
    assert response.status_code == 404


@pytest.mark.parametrize("persona", ["manager", "agent_a"])
def test_routing_settings_refuse_everyone_but_admins(world, api, persona):
    client = api(persona)
    calendar = BusinessCalendarFactory()
    bob = TeamMembership.objects.get(user=world.agent_a)
    writes = [
        client.post("/api/v1/business-hours/", {"name": "Office"}, format="json"),
        client.patch(f"/api/v1/business-hours/{calendar.pk}/", {"name": "X"}, format="json"),
        client.delete(f"/api/v1/business-hours/{calendar.pk}/"),
        client.post("/api/v1/departments/", {"name": "D", "delivery": "in_app"}, format="json"),
        client.post("/api/v1/escalation-paths/", {"name": "P"}, format="json"),
        client.patch(f"/api/v1/capacities/{bob.pk}/", {"capacity": 1}, format="json"),
    ]
    assert [r.status_code for r in writes] == [403] * 6
    assert writes[0].json()["detail"] == "Only admins may use this resource."
    assert BusinessCalendar.objects.get().name == calendar.name
    assert TeamMembership.objects.get(pk=bob.pk).capacity is None


# --- Routing rules: moving, switching off, dry run -------------------------------------------


def test_rules_move_up_and_down_as_on_the_page(world, api):
    first, second, third = (RoutingRuleFactory(name=n, position=5) for n in "ABC")
    client = api("admin")
    moved = client.post(
        f"/api/v1/routing-rules/{third.pk}/move/", {"direction": "up"}, format="json"
    )
    assert moved.status_code == 200, moved.json()
    assert moved.json()["position"] == 1
    order = list(RoutingRule.objects.order_by("position").values_list("name", "position"))
    assert order == [("A", 0), ("C", 1), ("B", 2)]
    # Every rule whose position changed is recorded: the rules renumbered around it first,
    # then the moved one.
    assert [(e.object_id, e.before, e.after) for e in _audit("routing_rule.updated")] == [
        (str(first.pk), {"position": 5}, {"position": 0}),
        (str(second.pk), {"position": 5}, {"position": 2}),
        (str(third.pk), {"position": 5}, {"position": 1}),
    ]
    client.post(f"/api/v1/routing-rules/{first.pk}/move/", {"direction": "down"}, format="json")
    order = list(RoutingRule.objects.order_by("position").values_list("name", flat=True))
    assert order == ["C", "A", "B"]
    listed = client.get("/api/v1/routing-rules/").json()["results"]
    assert [row["name"] for row in listed] == ["C", "A", "B"]
    assert second.pk in {row["id"] for row in listed}
    wrong = client.post(
        f"/api/v1/routing-rules/{first.pk}/move/", {"direction": "sideways"}, format="json"
    )
    assert _problems(wrong) == {"direction": ['"sideways" is not a valid choice.']}


def test_a_position_given_puts_the_rule_there_and_no_two_share_one(world, api):
    for position, name in enumerate("AB"):
        RoutingRuleFactory(name=name, position=position)
    client = api("admin")
    rule = {"events": ["message_received"], "actions": [{"type": "set_priority", "value": 4}]}
    created = client.post(
        "/api/v1/routing-rules/", {**rule, "name": "X", "position": 0}, format="json"
    )
    assert created.status_code == 201, created.json()
    last = client.post("/api/v1/routing-rules/", {**rule, "name": "Z"}, format="json")
    assert last.json()["position"] == 3
    order = list(RoutingRule.objects.order_by("position").values_list("name", "position"))
    assert order == [("X", 0), ("A", 1), ("B", 2), ("Z", 3)]
    moved = client.patch(
        f"/api/v1/routing-rules/{created.json()['id']}/", {"position": 99}, format="json"
    )
    assert moved.json()["position"] == 3
    order = list(RoutingRule.objects.order_by("position").values_list("name", "position"))
    assert order == [("A", 0), ("B", 1), ("Z", 2), ("X", 3)]


def test_a_rule_is_switched_off_and_on_with_an_audit_entry(world, api):
    rule = RoutingRuleFactory(name="Refunds")
    client = api("admin")
    off = client.patch(f"/api/v1/routing-rules/{rule.pk}/", {"is_active": False}, format="json")
    assert off.json()["is_active"] is False
    [entry] = _audit("routing_rule.updated")
    assert (entry.before, entry.after) == ({"is_active": True}, {"is_active": False})


def _dry_run_rules():
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


def test_the_dry_run_answers_what_the_page_shows_and_writes_nothing(world, api):
    billing = _dry_run_rules()
    client = api("admin")
    before = (
        Conversation.objects.count(),
        ConversationEvent.objects.count(),
        AuditEntry.objects.count(),
    )
    response = client.post(
        "/api/v1/routing-rules/dry-run/",
        {
            "text": "I want a REFUND now",
            "event": "message_received",
            "sentiment": -0.5,
            "language": "en",
            "at": "2026-03-02T10:00:00Z",
        },
        format="json",
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    states = [(r["name"], r["state"], r["stopped_by"]) for r in body["rules"]]
    assert states == [
        ("Tag refunds", "matched", ""),
        ("Invoices", "no_match", ""),
        ("New only", "other_event", ""),
        ("Billing is urgent", "matched", ""),
        ("Never reached", "skipped", "Billing is urgent"),
    ]
    assert body["rules"][0]["summary"] == {
        "events": ["Message received"],
        "conditions": ['Text contains "refund"'],
        "actions": ["Add tags billing", "Set priority to High"],
        "joiner": "and",
    }
    assert body["outcome"] == {
        "matched": 2,
        "priority": 4,
        "priority_label": "Urgent",
        "tags": [billing.pk],
        "tag_names": ["billing"],
    }
    assert body["facts"] == {
        "event": "message_received",
        "channel": None,
        "platform": "",
        "kind": "mention",
        "text": "I want a REFUND now",
        "sentiment": -0.5,
        "language": "en",
        "is_vip": False,
        "followers": None,
        "has_open_escalation": False,
        "tags": [],
        "priority": 2,
        "at": "2026-03-02T10:00:00Z",
    }
    after = (
        Conversation.objects.count(),
        ConversationEvent.objects.count(),
        AuditEntry.objects.count(),
    )
    assert after == before


def test_the_dry_run_takes_the_facts_of_a_stored_message(world, api):
    RoutingRuleFactory(
        name="Orders on channel A",
        conditions=[
            {"field": "text", "op": "contains_any", "value": ["order"]},
            {"field": "channel", "op": "is", "value": [world.channel_a.pk]},
        ],
    )
    message = world.conversation_a.messages.get()
    client = api("admin")
    response = client.post(
        "/api/v1/routing-rules/dry-run/",
        {"message": message.pk, "event": "message_received"},
        format="json",
    )
    assert [r["state"] for r in response.json()["rules"]] == ["matched"]
    facts = response.json()["facts"]
    assert (facts["channel"], facts["text"]) == (world.channel_a.pk, message.body)


@pytest.mark.parametrize(
    ("payload", "problems"),
    [
        (
            {"message": 999999, "event": "message_received"},
            {"message": ["There is no customer message #999999 you can see."]},
        ),
        (
            {"event": "message_received"},
            {"text": ["Paste a message text, or give the id of a stored message."]},
        ),
        (
            {"text": "Hi", "event": "message_received", "tags": [999999]},
            {"tags": ["Select a valid choice. 999999 is not one of the available choices."]},
        ),
        ({"text": "Hi", "event": "nothing"}, {"event": ['"nothing" is not a valid choice.']}),
    ],
)
def test_the_dry_run_checks_its_input_as_the_page_does(world, api, payload, problems):
    response = api("admin").post("/api/v1/routing-rules/dry-run/", payload, format="json")
    assert _problems(response) == problems


@pytest.mark.parametrize(("persona", "expected"), [("manager", 403), ("anonymous", 401)])
def test_only_admins_run_the_dry_run(world, api, persona, expected):
    response = api(persona).post(
        "/api/v1/routing-rules/dry-run/",
        {"text": "Hi", "event": "message_received"},
        format="json",
    )
    assert response.status_code == expected


# --- KPI targets ---------------------------------------------------------------------------


def test_a_manager_sets_a_target_on_their_channel_audited(world, api):
    client = api("manager")
    made = client.post(
        "/api/v1/kpi-targets/",
        {
            "metric": "first_response_sla",
            "value": 95,
            "period": "week",
            "channel": world.channel_a.pk,
            "at_risk_margin": 5,
            "valid_from": "2026-01-05",
            "note": "Agreed with sales",
        },
        format="json",
    )
    assert made.status_code == 201, made.json()
    target = KpiTarget.objects.get()
    body = made.json()
    del body["created_at"]
    assert body == {
        "id": target.pk,
        "metric": "first_response_sla",
        "value": 95.0,
        "period": "week",
        "channel": world.channel_a.pk,
        "platform": "",
        "team": None,
        "at_risk_margin": 5.0,
        "valid_from": "2026-01-05",
        "note": "Agreed with sales",
        "created_by": world.manager.pk,
    }
    [created] = _audit("kpi_target.created")
    assert (created.actor, created.after["value"]) == (world.manager, 95.0)
    changed = client.patch(f"/api/v1/kpi-targets/{target.pk}/", {"value": 90}, format="json")
    assert changed.status_code == 200, changed.json()
    target.refresh_from_db()
    assert (target.value, target.period, target.created_by) == (90.0, "week", world.manager)
    [updated] = _audit("kpi_target.updated")
    assert (updated.before, updated.after) == ({"value": 95.0}, {"value": 90.0})
    assert client.delete(f"/api/v1/kpi-targets/{target.pk}/").status_code == 204
    assert not KpiTarget.objects.exists()
    assert [e.object_id for e in _audit("kpi_target.deleted")] == [str(target.pk)]


def test_a_new_target_takes_the_pages_defaults(world, api):
    made = api("admin").post(
        "/api/v1/kpi-targets/", {"metric": "inbound", "value": 500}, format="json"
    )
    assert made.status_code == 201, made.json()
    target = KpiTarget.objects.get()
    assert (target.period, target.at_risk_margin, target.channel) == ("month", 10.0, None)
    assert target.created_by == world.admin


@pytest.mark.parametrize(
    ("payload", "problems"),
    [
        (
            {"metric": "escalation_rate", "value": 120},
            {"value": ["This target is a percentage: at most 100."]},
        ),
        ({"metric": "inbound", "value": -1}, {"value": ["A target cannot be negative."]}),
        (
            {"metric": "inbound", "value": 10, "at_risk_margin": 150},
            {"at_risk_margin": ["The margin is a percentage between 0 and 100."]},
        ),
        ({"value": 10}, {"metric": ["This field is required."]}),
    ],
)
def test_targets_are_checked_as_on_the_page(world, api, payload, problems):
    response = api("manager").post("/api/v1/kpi-targets/", payload, format="json")
    assert _problems(response) == problems
    assert not KpiTarget.objects.exists()


def test_a_manager_neither_sees_nor_sets_targets_of_another_teams_channel(world, api):
    theirs = KpiTarget.objects.create(metric=Metric.INBOUND, value=10, channel=world.channel_b)
    everyone = KpiTarget.objects.create(metric=Metric.BACKLOG, value=20)
    client = api("manager")
    listed = client.get("/api/v1/kpi-targets/").json()["results"]
    assert [row["id"] for row in listed] == [everyone.pk]
    assert client.get(f"/api/v1/kpi-targets/{theirs.pk}/").status_code == 404
    assert client.delete(f"/api/v1/kpi-targets/{theirs.pk}/").status_code == 404
    moved = client.patch(
        f"/api/v1/kpi-targets/{everyone.pk}/", {"channel": world.channel_b.pk}, format="json"
    )
    assert _problems(moved) == {
        "channel": ["Select a valid choice. That choice is not one of the available choices."]
    }
    assert KpiTarget.objects.filter(channel=world.channel_b).count() == 1
    assert {row["id"] for row in api("admin").get("/api/v1/kpi-targets/").json()["results"]} == {
        theirs.pk,
        everyone.pk,
    }


def test_agents_cannot_set_targets(world, api):
    response = api("agent_a").post(
        "/api/v1/kpi-targets/", {"metric": "inbound", "value": 5}, format="json"
    )
    assert response.status_code == 403
    assert response.json()["detail"] == "Only managers and admins may use this resource."
    assert not KpiTarget.objects.exists()


def test_targets_list_without_a_query_per_row(world, api, django_assert_max_num_queries):
    for n in range(5):
        KpiTarget.objects.create(
            metric=Metric.INBOUND, value=n, channel=ChannelFactory(default_team=world.team_a)
        )
    client = api("admin")
    with django_assert_max_num_queries(5):
        response = client.get("/api/v1/kpi-targets/")
    assert len(response.json()["results"]) == 5
