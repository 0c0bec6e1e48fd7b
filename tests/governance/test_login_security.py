"""Login security: brute-force lockout with a cool-off, TOTP two-factor with recovery codes,
the rule that admins must use it, and how long a sign-in lasts."""

import time
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.sessions.backends.cached_db import SessionStore
from django.contrib.sessions.models import Session
from django.core.cache import cache
from django.utils import timezone
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from governance import security
from governance.models import AuditEntry, Role, SecuritySettings
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

PASSWORD = "pw-for-tests"


@pytest.fixture
def agent():
    return UserFactory(username="bob", role=Role.AGENT)


@pytest.fixture
def admin():
    return UserFactory(username="alice", role=Role.ADMIN)


@pytest.fixture(autouse=True)
def _no_otp_throttle(settings):
    # django-otp slows repeated wrong codes down by seconds; these tests try several in a row.
    settings.OTP_TOTP_THROTTLE_FACTOR = 0
    settings.OTP_STATIC_THROTTLE_FACTOR = 0


def _log_in(client, username, password=PASSWORD, **extra):
    return client.post("/accounts/login/", {"username": username, "password": password}, **extra)


def _two_factor(user, codes=("recover1", "recover2")):
    device = TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=True)
    static = StaticDevice.objects.create(user=user, name="Recovery codes", confirmed=True)
    for code in codes:
        StaticToken.objects.create(device=static, token=code)
    return device


def _next_code(device):
    """A code the device accepts that is newer than any it accepted before."""
    device.refresh_from_db()
    step = max(int(time.time()) // device.step, device.last_t + 1)
    return security.totp_code(device, at=step * device.step + 1)


# --- Brute force --------------------------------------------------------------------------


def test_five_wrong_passwords_lock_the_username_out_from_that_address(client, agent, settings):
    assert settings.AXES_FAILURE_LIMIT == 5
    for _ in range(4):
        response = _log_in(client, "bob", "wrong")
        assert response.status_code == 200
    response = _log_in(client, "bob", "wrong")
    assert response.status_code == 429
    content = response.content.decode()
    assert "Too many failed attempts" in content
    assert "Try again in 15 minutes" in content

    # The right password does not get in while locked, and the wait starts again.
    response = _log_in(client, "bob")
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session


def test_the_lockout_is_for_that_username_and_address_only(client, agent):
    UserFactory(username="carol")
    for _ in range(5):
        _log_in(client, "bob", "wrong")
    assert _log_in(client, "bob").status_code == 429
    assert _log_in(client, "bob", REMOTE_ADDR="203.0.113.9").status_code == 302
    client.logout()
    assert _log_in(client, "carol").status_code == 302


def test_the_lockout_ends_after_the_cool_off(client, agent, settings):
    assert timedelta(minutes=15) == settings.AXES_COOLOFF_TIME
    for _ in range(5):
        _log_in(client, "bob", "wrong")
    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=14))
    assert _log_in(client, "bob").status_code == 429

    AccessAttempt.objects.update(attempt_time=timezone.now() - timedelta(minutes=16))
    response = _log_in(client, "bob")
    assert response.status_code == 302
    assert response["Location"] == "/inbox/"


def test_a_successful_login_clears_earlier_failures(client, agent):
    for _ in range(4):
        _log_in(client, "bob", "wrong")
    assert _log_in(client, "bob").status_code == 302
    client.post("/accounts/logout/")
    for _ in range(4):
        assert _log_in(client, "bob", "wrong").status_code == 200
    assert _log_in(client, "bob").status_code == 302


def test_the_login_page_still_logs_in_with_the_lockout_backend(client, agent):
    response = _log_in(client, "bob")
    assert response.status_code == 302
    assert client.get("/inbox/").status_code == 200


# --- Setting two-factor up ----------------------------------------------------------------


def test_the_security_page_shows_a_qr_code_and_the_secret(login, agent):
    client = login(agent)
    content = client.get("/accounts/security/").content.decode()
    device = TOTPDevice.objects.get(user=agent, confirmed=False)
    assert '<img src="data:image/svg+xml;base64,' in content
    assert security.totp_secret(device) in content
    # Reloading keeps the same secret (the user may have scanned it already).
    client.get("/accounts/security/")
    assert TOTPDevice.objects.filter(user=agent).count() == 1


def test_the_qr_code_encodes_the_authenticator_link(agent):
    device = security.totp_setup_device(user=agent)
    assert device.config_url.startswith("otpauth://totp/Social%20CRM%3Abob?secret=")
    uri = security.qr_data_uri(device.config_url)
    assert uri.startswith("data:image/svg+xml;base64,")


def test_two_factor_is_turned_on_with_a_code_and_shows_recovery_codes_once(login, agent):
    client = login(agent)
    client.get("/accounts/security/")
    device = TOTPDevice.objects.get(user=agent)

    response = client.post("/accounts/security/two-factor/enable/", {"code": "000000"}, follow=True)
    assert "did not match" in response.content.decode()
    device.refresh_from_db()
    assert not device.confirmed

    response = client.post(
        "/accounts/security/two-factor/enable/", {"code": _next_code(device)}, follow=True
    )
    content = response.content.decode()
    assert "Two-factor is on" in content
    device.refresh_from_db()
    assert device.confirmed
    codes = list(StaticToken.objects.filter(device__user=agent).values_list("token", flat=True))
    assert len(codes) == 10
    assert all(code in content for code in codes)
    assert "shown only this once" in content
    again = client.get("/accounts/security/").content.decode()
    assert not any(code in again for code in codes)
    assert "10 recovery codes left" in again
    assert AuditEntry.objects.filter(action="two_factor.enabled", actor=agent).exists()
    # This session proved the code, so the user keeps working.
    assert client.get("/inbox/").status_code == 200


def test_two_factor_is_turned_off_only_with_a_code(login, agent):
    device = _two_factor(agent)
    client = login(agent)
    client.post("/accounts/login/verify/", {"code": _next_code(device)})

    client.post("/accounts/security/two-factor/disable/", {"code": "123456"})
    assert TOTPDevice.objects.filter(user=agent).exists()

    client.post("/accounts/security/two-factor/disable/", {"code": _next_code(device)})
    assert not TOTPDevice.objects.filter(user=agent).exists()
    assert not StaticDevice.objects.filter(user=agent).exists()
    assert AuditEntry.objects.filter(action="two_factor.disabled", actor=agent).exists()


def test_new_recovery_codes_replace_the_old_ones(login, agent):
    device = _two_factor(agent)
    client = login(agent)
    client.post("/accounts/login/verify/", {"code": _next_code(device)})
    response = client.post(
        "/accounts/security/recovery-codes/", {"code": _next_code(device)}, follow=True
    )
    codes = set(StaticToken.objects.filter(device__user=agent).values_list("token", flat=True))
    assert len(codes) == 10
    assert "recover1" not in codes
    assert all(code in response.content.decode() for code in codes)


# --- The second step of a login -----------------------------------------------------------


def test_a_login_with_two_factor_stops_at_the_verify_step(client, agent):
    device = _two_factor(agent)
    response = _log_in(client, "bob")
    assert response.status_code == 302
    response = client.get("/inbox/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/verify/?next=%2Finbox%2F"
    assert "authenticator app" in client.get(response["Location"]).content.decode()

    response = client.post(
        "/accounts/login/verify/", {"code": _next_code(device), "next": "/inbox/"}
    )
    assert response.status_code == 302
    assert response["Location"] == "/inbox/"
    assert client.get("/inbox/").status_code == 200


@pytest.mark.parametrize(
    "url", ["/inbox/", "/contacts/", "/accounts/security/", "/accounts/password/", "/admin/"]
)
def test_nothing_opens_before_the_second_step(login, agent, url):
    _two_factor(agent)
    client = login(agent)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/verify/")


def test_htmx_requests_before_the_second_step_are_sent_to_it(login, agent):
    _two_factor(agent)
    client = login(agent)
    response = client.get("/inbox/updates/", headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert response["HX-Redirect"].startswith("/accounts/login/verify/")


def test_logging_out_works_before_the_second_step(login, agent):
    _two_factor(agent)
    client = login(agent)
    assert client.post("/accounts/logout/").status_code == 302
    assert "_auth_user_id" not in client.session


def test_a_recovery_code_lets_the_user_in_once(client, agent):
    _two_factor(agent, codes=("abcd2345",))
    _log_in(client, "bob")
    response = client.post("/accounts/login/verify/", {"code": "ABCD 2345"})
    assert response.status_code == 302
    assert client.get("/inbox/").status_code == 200

    client.post("/accounts/logout/")
    _log_in(client, "bob")
    response = client.post("/accounts/login/verify/", {"code": "abcd2345"})
    assert response.status_code == 400
    assert client.get("/inbox/").status_code == 302


def test_wrong_codes_count_as_failed_logins_and_lock_out(client, agent):
    device = _two_factor(agent)
    _log_in(client, "bob")
    for _ in range(4):
        response = client.post("/accounts/login/verify/", {"code": "000000"})
        assert response.status_code == 400
        assert "did not match" in response.content.decode()
    response = client.post("/accounts/login/verify/", {"code": "000000"})
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
    # Locked out: neither the password nor then a right code gets in.
    assert _log_in(client, "bob").status_code == 429
    assert client.post("/accounts/login/verify/", {"code": _next_code(device)}).status_code == 302
    assert client.get("/inbox/").status_code == 302


def test_a_wrong_code_is_audited_as_a_failed_login(client, agent):
    _two_factor(agent)
    _log_in(client, "bob")
    client.post("/accounts/login/verify/", {"code": "000000"})
    assert AccessAttempt.objects.get(username="bob").failures_since_start == 1
    assert AuditEntry.objects.filter(action="auth.login_failed", object_repr="bob").exists()


def test_the_verify_step_refuses_an_outside_next(client, agent):
    device = _two_factor(agent)
    _log_in(client, "bob")
    response = client.post(
        "/accounts/login/verify/", {"code": _next_code(device), "next": "https://evil.example/"}
    )
    assert response["Location"] == "/inbox/"


def test_users_without_two_factor_skip_the_verify_step(client, agent):
    _log_in(client, "bob")
    assert client.get("/accounts/login/verify/?next=/contacts/")["Location"] == "/contacts/"
    assert client.get("/inbox/").status_code == 200


# --- The rule for admins ------------------------------------------------------------------


def test_only_admins_set_the_rule(login, agent):
    response = login(agent).post(
        "/accounts/security/policy/", {"require_two_factor_for_admins": "on"}
    )
    assert response.status_code == 403
    assert not SecuritySettings.objects.exists()


def test_an_admin_turns_two_factor_on_for_themselves_before_requiring_it(login, admin):
    client = login(admin)
    client.post("/accounts/security/policy/", {"require_two_factor_for_admins": "on"})
    assert not security.admin_two_factor_required()

    device = _two_factor(admin)
    client = login(admin)
    client.post("/accounts/login/verify/", {"code": _next_code(device)})
    client.post("/accounts/security/policy/", {"require_two_factor_for_admins": "on"})
    assert security.admin_two_factor_required()
    entry = AuditEntry.objects.get(action="security.settings_updated")
    assert entry.before == {"require_two_factor_for_admins": False}
    assert entry.after == {"require_two_factor_for_admins": True}
    assert client.get("/inbox/").status_code == 200


def test_an_admin_without_two_factor_must_set_it_up_when_required(login, admin, agent):
    security.security_settings_update(require_two_factor_for_admins=True, actor=admin)
    other_admin = UserFactory(username="ada", role=Role.ADMIN)
    client = login(other_admin)
    for url in ("/inbox/", "/governance/", "/channels/"):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"] == "/accounts/security/"
    page = client.get("/accounts/security/").content.decode()
    assert "requires two-factor for admins" in page

    device = TOTPDevice.objects.get(user=other_admin)
    client.post("/accounts/security/two-factor/enable/", {"code": _next_code(device)})
    assert client.get("/inbox/").status_code == 200

    # Agents are not touched by the rule.
    assert login(agent).get("/inbox/").status_code == 200


def test_admins_cannot_turn_two_factor_off_while_required(login, admin):
    device = _two_factor(admin)
    security.security_settings_update(require_two_factor_for_admins=True, actor=admin)
    client = login(admin)
    client.post("/accounts/login/verify/", {"code": _next_code(device)})
    response = client.post(
        "/accounts/security/two-factor/disable/", {"code": _next_code(device)}, follow=True
    )
    assert "must keep two-factor on" in response.content.decode()
    assert TOTPDevice.objects.filter(user=admin, confirmed=True).exists()


def test_the_rule_is_read_from_the_cache_not_the_database(admin, django_assert_num_queries):
    security.security_settings_update(require_two_factor_for_admins=True, actor=admin)
    assert security.admin_two_factor_required()
    with django_assert_num_queries(0):
        assert security.admin_two_factor_required()


# --- How long a sign-in lasts -------------------------------------------------------------


def test_with_an_idle_timeout_each_request_pushes_the_expiry_on(login, agent, settings):
    settings.SESSION_SAVE_EVERY_REQUEST = True
    settings.SESSION_COOKIE_AGE = 600
    client = login(agent)
    client.get("/inbox/")
    session = Session.objects.get(session_key=client.session.session_key)
    assert abs((session.expire_date - timezone.now()).total_seconds() - 600) < 30

    # Idle for longer than that: the session is gone and the login page asks again. (Its
    # cached copy is kept for the same age, so it has gone from the cache too.)
    Session.objects.filter(pk=session.pk).update(expire_date=timezone.now() - timedelta(seconds=1))
    cache.delete(SessionStore(session_key=session.pk).cache_key)
    response = client.get("/inbox/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_a_sign_in_ends_after_the_longest_session_however_busy(login, agent, settings):
    client = login(agent)
    assert client.get("/inbox/").status_code == 200
    session = client.session
    session[security.SIGNED_IN_AT_SESSION_KEY] = time.time() - settings.SCRM_SESSION_MAX_AGE - 5
    session.save()
    response = client.get("/inbox/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=%2Finbox%2F"
    assert client.get("/inbox/")["Location"].startswith("/accounts/login/")


def test_security_headers_on_pages(login, agent):
    response = login(agent).get("/accounts/security/")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"
    assert "camera=()" in response["Permissions-Policy"]
