"""A manager keeps the customer list in a real browser: add a contact, export, import."""

import csv
import re

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import expect

from channels_ingest.demo_seed import DEMO_PASSWORD, seed_demo
from contacts.models import Contact, ContactImport, ContactImportStatus, ContactSource

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

IMPORT_FILE = (
    b"name;email;company;vip;external_crm_id\n"
    b"Ines Park;ines@example.com;Northwind;yes;CRM-100\n"
    b"Broken Row;ines-at-example;Northwind;;\n"
    b"Omar Haddad;omar@example.com;;no;CRM-101\n"
)


def _log_in(page, live_server, username: str) -> None:
    page.goto(f"{live_server.url}/contacts/")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Contacts", exact=True)).to_be_visible()


def test_a_manager_adds_exports_and_imports_contacts(page, live_server, screenshot):
    seed_demo(days=3)
    _log_in(page, live_server, "manager")

    page.get_by_role("link", name="New contact").click()
    page.get_by_role("button", name="Add contact").click()
    expect(page.get_by_text("Give a name or an email address.")).to_be_visible()
    screenshot("contacts_form")
    page.get_by_label("Name", exact=True).fill("Dana Reyes")
    page.get_by_label("Email").fill("dana.reyes@example.com")
    page.get_by_label("Company").fill("Acme")
    page.get_by_label("VIP").check()
    page.get_by_label("Custom attributes").fill("plan: gold\nregion: EMEA")
    page.get_by_role("button", name="Add contact").click()
    expect(page.get_by_role("heading", name="Dana Reyes")).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("Dana Reyes added.")
    contact = Contact.objects.get(email="dana.reyes@example.com")
    assert contact.source == ContactSource.MANUAL
    assert contact.attributes == {"plan": "gold", "region": "EMEA"}

    page.get_by_role("link", name="← Contacts").click()
    expect(page.get_by_role("link", name="Dana Reyes")).to_be_visible()
    screenshot("contacts_list")
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Export CSV").click()
    download = download_info.value
    assert re.fullmatch(r"contacts-\d{4}-\d{2}-\d{2}\.csv", download.suggested_filename)
    with open(download.path(), encoding="utf-8-sig", newline="") as exported:
        rows = list(csv.DictReader(exported))
    assert len(rows) > 1
    (dana,) = [row for row in rows if row["email"] == "dana.reyes@example.com"]
    assert (dana["name"], dana["vip"], dana["company"]) == ("Dana Reyes", "yes", "Acme")

    page.get_by_role("link", name="Import CSV").click()
    expect(page.get_by_role("heading", name="Import contacts")).to_be_visible()
    screenshot("contacts_import_form")
    page.get_by_label("CSV file").set_input_files(
        {"name": "crm-export.csv", "mimeType": "text/csv", "buffer": IMPORT_FILE}
    )
    page.get_by_role("button", name="Upload and import").click()
    expect(page.get_by_role("heading", name="Import of crm-export.csv")).to_be_visible()
    expect(page.get_by_role("status").filter(has_text="Import finished")).to_contain_text(
        "2 created, 0 updated, 0 unchanged, 1 skipped"
    )
    report = page.get_by_role("region", name="Error report")
    expect(report.locator("tbody tr")).to_have_count(1)
    expect(report.locator("tbody tr").first).to_contain_text("3")
    expect(report.locator("tbody tr").first).to_contain_text("is not a valid email address")
    screenshot("contacts_import")

    assert set(
        Contact.objects.filter(source=ContactSource.IMPORT).values_list("email", flat=True)
    ) == {"ines@example.com", "omar@example.com"}


def test_the_import_page_follows_a_running_import(page, live_server, screenshot):
    seed_demo(days=3)
    _log_in(page, live_server, "manager")
    job = ContactImport.objects.create(
        created_by=User.objects.get(username="manager"),
        file_name="big.csv",
        status=ContactImportStatus.RUNNING,
        total_rows=20000,
        processed_rows=7500,
    )
    page.goto(f"{live_server.url}/contacts/imports/{job.pk}/")
    expect(page.get_by_text("7,500 of 20,000 rows")).to_be_visible()
    screenshot("contacts_import_progress")

    ContactImport.objects.filter(pk=job.pk).update(
        status=ContactImportStatus.DONE, processed_rows=20000, created_count=20000
    )
    # No reload: the progress partial polls every second and stops once the import ended.
    expect(page.get_by_role("status").filter(has_text="Import finished")).to_contain_text(
        "20,000 created"
    )
    expect(page.get_by_text("Every row was imported.")).to_be_visible()
