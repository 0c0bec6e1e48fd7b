"""The Content-Security-Policy header: on every page, strict for scripts, and what htmx needs
to live with it."""

import pytest

pytestmark = pytest.mark.django_db


def _policy(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    directives = {}
    for part in header.split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


def test_pages_carry_a_strict_policy(login, world):
    client = login(world.admin)
    for url in ("/inbox/", f"/inbox/{world.conversation_a.pk}/", "/contacts/", "/routing/"):
        policy = _policy(client.get(url))
        assert policy["default-src"] == ["'self'"], url
        assert policy["script-src"] == ["'self'"], url
        assert policy["style-src"] == ["'self'"], url
        assert policy["style-src-attr"] == ["'unsafe-inline'"], url
        assert policy["img-src"] == ["'self'", "data:"], url
        assert policy["object-src"] == ["'none'"], url
        assert policy["base-uri"] == ["'self'"], url
        assert policy["form-action"] == ["'self'"], url
        assert policy["frame-ancestors"] == ["'none'"], url


def test_pages_before_login_carry_it_too(client):
    assert "script-src 'self'" in client.get("/accounts/login/")["Content-Security-Policy"]
    redirect = client.get("/inbox/")
    assert redirect.status_code == 302
    assert "Content-Security-Policy" in redirect


def test_the_lockout_page_carries_it(client, world):
    for _ in range(5):
        response = client.post("/accounts/login/", {"username": "bob", "password": "wrong"})
    assert response.status_code == 429
    assert "default-src 'self'" in response["Content-Security-Policy"]


def test_no_script_source_is_loosened():
    from django.conf import settings

    directives = settings.CONTENT_SECURITY_POLICY["DIRECTIVES"]
    for name in ("default-src", "script-src"):
        assert not {"'unsafe-inline'", "'unsafe-eval'", "*", "data:"} & set(directives[name])


def test_htmx_is_loaded_from_static_files_and_told_to_keep_to_the_policy(login, world):
    html = login(world.agent_a).get("/inbox/").content.decode()
    assert '<script src="/static/django_htmx/htmx-2.min.js" defer></script>' in html
    assert '"includeIndicatorStyles": false' in html
    assert '"allowEval": false' in html


def test_other_security_headers(login, world):
    response = login(world.agent_a).get("/inbox/")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"
    assert "geolocation=()" in response["Permissions-Policy"]
