"""Who may open what. Walks every route so a new page that forgets login or scoping fails."""

import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

# Routes anyone may open, and the admin, which has its own login and staff check.
PUBLIC = {"login", "healthz", "api-schema", "api-docs"}
# Open to the platforms (or to a department outside the product, by the signed link in its
# email) but guarded by signatures: see test_webhooks_refuse_unsigned_requests.
SIGNED = {"webhooks:x", "webhooks:facebook", "escalations:answer_link", "api:inbound"}
SKIP_NAMESPACES = {"admin"}


def _routes(resolver=None, prefix="", namespace=""):
    resolver = resolver or get_resolver()
    for pattern in resolver.url_patterns:
        if isinstance(pattern, URLResolver):
            ns = pattern.namespace or namespace
            if ns in SKIP_NAMESPACES:
                continue
            yield from _routes(pattern, prefix + str(pattern.pattern), ns)
        elif isinstance(pattern, URLPattern):
            name = f"{namespace}:{pattern.name}" if namespace else (pattern.name or "")
            yield name, prefix + str(pattern.pattern)


def _url(route: str, pk: int) -> str:
    path = re.sub(r"<int:\w+>", str(pk), route).replace("<str:action>", "retry")
    path = re.sub(r"\(\?P<\w+>[^)]+\)", str(pk), path).replace("$", "").replace("^", "")
    return "/" + path.lstrip("^").rstrip("$")


def test_the_route_walk_finds_every_page():
    names = {name for name, _ in _routes()}
    assert {
        "conversations:inbox",
        "conversations:detail",
        "contacts:list",
        "kpis:overview",
    } <= names


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "route"), [r for r in _routes() if r[0] not in PUBLIC | SIGNED])
@pytest.mark.parametrize("method", ["get", "post"])
def test_every_page_requires_login(client, world, name, route, method):
    url = _url(route, world.conversation_a.pk)
    response = getattr(client, method)(url)
    if name.startswith("api:"):
        # The API answers with its error body, not a redirect (tests/api/test_access.py has
        # every persona).
        assert response.status_code in (401, 405), f"{name} answered {response.status_code}"
        return
    assert response.status_code == 302, f"{name} answered {response.status_code}"
    assert response["Location"].startswith("/accounts/login/")


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "route"), [r for r in _routes() if r[0] in SIGNED])
@pytest.mark.parametrize("method", ["get", "post"])
def test_webhooks_refuse_unsigned_requests(client, world, name, route, method):
    for channel in (world.channel_a, world.channel_b):
        response = getattr(client, method)(_url(route, channel.pk))
        # The inbound API answers 401 without the channel's key, 405 to anything but a POST.
        assert response.status_code in (401, 403, 404, 405), (
            f"{name} answered {response.status_code}"
        )


# persona -> may open conversation A (on channel A, team A)
CONVERSATION_A = {"admin": 200, "manager": 200, "agent_a": 200, "agent_b": 404}
REPORTS = {"admin": 200, "manager": 200, "agent_a": 403, "agent_b": 403}
GOVERNANCE = {"admin": 200, "manager": 403, "agent_a": 403, "agent_b": 403}
REPORT_PAGES = [
    "/reports/",
    "/reports/channels/",
    "/reports/teams/",
    "/reports/agents/",
    "/reports/targets/",
    "/reports/targets/new/",
    "/reports/export/summary.csv",
    "/reports/export/agents.csv",
    "/reports/export/conversations.csv",
]
ADMIN_PAGES = [
    "/governance/",
    "/governance/audit/",
    "/governance/audit/export.csv",
    "/governance/retention/",
    "/governance/policies/",
    "/governance/policies/new/",
    "/governance/policies/default/",
    "/channels/",
    "/channels/new/",
    "/channels/dead-letters/",
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


@pytest.mark.django_db
@pytest.mark.parametrize("persona", CONVERSATION_A)
def test_conversation_pages_are_scoped_to_the_teams_channels(login, world, persona):
    client = login(world.persona(persona))
    pk = world.conversation_a.pk
    expected = CONVERSATION_A[persona]
    assert client.get(f"/inbox/{pk}/").status_code == expected
    for action in ("claim", "note", "status", "reply"):
        response = client.post(f"/inbox/{pk}/{action}/", {"body": "hi", "status": "open"})
        assert response.status_code == (302 if expected == 200 else 404), action
    contact = world.conversation_a.contact_id
    assert client.get(f"/contacts/{contact}/").status_code == expected


@pytest.mark.django_db
@pytest.mark.parametrize("persona", CONVERSATION_A)
def test_the_inbox_lists_only_conversations_the_user_may_see(login, world, persona):
    client = login(world.persona(persona))
    content = client.get("/inbox/").content.decode()
    assert (
        world.conversation_a.subject in content or f"/inbox/{world.conversation_a.pk}/" in content
    ) == (CONVERSATION_A[persona] == 200)
    sees_b = persona in ("admin", "agent_b")
    assert (f"/inbox/{world.conversation_b.pk}/" in content) == sees_b


@pytest.mark.django_db
@pytest.mark.parametrize("persona", CONVERSATION_A)
def test_contacts_list_only_the_teams_customers(login, world, persona):
    client = login(world.persona(persona))
    content = client.get("/contacts/").content.decode()
    assert (f"/contacts/{world.conversation_a.contact_id}/" in content) == (
        CONVERSATION_A[persona] == 200
    )


@pytest.mark.django_db
@pytest.mark.parametrize("persona", REPORTS)
def test_reports_are_for_managers_and_admins(login, world, persona):
    client = login(world.persona(persona))
    for url in REPORT_PAGES:
        assert client.get(url).status_code == REPORTS[persona], url


@pytest.mark.django_db
@pytest.mark.parametrize("persona", GOVERNANCE)
def test_governance_and_channels_are_for_admins(login, world, persona):
    client = login(world.persona(persona))
    for url in [*ADMIN_PAGES, f"/channels/{world.channel_a.pk}/"]:
        assert client.get(url).status_code == GOVERNANCE[persona], url


@pytest.mark.django_db
@pytest.mark.parametrize("persona", GOVERNANCE)
def test_retention_actions_are_for_admins(login, world, persona):
    client = login(world.persona(persona))
    expected = 302 if GOVERNANCE[persona] == 200 else 403
    assert client.post("/governance/retention/run/").status_code == expected
    assert (
        client.post(f"/governance/retention/channels/{world.channel_a.pk}/default/").status_code
        == expected
    )
    assert client.post("/governance/retention/", {"scope": "default"}).status_code == (
        400 if expected == 302 else 403
    )


@pytest.mark.django_db
@pytest.mark.parametrize("persona", GOVERNANCE)
def test_publishing_policies_are_for_admins(login, world, persona):
    from governance.models import PublishingPolicy

    policy = PublishingPolicy.objects.create(channel=world.channel_a)
    client = login(world.persona(persona))
    allowed = GOVERNANCE[persona] == 200
    for url in (f"/governance/policies/{policy.pk}/", f"/governance/policies/{policy.pk}/delete/"):
        assert client.get(url).status_code == GOVERNANCE[persona], url
    test = {"channel": world.channel_a.pk, "sender": "automatic", "text": "Hi"}
    assert client.post("/governance/policies/test/", test).status_code == GOVERNANCE[persona]
    response = client.post(f"/governance/policies/{policy.pk}/delete/")
    assert response.status_code == (302 if allowed else 403)
    assert PublishingPolicy.objects.exists() is not allowed


# persona -> may decide on a reply held on channel A (team A's manager, admins)
APPROVALS = {"admin": 200, "manager": 200, "agent_a": 403, "agent_b": 403}


@pytest.mark.django_db
@pytest.mark.parametrize("persona", APPROVALS)
def test_approvals_are_for_managers_and_admins(login, world, persona):
    from governance.approvals import reply_submit
    from governance.models import ApprovalStatus, PolicyAction, PublishingPolicy

    PublishingPolicy.objects.create(banned_terms=["refund"], banned_action=PolicyAction.APPROVE)
    held = [
        reply_submit(conversation=world.conversation_a, author=world.agent_a, body=text).approval
        for text in ("A refund", "Another refund")
    ]
    client = login(world.persona(persona))
    expected = APPROVALS[persona]
    for url in ("/governance/approvals/", "/governance/approvals/decided/"):
        assert client.get(url).status_code == expected, url
    decided = 302 if expected == 200 else 403
    approve = client.post(f"/governance/approvals/{held[0].pk}/approve/")
    reject = client.post(f"/governance/approvals/{held[1].pk}/reject/", {"note": "No"})
    assert (approve.status_code, reject.status_code) == (decided, decided)
    statuses = [a.status for a in type(held[0]).objects.order_by("pk")]
    if expected == 200:
        assert statuses == [ApprovalStatus.APPROVED, ApprovalStatus.REJECTED]
    else:
        assert statuses == [ApprovalStatus.PENDING, ApprovalStatus.PENDING]


@pytest.mark.django_db
@pytest.mark.parametrize("persona", CONVERSATION_A)
def test_the_reply_check_is_scoped_to_the_conversation(login, world, persona):
    response = login(world.persona(persona)).post(
        f"/governance/check/{world.conversation_a.pk}/", {"body": "Hello"}
    )
    assert response.status_code == CONVERSATION_A[persona]


# persona -> may export and erase the contact of conversation A
DATA_RIGHTS = {"admin": 200, "manager": 200, "agent_a": 403, "agent_b": 403}


@pytest.mark.django_db
@pytest.mark.parametrize("persona", DATA_RIGHTS)
def test_contact_export_and_erasure_are_for_managers_and_admins(login, world, persona):
    client = login(world.persona(persona))
    contact = world.conversation_a.contact
    expected = DATA_RIGHTS[persona]
    for url in (f"/contacts/{contact.pk}/export-data/", f"/contacts/{contact.pk}/erase/"):
        assert client.get(url).status_code == expected, url
        assert client.post(url).status_code == expected, url
    # Without the token of the first confirmation nothing is erased, whoever asks.
    response = client.post(f"/contacts/{contact.pk}/erase/confirm/")
    assert response.status_code == (302 if expected == 200 else 403)
    contact.refresh_from_db()
    assert not contact.name.startswith("Erased")
    # A manager sees only their teams' customers: team B's contact is not there for them.
    other = world.conversation_b.contact_id
    assert login(world.manager).get(f"/contacts/{other}/erase/").status_code == 404


@pytest.mark.django_db
def test_the_navigation_shows_only_what_the_role_may_open(login, world):
    agent_page = login(world.agent_a).get("/inbox/").content.decode()
    assert 'href="/reports/"' not in agent_page and 'href="/governance/"' not in agent_page
    admin_page = login(world.admin).get("/inbox/").content.decode()
    assert 'href="/reports/"' in admin_page and 'href="/governance/"' in admin_page


@pytest.mark.django_db
def test_login_page_logs_a_user_in(client, world):
    response = client.post("/accounts/login/", {"username": "bob", "password": "pw-for-tests"})
    assert response.status_code == 302
    assert response["Location"] == "/inbox/"


@pytest.mark.django_db
def test_logout_needs_a_post(login, world):
    client = login(world.agent_a)
    assert client.get("/accounts/logout/").status_code == 405
    assert client.post("/accounts/logout/").status_code == 302
    assert client.get("/inbox/").status_code == 302


# persona -> may set the sign-in rules (everyone has a Security page of their own)
SECURITY_RULES = {"admin": 302, "manager": 403, "agent_a": 403, "agent_b": 403}


@pytest.mark.django_db
@pytest.mark.parametrize("persona", SECURITY_RULES)
def test_everyone_has_a_security_page_and_only_admins_set_the_rules(login, world, persona):
    client = login(world.persona(persona))
    assert client.get("/accounts/security/").status_code == 200
    for url in (
        "/accounts/security/two-factor/enable/",
        "/accounts/security/two-factor/disable/",
        "/accounts/security/recovery-codes/",
    ):
        assert client.get(url).status_code == 405, url
        assert client.post(url, {"code": "000000"}).status_code == 302, url
    assert client.post("/accounts/security/policy/", {}).status_code == SECURITY_RULES[persona]
    # Without two-factor on, the second login step just sends the user on.
    assert client.get("/accounts/login/verify/").status_code == 302
