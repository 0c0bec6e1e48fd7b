"""Who may use what in the API: every route with every persona, as the pages are tested in
tests/governance/test_access.py."""

import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from channels_ingest.models import DeadLetter
from contacts.models import MergeSuggestion
from contacts.services import contact_import_create, contact_merge, import_file_read
from conversations.escalations import escalation_open
from conversations.models import (
    CannedResponse,
    DeliveryStatus,
    Direction,
    EscalationTrigger,
    MessageKind,
    WebhookCall,
)
from governance.approvals import reply_submit
from governance.models import (
    AuditEntry,
    PolicyAction,
    PublishingPolicy,
    RetentionAction,
    RetentionPolicy,
    RetentionRun,
    TeamMembership,
)
from kpis.models import KpiTarget, Metric
from tests.factories import (
    BusinessCalendarFactory,
    ConversationFactory,
    DepartmentFactory,
    EscalationLevelFactory,
    IdentityFactory,
    MessageFactory,
    RoutingRuleFactory,
    SlaPolicyFactory,
    WebhookEndpointFactory,
)

pytestmark = pytest.mark.django_db

PERSONAS = ("admin", "manager", "agent_a", "agent_b", "anonymous")
ADMIN_ONLY = {
    "channel",
    "dead-letter",
    "team",
    "user",
    "audit-entry",
    "routing-rule",
    "sla-policy",
    "webhook-endpoint",
    "webhook-call",
    "business-hours",
    "department",
    "escalation-path",
    "capacity",
    "publishing-policy",
    "retention-policy",
    "retention-run",
}
# Routes of every signed-in user, scoped to what they may see (tested per resource).
SCOPED = {
    "contact",
    "merge",
    "identity",
    "merge-suggestion",
    "conversation",
    "message",
    "tag",
    "api-token",
    "me",
    "canned-response",
    "notification",
}
APPROVERS = {"approval"}
# The reports' figures and targets: managers and admins.
MANAGERS = {"kpi-summary", "kpi-series", "kpi-agents", "kpi-backlog", "kpi-targets", "kpi-target"}
# Copying customer data in or out in bulk: managers and admins.
BULK = {"contact-import"}
MATRIX = ADMIN_ONLY | SCOPED | APPROVERS | MANAGERS | BULK


def _api_routes(resolver=None, prefix=""):
    resolver = resolver or get_resolver()
    for pattern in resolver.url_patterns:
        if isinstance(pattern, URLResolver):
            if pattern.namespace not in (None, "api") and not prefix.startswith("api"):
                continue
            yield from _api_routes(pattern, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern) and prefix.startswith("api/v1/"):
            yield pattern.name, prefix + str(pattern.pattern), pattern.callback


def _resource(name: str) -> str:
    """The basename a route was registered with (routes are "<basename>-<list|detail|...>")."""
    known = sorted(MATRIX, key=len, reverse=True)
    return next((b for b in known if name == b or name.startswith(b + "-")), name)


def test_every_api_route_is_in_the_matrix():
    names = {_resource(name) for name, _, _ in _api_routes()}
    assert names - {"inbound"} <= MATRIX, names
    assert names >= ADMIN_ONLY | APPROVERS | MANAGERS | BULK


@pytest.mark.parametrize(
    "persona, expected",
    [("admin", 200), ("manager", 200), ("agent_a", 403), ("agent_b", 403), ("anonymous", 401)],
)
def test_kpis_are_for_managers_and_admins(world, api, persona, expected):
    client = api(persona)
    target = KpiTarget.objects.create(metric=Metric.INBOUND, value=100)
    for name, route, _ in _api_routes():
        if _resource(name) in MANAGERS:
            assert client.get(_url(route, target.pk)).status_code == expected, name


@pytest.mark.parametrize("persona", PERSONAS)
def test_kpi_targets_are_changed_by_managers_and_admins_only(world, api, persona):
    client = api(persona)
    expected = {"admin": None, "manager": None, "anonymous": 401}.get(persona, 403)
    for name, route, callback in _api_routes():
        if _resource(name) != "kpi-target":
            continue
        target = KpiTarget.objects.create(metric=Metric.INBOUND, value=100)
        for method in sorted(set(callback.actions) - {"get"}):
            response = getattr(client, method)(_url(route, target.pk), {}, format="json")
            if expected is None:
                assert response.status_code < 500, (name, method, response.status_code)
                assert response.status_code not in (401, 403), (name, method)
            else:
                assert response.status_code == expected, (name, method, response.status_code)


def _objects(world):
    """One object of each admin resource, so detail routes have something to answer for."""
    letter = DeadLetter.objects.create(channel=world.channel_a, source="poll", raw="{}", error="x")
    endpoint = WebhookEndpointFactory()
    call = WebhookCall.objects.create(endpoint=endpoint, key="k1", event="test")
    path = EscalationLevelFactory(user=world.manager).path
    return {
        "channel": world.channel_a.pk,
        "dead-letter": letter.pk,
        "team": world.team_a.pk,
        "user": world.agent_a.pk,
        "audit-entry": AuditEntry.objects.create(action="test").pk,
        "routing-rule": RoutingRuleFactory().pk,
        "sla-policy": SlaPolicyFactory().pk,
        "webhook-endpoint": endpoint.pk,
        "webhook-call": call.pk,
        "business-hours": BusinessCalendarFactory().pk,
        "department": DepartmentFactory(team=world.team_a).pk,
        "escalation-path": path.pk,
        "capacity": TeamMembership.objects.get(user=world.agent_a).pk,
        "publishing-policy": PublishingPolicy.objects.create(channel=world.channel_a).pk,
        "retention-policy": RetentionPolicy.objects.create(channel=world.channel_a).pk,
        "retention-run": RetentionRun.objects.create(
            channel=world.channel_a, action=RetentionAction.ANONYMISE, cutoff=timezone.now()
        ).pk,
    }


def _url(route: str, pk: int) -> str:
    path = re.sub(r"\(\?P<\w+>[^)]+\)", str(pk), route).replace("^", "").replace("$", "")
    return "/" + re.sub(r"<int:\w+>", str(pk), path)


@pytest.mark.parametrize("persona", PERSONAS)
def test_admin_resources_are_for_admins_only(world, api, persona):
    client = api(persona)
    objects = _objects(world)
    expected = {"admin": None, "anonymous": 401}.get(persona, 403)
    for name, route, callback in _api_routes():
        resource = _resource(name)
        if resource not in ADMIN_ONLY:
            continue
        url = _url(route, objects[resource])
        for method in sorted(
            m for m in list(getattr(callback, "actions", {"get": 1})) if m != "head"
        ):
            response = getattr(client, method)(url, {}, format="json")
            if expected is None:
                assert response.status_code < 500, (name, method, response.status_code)
                assert response.status_code not in (401, 403), (name, method)
            else:
                assert response.status_code == expected, (name, method, response.status_code)


@pytest.mark.parametrize("persona", PERSONAS)
def test_every_route_refuses_the_anonymous_and_answers_the_signed_in(world, api, persona):
    client = api(persona)
    pk = world.conversation_a.pk
    for name, route, callback in _api_routes():
        if _resource(name) in ("inbound",) or _resource(name) in ADMIN_ONLY:
            continue
        for method in [m for m in list(getattr(callback, "actions", {"get": 1})) if m != "head"]:
            response = getattr(client, method.lower())(_url(route, pk), {}, format="json")
            if persona == "anonymous":
                assert response.status_code == 401, (name, method)
            else:
                assert response.status_code < 500, (name, method, response.status_code)


# persona -> may decide on a reply held on channel A
APPROVALS = {"admin": 200, "manager": 200, "agent_a": 403, "agent_b": 403, "anonymous": 401}


@pytest.mark.parametrize("persona", APPROVALS)
def test_approvals_are_for_managers_and_admins(world, api, persona):
    PublishingPolicy.objects.create(banned_terms=["refund"], banned_action=PolicyAction.APPROVE)
    held = [
        reply_submit(conversation=world.conversation_a, author=world.agent_a, body=text).approval
        for text in ("A refund", "Another refund")
    ]
    client = api(persona)
    expected = APPROVALS[persona]
    listed = client.get("/api/v1/approvals/")
    assert listed.status_code == expected
    if expected == 200:
        assert {row["id"] for row in listed.json()["results"]} == {a.pk for a in held}
    approve = client.post(f"/api/v1/approvals/{held[0].pk}/approve/", {}, format="json")
    reject = client.post(f"/api/v1/approvals/{held[1].pk}/reject/", {"note": "No"}, format="json")
    assert (approve.status_code, reject.status_code) == (expected, expected)
    if expected == 200:
        assert approve.json()["status"] == "approved" and reject.json()["status"] == "rejected"
        again = client.post(f"/api/v1/approvals/{held[0].pk}/approve/", {}, format="json")
        assert again.status_code == 409
        decided = client.get("/api/v1/approvals/?state=decided").json()["results"]
        assert {row["id"] for row in decided} == {a.pk for a in held}


def test_the_author_of_a_held_reply_cannot_approve_it(world, api):
    PublishingPolicy.objects.create(banned_terms=["refund"], banned_action=PolicyAction.APPROVE)
    held = reply_submit(conversation=world.conversation_a, author=world.manager, body="refund")
    response = api("manager").post(f"/api/v1/approvals/{held.approval.pk}/approve/", {})
    assert response.status_code == 404


def _contact_objects(world):
    """A merge, a suggestion, an identity and an import about channel A's customers."""
    kept = world.conversation_a.contact
    other = IdentityFactory().contact
    ConversationFactory(channel=world.channel_a, contact=other)
    low, high = sorted((kept.pk, other.pk))
    suggestion = MergeSuggestion.objects.create(contact_id=low, other_id=high, reason="Same")
    moved = IdentityFactory().contact
    ConversationFactory(channel=world.channel_a, contact=moved)
    merge = contact_merge(merged=moved, kept=kept, actor=world.admin)
    job = contact_import_create(
        file=import_file_read(raw=b"name\nDana\n"), file_name="a.csv", actor=world.manager
    )
    return {
        "merge": merge.pk,
        "merge-suggestion": suggestion.pk,
        "identity": other.identities.get().pk,
        "contact-import": job.pk,
    }


# persona -> what a detail route about channel A's customers answers (None: < 500, no refusal)
CONTACT_DETAILS = {
    "admin": None,
    "manager": None,
    "agent_a": None,
    "agent_b": 404,
    "anonymous": 401,
}
# The import is the manager's own: admins see everyone's, agents none.
IMPORT_DETAILS = {"admin": None, "manager": None, "agent_a": 403, "agent_b": 403, "anonymous": 401}


@pytest.mark.parametrize("persona", PERSONAS)
def test_contact_resources_answer_with_their_own_objects(world, api, persona):
    client = api(persona)
    objects = _contact_objects(world)
    tried = []
    for name, route, callback in _api_routes():
        resource = _resource(name)
        if resource not in objects or "<pk>" not in route:
            continue
        expected = (IMPORT_DETAILS if resource in BULK else CONTACT_DETAILS)[persona]
        url = _url(route, objects[resource])
        for method in sorted(m for m in getattr(callback, "actions", {}) if m != "head"):
            response = getattr(client, method)(url, {}, format="json")
            tried.append((name, method))
            if expected is None:
                assert response.status_code < 500, (name, method, response.status_code)
                assert response.status_code not in (401, 403, 404), (name, method)
            else:
                assert response.status_code == expected, (name, method, response.status_code)
    assert len(tried) == 7, tried


# What each persona gets from the conversation workflows on conversation A (channel A, team A),
# escalated to a department of another team; in this order, on one fresh world per persona.
# admin, manager, agent_a, agent_b (who does not see channel A), anonymous.
WORKFLOWS = [
    ("get", "conversations/{a}/escalations/", {}, (200, 200, 200, 404, 401)),
    # Not on a path: there is no next level.
    ("post", "conversations/{a}/escalation/raise/", {}, (409, 409, 409, 404, 401)),
    # Managers answer for a department (here without an answer: 400); support does not.
    ("post", "conversations/{a}/escalation/answer/", {}, (400, 400, 403, 404, 401)),
    ("post", "conversations/{a}/escalation/withdraw/", {}, (200, 200, 200, 404, 401)),
    ("post", "conversations/{a}/claim/", {}, (200, 200, 200, 404, 401)),
    ("post", "conversations/{a}/presence/", {"typing": True}, (200, 200, 200, 404, 401)),
    ("get", "conversations/{a}/canned-responses/{canned}/", {}, (200, 200, 200, 404, 401)),
    ("post", "conversations/{a}/messages/{failed}/retry/", {}, (202, 202, 202, 404, 401)),
    ("post", "conversations/bulk/", {"ids": ["{a}"], "action": "unassign"}, (200,) * 4 + (401,)),
    ("get", "canned-responses/", {}, (200, 200, 200, 200, 401)),
    ("get", "canned-responses/{canned}/", {}, (200, 200, 200, 200, 401)),
    ("get", "notifications/", {}, (200, 200, 200, 200, 401)),
    ("post", "notifications/read-all/", {}, (200, 200, 200, 200, 401)),
]


@pytest.mark.parametrize("persona", PERSONAS)
def test_conversation_workflows_follow_the_pages_access(world, api, persona):
    escalation_open(
        conversation=world.conversation_a,
        trigger=EscalationTrigger.AGENT,
        actor=world.agent_a,
        reason="Billing",
        department=DepartmentFactory(),
    )
    failed = MessageFactory(
        conversation=world.conversation_a,
        direction=Direction.OUT,
        kind=MessageKind.REPLY,
        external_id=None,
        delivery_status=DeliveryStatus.FAILED,
    )
    ids = {
        "a": world.conversation_a.pk,
        "canned": CannedResponse.objects.create(title="Shared", body="Hi").pk,
        "failed": failed.pk,
    }
    client = api(persona)
    column = PERSONAS.index(persona)
    for method, route, body, expected in WORKFLOWS:
        url = "/api/v1/" + route.format(**ids)
        data = {k: [int(i.format(**ids)) for i in v] if k == "ids" else v for k, v in body.items()}
        response = getattr(client, method)(url, data, format="json")
        assert response.status_code == expected[column], (method, route, response.content)
    if persona == "agent_b":
        outcome = client.post(
            "/api/v1/conversations/bulk/", {"ids": [ids["a"]], "action": "unassign"}, format="json"
        ).json()
        assert outcome["results"][0]["code"] == "not_found"
