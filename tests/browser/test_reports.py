"""A manager's reports in a real browser: charts drawn under the CSP, the range changed, a
filter applied, a CSV exported; an agent turned away from the agent comparison."""

import csv
import io
import os
import re
import shutil
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import expect

from channels_ingest.demo_seed import DEMO_PASSWORD, seed_demo
from governance.selectors import channels_visible_to
from tests.browser.conftest import ARTIFACTS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
CHARTS = ("volume", "channels", "first-response", "distribution", "sentiment", "backlog")


def _log_in(page, live_server, username: str) -> None:
    page.goto(f"{live_server.url}/inbox/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Inbox")).to_be_visible()


def _watch(page) -> list[str]:
    """Console errors and CSP violations the page reports; not the 400 of the bad range this
    test asks for on purpose, nor the favicon the app does not have."""
    problems: list[str] = []

    def console(message) -> None:
        url = message.location.get("url", "")
        expected = url.endswith("/favicon.ico") or "start=2020-02-01" in url
        if message.type == "error" and not expected:
            problems.append(f"{message.text} ({url})")

    page.on("console", console)
    page.on("pageerror", lambda e: problems.append(str(e)))
    return problems


def _keep(screenshot, name: str) -> None:
    """A screenshot among the test artifacts; the README's copy is replaced only on request
    (SCRM_UPDATE_SCREENSHOTS=1), so running the suite leaves the checkout as it was."""
    taken = screenshot(name)
    if os.environ.get("SCRM_UPDATE_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(taken, SCREENSHOTS / f"{name}.png")


def test_a_manager_reads_filters_and_exports_the_dashboard(page, live_server, screenshot):
    seed_demo(days=60)  # two periods of 30 days: the dashboard compares them
    problems = _watch(page)
    _log_in(page, live_server, "manager")
    page.get_by_role("link", name="Reports", exact=True).click()
    expect(page.get_by_role("heading", name="Reports", exact=True)).to_be_visible()
    for chart in CHARTS:
        expect(page.locator(f'canvas[data-chart="{chart}"][data-drawn="true"]')).to_have_count(1)
    expect(page.locator(".kpi").first).to_be_visible()
    expect(page.locator(".target-status").first).to_be_visible()
    # Charts drew something: a drawn canvas is not blank.
    blank = page.evaluate(
        """() => { const c = document.querySelector('canvas[data-chart="volume"]');
                   const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                   return !d.some(v => v !== 0); }"""
    )
    assert not blank
    page.set_viewport_size({"width": 1360, "height": 1500})
    _keep(screenshot, "reports")
    # The whole page, to look at in the test artifacts.
    page.screenshot(path=str(ARTIFACTS / "reports_full.png"), full_page=True)
    page.set_viewport_size({"width": 1360, "height": 860})

    # Every chart has its figures as a table.
    page.get_by_text("Show as a table").first.click()
    expect(page.locator("details.as-table[open] table").first).to_be_visible()

    # The range: a preset, then a custom range typed in.
    page.get_by_role("link", name="Last 7 days").click()
    expect(page).to_have_url(re.compile(r"days=7"))
    expect(page.locator("#id_range")).to_have_value("7")
    page.get_by_label("From", exact=True).fill("2020-01-01")
    page.get_by_label("To", exact=True).fill("2020-01-31")
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"range=custom.*start=2020-01-01"))
    expect(page.locator(".report-head").first).to_contain_text("Jan 1, 2020")

    # A bad range is explained.
    page.get_by_label("From", exact=True).fill("2020-02-01")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_role("alert")).to_contain_text("start date must be on or before")

    # Back to the last 30 days, filtered by a channel.
    page.get_by_role("link", name="Last 30 days").click()
    manager = User.objects.get(username="manager")
    channel = channels_visible_to(user=manager).order_by("name").first()
    page.get_by_label("Channel", exact=True).select_option(str(channel.pk))
    page.get_by_label("Per", exact=True).select_option("week")
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(rf"channel={channel.pk}"))
    expect(page.locator(".report-scope")).to_contain_text(channel.name)
    expect(page.locator('canvas[data-chart="volume"][data-drawn="true"]')).to_have_count(1)

    with page.expect_download() as download_info:
        page.get_by_role("link", name="Export CSV").click()
    download = download_info.value
    assert re.fullmatch(
        r"reports-summary-\d{4}-\d\d-\d\d-to-\d{4}-\d\d-\d\d\.csv", download.suggested_filename
    )
    text = Path(download.path()).read_text(encoding="utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["Section", "Figure", "Unit", "Value", "Previous period", "Change"]
    figures = {row[1]: row for row in rows[1:]}
    shown = page.locator(".kpi", has_text="Inbound messages").locator(".value").inner_text()
    assert int(figures["Inbound messages"][3]) == int(shown.replace(",", ""))

    with page.expect_download() as download_info:
        page.get_by_role("link", name="Conversation facts").click()
    facts = Path(download_info.value.path()).read_text(encoding="utf-8-sig").splitlines()
    assert facts[0].startswith("Conversation,Channel,Platform")
    assert all(f",{channel.name}," in line for line in facts[1:])

    page.get_by_role("link", name="Agents", exact=True).click()
    expect(page.get_by_role("heading", name="Reports per agent")).to_be_visible()
    expect(page.locator("table.data tbody tr").first).to_be_visible()
    _keep(screenshot, "reports_agents")
    # Dates typed on a page of its own make a custom range there too.
    page.get_by_label("From", exact=True).fill("2020-01-01")
    page.get_by_label("To", exact=True).fill("2020-01-07")
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"range=custom.*start=2020-01-01"))
    expect(page.locator(".report-head").first).to_contain_text("Jan 1, 2020")
    page.get_by_role("link", name="Channels", exact=True).click()
    page.get_by_label("From", exact=True).fill("2020-01-02")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator(".report-head").first).to_contain_text("Jan 2, 2020")

    # A target set in advance shows on the dashboard with its status.
    page.get_by_role("link", name="Targets", exact=True).click()
    page.get_by_role("link", name="New target").click()
    page.get_by_label("Metric").select_option("in_channel_resolution")
    page.get_by_label("Value").fill("70")
    page.get_by_label("Channel").select_option(str(channel.pk))
    page.get_by_label("Note").fill("Keep it in the channel")
    page.get_by_role("button", name="Save target").click()
    expect(page.get_by_role("status")).to_contain_text("saved")
    row = page.locator("tr", has_text="Keep it in the channel")
    expect(row).to_contain_text(channel.name)
    expect(row.locator(".target-status")).to_have_text(re.compile("Met|At risk|Missed|No data"))
    screenshot("reports_targets")
    page.get_by_role("link", name="Dashboard", exact=True).click()
    expect(page.locator("#targets-title ~ *, table.data").first).to_be_visible()
    expect(page.get_by_text("Keep it in the channel")).to_be_visible()
    assert not problems, problems


def test_an_agent_is_turned_away_from_the_reports(page, live_server):
    seed_demo(days=7)
    _log_in(page, live_server, "agent")
    expect(page.get_by_role("link", name="Reports", exact=True)).to_have_count(0)
    for path in ("/reports/", "/reports/agents/", "/reports/export/agents.csv"):
        response = page.request.get(f"{live_server.url}{path}")
        assert response.status == 403, path
