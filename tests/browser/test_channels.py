"""An admin looks after the channels in a real browser: the list, adding an X account, the
credential fields that follow the platform chosen, and the dead letters."""

import re

import pytest
from playwright.sync_api import expect

from channels_ingest.demo_seed import DEMO_CHANNELS, DEMO_PASSWORD, seed_demo
from channels_ingest.models import ChannelAccount

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

BEARER = "AAAAbrowser-bearer-token-Vx31"
CONSUMER_SECRET = "browser-consumer-secret-Pm77"


def _log_in(page, live_server, username: str) -> None:
    page.goto(f"{live_server.url}/inbox/")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Inbox")).to_be_visible()


def _open_channels(page) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Channels").click()
    expect(page.get_by_role("heading", name="Channels")).to_be_visible()


def _secrets(page, platform: str):
    return page.locator(f"fieldset.secrets[data-platform='{platform}']")


def test_an_admin_adds_an_x_channel_and_finds_it_in_the_list(page, live_server, screenshot):
    seed_demo(days=3)
    _log_in(page, live_server, "admin")
    _open_channels(page)

    table = page.locator("table.data")
    for spec in DEMO_CHANNELS:
        expect(table.get_by_role("link", name=spec.name, exact=True)).to_be_visible()
    expect(table.locator("tbody tr")).to_have_count(len(DEMO_CHANNELS))
    screenshot("channels")

    page.get_by_role("link", name="Add a channel").click()
    expect(page.get_by_role("heading", name="Add a channel")).to_be_visible()
    page.get_by_label("Platform", exact=True).select_option("x")
    page.get_by_label("Name", exact=True).fill("Acme Support on X")
    page.get_by_label("Handle", exact=True).fill("@acmesupport")
    page.get_by_label("Account id on the platform").fill("2244994945")
    page.get_by_label("Mode", exact=True).select_option("engage")
    page.get_by_label("Poll every (seconds)").fill("45")
    page.get_by_label("Default team").select_option(label="Customer Care")
    page.get_by_label("Keywords", exact=True).fill("acme, acme support")
    page.get_by_label("Bearer token", exact=True).fill(BEARER)
    page.get_by_label("API key secret (consumer secret)").fill(CONSUMER_SECRET)
    # Filling the secrets scrolled the page; the screenshot shows the form from its top.
    page.evaluate("window.scrollTo(0, 0)")
    screenshot("channel_form")
    page.get_by_role("button", name="Save channel").click()

    expect(page.get_by_role("heading", name="Channels")).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("Acme Support on X saved.")
    expect(table.get_by_role("link", name="Acme Support on X")).to_be_visible()
    expect(table.locator("tbody tr")).to_have_count(len(DEMO_CHANNELS) + 1)
    channel = ChannelAccount.objects.get(name="Acme Support on X")
    assert channel.platform == "x"
    assert channel.poll_interval_seconds == 45
    assert channel.settings["keywords"] == ["acme", "acme support"]
    assert channel.credentials == {"bearer_token": BEARER, "consumer_secret": CONSUMER_SECRET}

    page.get_by_role("link", name="Dead letters").click()
    expect(page.get_by_role("heading", name="Dead letters")).to_be_visible()
    expect(page.get_by_text("No dead letters here.")).to_be_visible()


def test_the_credential_fields_follow_the_platform_chosen(page, live_server):
    seed_demo(days=3)
    _log_in(page, live_server, "admin")
    page.goto(f"{live_server.url}/channels/new/")
    platform = page.get_by_label("Platform", exact=True)

    platform.select_option("x")
    expect(_secrets(page, "x")).to_be_visible()
    expect(page.get_by_label("Bearer token", exact=True)).to_be_visible()
    expect(_secrets(page, "facebook")).to_be_hidden()
    expect(page.get_by_label("Page access token", exact=True)).to_be_hidden()

    platform.select_option("facebook")
    expect(_secrets(page, "facebook")).to_be_visible()
    expect(page.get_by_label("Page access token", exact=True)).to_be_visible()
    expect(_secrets(page, "x")).to_be_hidden()
    expect(page.get_by_label("Bearer token", exact=True)).to_be_hidden()

    platform.select_option("demo")
    expect(_secrets(page, "x")).to_be_hidden()
    expect(_secrets(page, "facebook")).to_be_hidden()


def test_the_script_marks_the_other_platforms_credentials_hidden(page, live_server):
    seed_demo(days=3)
    _log_in(page, live_server, "admin")
    page.goto(f"{live_server.url}/channels/new/")
    platform = page.get_by_label("Platform", exact=True)

    platform.select_option("x")
    expect(_secrets(page, "x")).not_to_have_attribute("hidden", "")
    expect(_secrets(page, "facebook")).to_have_attribute("hidden", "")

    platform.select_option("facebook")
    expect(_secrets(page, "facebook")).not_to_have_attribute("hidden", "")
    expect(_secrets(page, "x")).to_have_attribute("hidden", "")
