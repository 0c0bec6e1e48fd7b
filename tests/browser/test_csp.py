"""The dashboard under its Content-Security-Policy in a real browser: the pages with scripts,
htmx and inline styles work and the browser reports no violation; and an agent turns on
two-factor and logs in with it."""

import re

import pytest
from django_otp.plugins.otp_totp.models import TOTPDevice
from playwright.sync_api import expect

from channels_ingest.demo_seed import DEMO_PASSWORD, seed_demo
from governance import security

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def violations(page):
    """Everything the browser says about the policy: console lines and violation events."""
    seen = []
    page.on(
        "console",
        lambda message: (
            seen.append(message.text)
            if "Content Security Policy" in message.text
            or "Content-Security-Policy" in message.text
            else None
        ),
    )
    page.on("pageerror", lambda error: seen.append(f"page error: {error}"))
    return seen


def _log_in(page, live_server, username: str, path: str = "/inbox/") -> None:
    page.goto(f"{live_server.url}{path}")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Log in").click()


def _visit(page, live_server, path: str, heading: str | re.Pattern[str]) -> None:
    page.goto(f"{live_server.url}{path}")
    expect(page.get_by_role("heading", level=1, name=heading)).to_be_visible()
    page.wait_for_load_state("networkidle")


def test_the_dashboard_works_under_the_policy(page, live_server, violations):
    seed_demo(days=3)
    _log_in(page, live_server, "admin")
    expect(page.get_by_role("heading", name="Inbox")).to_be_visible()
    page.wait_for_load_state("networkidle")
    # Tag colours are inline style attributes, which the policy allows for attributes only.
    tag = page.locator("a.row .tag").first
    if tag.count():
        assert tag.evaluate("el => getComputedStyle(el).backgroundColor") != "rgba(0, 0, 0, 0)"

    page.locator("a.row").first.click()
    expect(page.get_by_role("heading", level=2, name="History across channels")).to_be_visible()
    reply = page.get_by_label(re.compile("^Reply on"))
    reply.fill("Checking the counter")
    expect(page.locator("#reply-counter")).to_contain_text("20 /")  # conversation.js runs
    page.wait_for_load_state("networkidle")

    _visit(page, live_server, "/contacts/", "Contacts")
    page.locator("table a[href^='/contacts/']").first.click()
    page.wait_for_load_state("networkidle")

    _visit(page, live_server, "/channels/new/", "Add a channel")
    page.get_by_label("Platform", exact=True).select_option("facebook")
    expect(page.locator("fieldset.secrets[data-platform='x']")).to_be_hidden()  # channel_form.js

    _visit(page, live_server, "/routing/rules/new/", "New rule")
    page.get_by_role("button", name="+ Add condition").click()  # rule_editor.js
    expect(page.locator("[data-rows='conditions'] [data-row-list] > li")).not_to_have_count(0)

    _visit(page, live_server, "/routing/dry-run/", "Dry run")
    page.get_by_label("Text").fill("<script>alert(1)</script> where is my refund?")
    page.get_by_role("button", name="Try the rules").click()
    expect(page.get_by_role("heading", name="Result")).to_be_visible()

    for path, heading in [
        ("/reports/", re.compile("Reports|Overview")),
        ("/governance/", "Governance"),
        ("/contacts/imports/", re.compile("Import")),
        ("/accounts/security/", "Security"),
    ]:
        _visit(page, live_server, path, heading)
    qr = page.get_by_alt_text(re.compile("QR code"))
    expect(qr).to_be_visible()
    assert qr.evaluate("img => img.naturalWidth") > 0  # the data: image is allowed

    assert violations == []


def test_an_agent_turns_on_two_factor_and_logs_in_with_it(page, live_server, violations):
    seed_demo(days=1)
    _log_in(page, live_server, "agent")
    expect(page.get_by_role("heading", name="Inbox")).to_be_visible()
    page.get_by_role("link", name="Security").click()
    expect(page.get_by_role("heading", name="Two-factor sign-in")).to_be_visible()
    secret = page.locator("#totp-secret").inner_text()
    device = TOTPDevice.objects.get(user__username="agent", confirmed=False)
    assert secret == security.totp_secret(device)

    page.get_by_label("Code from your app").fill(security.totp_code(device))
    page.get_by_role("button", name="Turn two-factor on").click()
    expect(page.get_by_role("heading", name="Your recovery codes")).to_be_visible()
    codes = page.locator(".recovery-codes code").all_inner_texts()
    assert len(codes) == 10

    page.get_by_role("button", name="Log out").click()
    _log_in(page, live_server, "agent", path="/contacts/")
    expect(page).to_have_url(re.compile(r"/accounts/login/verify/"))
    page.get_by_label("Code").fill("999999")
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_role("alert")).to_contain_text("did not match")

    page.get_by_label("Code").fill(codes[0])
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_role("heading", level=1, name="Contacts")).to_be_visible()
    assert violations == []
