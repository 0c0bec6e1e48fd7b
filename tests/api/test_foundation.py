"""Tokens, authentication, errors, throttling, pagination and the schema."""

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from governance.api_tokens import api_key_hash, api_token_create
from governance.models import ApiToken, AuditEntry

pytestmark = pytest.mark.django_db


def test_a_token_is_stored_only_as_a_hash_and_acts_as_its_user(world):
    token, key = api_token_create(user=world.agent_a, name="CRM sync")
    assert key.startswith("scrm_") and len(key) > 40
    stored = ApiToken.objects.get(pk=token.pk)
    assert stored.key_hash == api_key_hash(key) and key not in (stored.key_hash, stored.prefix)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    response = client.get("/api/v1/me/")
    assert response.status_code == 200
    assert response.json()["username"] == "bob"
    assert response.json()["role"] == "agent"
    stored.refresh_from_db()
    assert stored.last_used_at is not None


def test_without_credentials_the_api_answers_401_with_the_error_body(world):
    response = APIClient().get("/api/v1/conversations/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert response.json()["code"] == "not_authenticated"
    assert response.json()["detail"]


def test_a_wrong_or_revoked_token_is_refused(world, api):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer scrm_not-a-real-key")
    assert client.get("/api/v1/me/").status_code == 401
    token, key = api_token_create(user=world.agent_a, name="old")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert client.get("/api/v1/me/").status_code == 200
    assert api("agent_a").delete(f"/api/v1/tokens/{token.pk}/").status_code == 204
    assert client.get("/api/v1/me/").status_code == 401
    assert AuditEntry.objects.filter(action="api_token.revoked").count() == 1


def test_a_token_of_a_switched_off_user_is_refused(world):
    _, key = api_token_create(user=world.agent_a, name="script")
    world.agent_a.is_active = False
    world.agent_a.save()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert client.get("/api/v1/me/").status_code == 401


def test_tokens_made_over_the_api_show_their_key_once(world, api):
    client = api("agent_a")
    response = client.post("/api/v1/tokens/", {"name": "BI export"}, format="json")
    assert response.status_code == 201
    key = response.json()["key"]
    assert key.startswith("scrm_")
    listed = client.get("/api/v1/tokens/").json()["results"]
    assert all("key" not in row and "key_hash" not in row for row in listed)
    assert {row["name"] for row in listed} == {"agent_a script", "BI export"}


def test_users_revoke_their_own_tokens_and_admins_revoke_any(world, api):
    token, _ = api_token_create(user=world.agent_a, name="mine")
    # Another agent does not even see it.
    assert api("agent_b").delete(f"/api/v1/tokens/{token.pk}/").status_code == 404
    assert api("manager").delete(f"/api/v1/tokens/{token.pk}/").status_code == 404
    assert ApiToken.objects.get(pk=token.pk).revoked_at is None
    assert api("admin").delete(f"/api/v1/tokens/{token.pk}/").status_code == 204
    token.refresh_from_db()
    assert token.revoked_at is not None and token.revoked_by == world.admin


def test_the_profile_page_makes_and_revokes_tokens(world, login):
    client = login(world.agent_a)
    page = client.get("/accounts/api-tokens/")
    assert page.status_code == 200
    made = client.post("/accounts/api-tokens/", {"name": "Zapier"})
    assert made.status_code == 200
    token = ApiToken.objects.get(user=world.agent_a, name="Zapier")
    key = made.context["new_key"]
    assert key in made.content.decode() and token.key_hash == api_key_hash(key)
    # Shown once: the list afterwards has only the prefix.
    assert key not in client.get("/accounts/api-tokens/").content.decode()
    revoked = client.post(f"/accounts/api-tokens/{token.pk}/revoke/")
    assert revoked.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_admins_see_and_revoke_everyones_tokens_on_the_page(world, login):
    token, _ = api_token_create(user=world.agent_a, name="agent's")
    assert "agent&#x27;s" in login(world.admin).get("/accounts/api-tokens/").content.decode()
    assert login(world.agent_b).post(f"/accounts/api-tokens/{token.pk}/revoke/").status_code == 404
    assert login(world.admin).post(f"/accounts/api-tokens/{token.pk}/revoke/").status_code == 302
    token.refresh_from_db()
    assert token.revoked_by == world.admin


def test_the_session_works_for_the_browser_and_needs_csrf_to_write(world, session_api):
    client = session_api("agent_a")
    assert client.get("/api/v1/me/").status_code == 200
    response = client.post("/api/v1/tokens/", {"name": "x"}, format="json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


def test_field_errors_come_in_the_uniform_body(world, api):
    response = api("agent_a").post("/api/v1/tokens/", {}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid"
    assert body["fields"]["name"]
    assert body["detail"] == body["fields"]["name"][0]


def test_requests_are_limited_per_token(world, settings):
    from django.core.cache import cache

    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"api": "3/minute"},
    }
    from rest_framework.settings import api_settings
    from rest_framework.throttling import SimpleRateThrottle

    api_settings.reload()
    SimpleRateThrottle.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES
    cache.clear()
    try:
        first, second = (api_token_create(user=world.agent_a, name=n)[1] for n in "ab")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {first}")
        codes = [client.get("/api/v1/me/").status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        limited = client.get("/api/v1/me/")
        assert limited.json()["code"] == "throttled" and limited.json()["retry_after"] > 0
        # The same user's other token has its own allowance.
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {second}")
        assert client.get("/api/v1/me/").status_code == 200
    finally:
        settings.REST_FRAMEWORK = {
            **settings.REST_FRAMEWORK,
            "DEFAULT_THROTTLE_RATES": {"api": "600/minute"},
        }
        api_settings.reload()
        SimpleRateThrottle.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES


def test_lists_are_cursor_paginated(world, api):
    client = api("admin")
    for n in range(5):
        client.post("/api/v1/tokens/", {"name": f"t{n}"}, format="json")
    page = client.get("/api/v1/tokens/?page_size=2").json()
    assert len(page["results"]) == 2 and page["next"] and page["previous"] is None
    seen = [row["id"] for row in page["results"]]
    while page["next"]:
        page = client.get(page["next"]).json()
        seen += [row["id"] for row in page["results"]]
    assert len(seen) == len(set(seen)) == 6


def test_the_schema_generates_without_warnings(tmp_path):
    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yml")
    )
    assert "/api/v1/conversations/" in (tmp_path / "schema.yml").read_text()


def test_the_schema_and_docs_are_served(client, db):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"openapi: 3" in schema.content
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
