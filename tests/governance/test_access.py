"""Who may open what. Walks every route so a new page that forgets login or scoping fails."""

import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

# Routes anyone may open, and the admin, which has its own login and staff check.
PUBLIC = {"login", "healthz"}
# Open to the platforms (or to a department outside the product, by the signed link in its
# email) but guarded by signatures: see test_webhooks_refuse_unsigned_requests.
SIGNED = {"webhooks:x", "webhooks:facebook", "escalations:answer_link"}
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
    assert response.status_code == 302, f"{name} answered {response.status_code}"
    assert response["Location"].startswith("/accounts/login/")


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "route"), [r for r in _routes() if r[0] in SIGNED])
@pytest.mark.parametrize("method", ["get", "post"])
def test_webhooks_refuse_unsigned_requests(client, world, name, route, method):
    for channel in (world.channel_a, world.channel_b):
        response = getattr(client, method)(_url(route, channel.pk))
        assert response.status_code in (403, 404), f"{name} answered {response.status_code}"


# persona -> may open conversation A (on channel A, team A)
CONVERSATION_A = {"admin": 200, "manager": 200, "agent_a": 200, "agent_b": 404}
REPORTS = {"admin": 200, "manager": 200, "agent_a": 403, "agent_b": 403}
GOVERNANCE = {"admin": 200, "manager": 403, "agent_a": 403, "agent_b": 403}
ADMIN_PAGES = [
    "/governance/",
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
    assert login(world.persona(persona)).get("/reports/").status_code == REPORTS[persona]


@pytest.mark.django_db
@pytest.mark.parametrize("persona", GOVERNANCE)
def test_governance_and_channels_are_for_admins(login, world, persona):
    client = login(world.persona(persona))
    for url in [*ADMIN_PAGES, f"/channels/{world.channel_a.pk}/"]:
        assert client.get(url).status_code == GOVERNANCE[persona], url


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
