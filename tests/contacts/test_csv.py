"""Contacts in and out as CSV: the streamed export and the batched, idempotent import."""

import csv
import io
import json
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from contacts import services
from contacts.models import Contact, ContactImport, ContactImportStatus, ContactSource
from contacts.selectors import CSV_COLUMNS
from contacts.tasks import import_contacts
from tests.factories import ContactFactory, ConversationFactory, IdentityFactory

pytestmark = pytest.mark.django_db


def _export(client, search: str = "") -> list[dict[str, str]]:
    response = client.get("/contacts/export.csv", {"q": search} if search else {})
    assert response.status_code == 200
    text = b"".join(response.streaming_content).decode("utf-8-sig")
    return list(csv.DictReader(io.StringIO(text, newline="")))


@pytest.fixture
def upload(login, world, django_capture_on_commit_callbacks):
    """Upload a CSV as the manager (or ``user``) and return its job once the task ran."""

    def send(content: str | bytes, *, user=None, name: str = "contacts.csv"):
        raw = content.encode() if isinstance(content, str) else content
        client = login(user or world.manager)
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(
                "/contacts/imports/", {"file": SimpleUploadedFile(name, raw, "text/csv")}
            )
        if response.status_code == 200:
            return response
        assert response.status_code == 302, response.status_code
        return ContactImport.objects.get(pk=int(response["Location"].rstrip("/").split("/")[-1]))

    return send


def _values(contact: Contact) -> tuple:
    return (
        contact.name,
        contact.email,
        contact.phone,
        contact.company,
        contact.is_vip,
        contact.external_crm_id,
        contact.external_crm_url,
        contact.attributes,
        contact.updated_at,
    )


# --- export ------------------------------------------------------------------------------


def test_the_export_is_a_streamed_csv_with_every_column(login, world):
    contact = world.conversation_a.contact
    contact.email, contact.is_vip, contact.company = "dana@example.com", True, "Acme"
    contact.attributes = {"plan": "gold", "orders": 3}
    contact.save()
    IdentityFactory(contact=contact, platform="facebook", handle="", display_name="Dana R.")

    response = login(world.manager).get("/contacts/export.csv")
    assert response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="contacts-')
    text = b"".join(response.streaming_content).decode("utf-8")
    assert text.startswith("\ufeffid,name,email,")

    rows = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"), newline="")))
    assert list(rows[0]) == list(CSV_COLUMNS)
    (row,) = [r for r in rows if r["id"] == str(contact.pk)]
    handle = contact.identities.get(platform="demo").handle
    assert row["email"] == "dana@example.com"
    assert row["vip"] == "yes"
    assert row["company"] == "Acme"
    assert row["identities"] == f"demo:@{handle}; facebook:Dana R."
    assert json.loads(row["attributes"]) == {"plan": "gold", "orders": 3}
    assert row["first_seen_at"] == contact.first_seen_at.isoformat()
    assert row["last_seen_at"] == contact.last_seen_at.isoformat()


@pytest.mark.parametrize(
    ("persona", "sees_a", "sees_b"),
    [("manager", True, False), ("admin", True, True)],
)
def test_the_export_holds_only_contacts_the_user_may_see(login, world, persona, sees_a, sees_b):
    by_hand = ContactFactory(source=ContactSource.MANUAL)
    ids = {row["id"] for row in _export(login(world.persona(persona)))}
    assert (str(world.conversation_a.contact_id) in ids) is sees_a
    assert (str(world.conversation_b.contact_id) in ids) is sees_b
    assert str(by_hand.pk) in ids


def test_the_export_follows_the_search(login, world):
    ContactFactory(name="Zed Quill", source=ContactSource.MANUAL)
    ContactFactory(name="Other Person", source=ContactSource.MANUAL)
    rows = _export(login(world.admin), search="quill")
    assert [row["name"] for row in rows] == ["Zed Quill"]


def test_cells_a_spreadsheet_would_run_are_exported_inert_and_imported_back(login, world, upload):
    contact = ContactFactory(
        name='=HYPERLINK("http://evil.example","click")',
        phone="+1 555 0100",
        company="@acme",
        email="eve@example.com",
        source=ContactSource.MANUAL,
    )
    client = login(world.manager)
    (row,) = [r for r in _export(client) if r["id"] == str(contact.pk)]
    assert row["name"] == '\'=HYPERLINK("http://evil.example","click")'
    assert row["company"] == "'@acme"
    assert row["phone"] == "+1 555 0100"

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(CSV_COLUMNS))
    writer.writeheader()
    writer.writerow(row)
    job = upload(buffer.getvalue())
    assert (job.updated_count, job.unchanged_count) == (0, 1)
    contact.refresh_from_db()
    assert contact.name.startswith("=HYPERLINK") and contact.company == "@acme"


@pytest.mark.parametrize("count", [3, 40])
def test_the_export_runs_a_fixed_number_of_queries(
    login, world, django_assert_max_num_queries, count
):
    channel = world.channel_a
    for _ in range(count):
        identity = IdentityFactory()
        IdentityFactory(contact=identity.contact, platform="x")
        ConversationFactory(channel=channel, contact=identity.contact)
    client = login(world.manager)
    # Session, user, sign-in settings, role; the rows counted for the audit entry and the
    # entry; then one query for the contacts and one for their identities.
    with django_assert_max_num_queries(8):
        response = client.get("/contacts/export.csv")
        lines = b"".join(response.streaming_content).decode("utf-8-sig").splitlines()
    assert len(lines) == count + 2  # the header and the world's contact on channel A


# --- import ------------------------------------------------------------------------------


def test_an_import_creates_contacts_visible_to_every_team(login, world, upload):
    job = upload(
        "name,email,phone,company,vip,external_crm_id,external_crm_url,attributes\n"
        "Dana Reyes,dana@example.com,+1 555 0100,Acme,yes,CRM-1,https://crm.example.com/1,"
        '"{""plan"": ""gold""}"\n'
        "Eli Moss,eli@example.com,,,no,,,\n"
    )
    assert job.status == ContactImportStatus.DONE
    assert (job.total_rows, job.processed_rows, job.created_count) == (2, 2, 2)
    assert job.content == ""
    dana = Contact.objects.get(email="dana@example.com")
    assert dana.source == ContactSource.IMPORT
    assert dana.created_by == world.manager
    assert (dana.is_vip, dana.external_crm_id, dana.attributes) == (True, "CRM-1", {"plan": "gold"})
    assert login(world.agent_b).get(f"/contacts/{dana.pk}/").status_code == 200


def test_an_import_updates_the_contact_with_the_same_crm_id(world, upload):
    contact = ContactFactory(
        name="Old", email="old@example.com", external_crm_id="CRM-5", source=ContactSource.IMPORT
    )
    job = upload("external_crm_id,name,email\nCRM-5,New Name,new@example.com\n")
    assert (job.created_count, job.updated_count) == (0, 1)
    contact.refresh_from_db()
    assert (contact.name, contact.email) == ("New Name", "new@example.com")


def test_an_import_matches_emails_ignoring_case(world, upload):
    contact = ContactFactory(
        name="Dana", email="Dana.Reyes@Example.com", source=ContactSource.MANUAL
    )
    job = upload("email,company\ndana.reyes@example.COM,Acme\n")
    assert (job.created_count, job.updated_count) == (0, 1)
    contact.refresh_from_db()
    assert contact.company == "Acme"
    assert Contact.objects.count() == 3  # the world's two and this one


def test_the_crm_id_wins_over_the_email(world, upload):
    by_crm = ContactFactory(external_crm_id="CRM-1", source=ContactSource.IMPORT)
    by_email = ContactFactory(email="dana@example.com", source=ContactSource.MANUAL)
    upload("external_crm_id,email,company\nCRM-1,dana@example.com,Acme\n")
    by_crm.refresh_from_db()
    by_email.refresh_from_db()
    assert by_crm.company == "Acme"
    assert by_email.company == ""


def test_empty_cells_keep_what_is_stored_and_attributes_are_added(world, upload):
    contact = ContactFactory(
        email="dana@example.com",
        phone="555",
        company="Acme",
        attributes={"a": 1, "b": 2},
        source=ContactSource.MANUAL,
    )
    upload('email,phone,company,attributes\ndana@example.com,,Globex,"{""b"": 3, ""c"": 4}"\n')
    contact.refresh_from_db()
    assert (contact.phone, contact.company) == ("555", "Globex")
    assert contact.attributes == {"a": 1, "b": 3, "c": 4}


def test_exporting_then_importing_creates_and_changes_nothing(login, world, upload):
    contact = world.conversation_a.contact
    contact.email, contact.external_crm_id, contact.is_vip = "a@example.com", "CRM-A", True
    contact.attributes = {"orders": 3, "tags": ["x"]}
    contact.save()
    ContactFactory(name="Only A Name", source=ContactSource.MANUAL)
    ContactFactory(name="Dana", email="dana@example.com", source=ContactSource.MANUAL)
    before = {c.pk: _values(c) for c in Contact.objects.all()}
    exported = login(world.manager).get("/contacts/export.csv")
    content = b"".join(exported.streaming_content)

    job = upload(content, name="export.csv")
    assert job.status == ContactImportStatus.DONE
    assert (job.created_count, job.updated_count, job.skipped_count) == (0, 0, 0)
    assert job.unchanged_count == job.total_rows == 3
    assert {c.pk: _values(c) for c in Contact.objects.all()} == before


def test_importing_the_same_file_twice_creates_nothing_new(world, upload):
    content = (
        "name,email,external_crm_id,vip\n"
        "Dana,dana@example.com,,yes\n"
        "Eli,,CRM-2,no\n"
        "Fay,FAY@example.com,CRM-3,\n"
    )
    first = upload(content)
    count = Contact.objects.count()
    second = upload(content)
    assert first.created_count == 3
    assert (second.created_count, second.updated_count, second.unchanged_count) == (0, 0, 3)
    assert Contact.objects.count() == count


def test_rows_naming_the_same_customer_make_one_contact(world, upload):
    job = upload("name,email,company\nDana,dana@example.com,\nDana R.,DANA@example.com,Acme\n")
    assert (job.created_count, job.updated_count) == (1, 1)
    contact = Contact.objects.get(email__iexact="dana@example.com")
    assert (contact.name, contact.company) == ("Dana R.", "Acme")


def test_bad_rows_are_reported_with_their_row_numbers_and_the_rest_imported(login, world, upload):
    job = upload(
        "name,email,vip,external_crm_url,attributes,id\n"  # row 1
        "Good One,good1@example.com,yes,,,\n"  # row 2
        "Bad Email,dana@,,,,\n"  # row 3
        ",,,,,\n"  # row 4 is blank: not a contact, not an error
        "Only Phone Missing Name,,maybe,,,\n"  # row 5
        ",,yes,,,\n"  # row 6: nothing to name the contact
        'Bad Json,bj@example.com,,ftp://x,"[1, 2]",abc\n'  # row 7
        "Good Two,good2@example.com,,,,\n"  # row 8
    )
    assert job.status == ContactImportStatus.DONE
    assert (job.total_rows, job.processed_rows) == (6, 6)
    assert (job.created_count, job.skipped_count) == (2, 4)
    problems = [(e["row"], e["column"]) for e in job.errors]
    assert problems == [
        (3, "email"),
        (5, "vip"),
        (6, "name"),
        (7, "external_crm_url"),
        (7, "attributes"),
        (7, "id"),
    ]
    assert "“dana@” is not a valid email address." in job.errors[0]["message"]
    imported = Contact.objects.filter(source=ContactSource.IMPORT)
    assert set(imported.values_list("name", flat=True)) == {"Good One", "Good Two"}
    page = login(world.manager).get(f"/contacts/imports/{job.pk}/").content.decode()
    assert "Rows not imported" in page
    assert "is not a valid email address" in page
    assert "2 created" in page and "4 skipped" in page


def test_a_file_with_a_bom_and_semicolons_imports(world, upload):
    content = "\ufeffName;Email;Company\nJosé Núñez;jose@example.com;Café, Ltd\n".encode()
    job = upload(content)
    assert job.created_count == 1
    contact = Contact.objects.get(email="jose@example.com")
    assert (contact.name, contact.company) == ("José Núñez", "Café, Ltd")


def test_quoted_cells_may_span_lines_and_rows_are_numbered_by_where_they_start(world, upload):
    job = upload('name,email\n"Multi\nLine",ml@example.com\nBad,nope\n')
    assert job.created_count == 1
    assert job.errors[0]["row"] == 4


def test_unknown_columns_are_ignored_and_listed(login, world, upload):
    job = upload("Name,Email,Favourite Colour\nDana,dana@example.com,blue\n")
    assert job.created_count == 1
    assert job.ignored_columns == ["favourite_colour"]
    page = login(world.manager).get(f"/contacts/imports/{job.pk}/").content.decode()
    assert "favourite_colour" in page


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("phone,company\n555,Acme\n", "needs a “name” or an “email” column"),
        ("", "The submitted file is empty."),
        ("\n,,\n", "The file is empty"),
        ("name,email\n", "no contacts"),
        ("name,email,name\nA,a@example.com,B\n", "repeats columns: name"),
        ("name,email\nJos\xe9,a@example.com\n".encode("latin-1"), "not UTF-8"),
    ],
)
def test_a_file_that_cannot_be_imported_is_refused_at_upload(world, upload, content, message):
    response = upload(content)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not ContactImport.objects.exists()


def test_the_import_runs_in_batches_and_resumes_after_the_last_committed_one(
    world, upload, monkeypatch
):
    monkeypatch.setattr(services, "IMPORT_BATCH_SIZE", 2)
    real_batch_import = services._batch_import
    calls = []

    def fail_on_the_second_batch(records, actor_id):
        calls.append(len(records))
        if len(calls) == 2:
            raise RuntimeError("worker lost its database")
        return real_batch_import(records, actor_id)

    monkeypatch.setattr(services, "_batch_import", fail_on_the_second_batch)
    content = "name,email\n" + "".join(f"P{i},p{i}@example.com\n" for i in range(5))
    with pytest.raises(RuntimeError):
        upload(content)
    job = ContactImport.objects.get()
    assert job.status == ContactImportStatus.FAILED
    assert job.processed_rows == 2
    assert "stopped after 2 of 5 rows" in job.failure
    assert Contact.objects.filter(source=ContactSource.IMPORT).count() == 2

    # A redelivered task picks up a running job whose worker went quiet, where it stopped.
    monkeypatch.setattr(services, "_batch_import", real_batch_import)
    ContactImport.objects.filter(pk=job.pk).update(
        status=ContactImportStatus.RUNNING,
        content=content,
        failure="",
        updated_at=timezone.now() - timedelta(hours=1),
    )
    import_contacts.delay(job.pk)
    job.refresh_from_db()
    assert job.status == ContactImportStatus.DONE
    assert (job.processed_rows, job.created_count) == (5, 5)
    assert Contact.objects.filter(source=ContactSource.IMPORT).count() == 5


def test_a_job_another_worker_is_running_is_left_alone(world):
    job = ContactImport.objects.create(
        file_name="x.csv",
        content="name\nA\n",
        total_rows=1,
        status=ContactImportStatus.RUNNING,
    )
    assert services.contact_import_run(job_id=job.pk) is None
    done = ContactImport.objects.create(file_name="y.csv", status=ContactImportStatus.DONE)
    assert services.contact_import_run(job_id=done.pk) is None
    assert not Contact.objects.filter(name="A").exists()


def test_the_job_page_polls_while_the_import_runs_and_stops_when_it_ends(login, world):
    job = ContactImport.objects.create(
        created_by=world.manager,
        file_name="big.csv",
        status=ContactImportStatus.RUNNING,
        total_rows=2000,
        processed_rows=500,
    )
    client = login(world.manager)
    page = client.get(f"/contacts/imports/{job.pk}/").content.decode()
    assert f'hx-get="/contacts/imports/{job.pk}/progress/"' in page
    assert 'hx-trigger="every 1s"' in page
    assert 'value="500"' in page and "500 of 2,000 rows" in page

    job.status, job.processed_rows = ContactImportStatus.DONE, 2000
    job.save()
    partial = client.get(f"/contacts/imports/{job.pk}/progress/").content.decode()
    assert "hx-get" not in partial
    assert "<html" not in partial
    assert "Every row was imported." in partial


def test_imports_whose_task_was_lost_are_resumed(world, django_capture_on_commit_callbacks):
    from datetime import timedelta

    from django.utils import timezone

    from contacts.models import ContactImport, ContactImportStatus
    from contacts.tasks import resume_stalled_imports

    job = ContactImport.objects.create(
        file_name="lost.csv",
        content="name,email\nLost Person,lost@example.com\n",
        created_by=world.manager,
    )
    ContactImport.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    assert resume_stalled_imports() == 1
    job.refresh_from_db()
    assert job.status == ContactImportStatus.DONE
    assert resume_stalled_imports() == 0


def test_an_import_cannot_reach_contacts_of_another_team(world, django_capture_on_commit_callbacks):
    from contacts.models import Contact, ContactImport
    from contacts.services import contact_import_run

    hidden = world.conversation_b.contact
    hidden.email = "secret@example.com"
    hidden.save()
    before = Contact.objects.get(pk=hidden.pk)
    job = ContactImport.objects.create(
        file_name="attack.csv",
        content=(f"id,name,company\n{hidden.pk},Overwritten,Evil\n\n"),
        created_by=world.manager,
    )
    contact_import_run(job_id=job.pk)
    job.refresh_from_db()
    after = Contact.objects.get(pk=hidden.pk)
    assert (after.name, after.company) == (before.name, before.company)
    assert job.updated_count == 0
    assert any("that you may see" in e["message"] for e in job.errors)

    probe = ContactImport.objects.create(
        file_name="probe.csv",
        content="name,email\nProbe,SECRET@example.com\n",
        created_by=world.manager,
    )
    contact_import_run(job_id=probe.pk)
    probe.refresh_from_db()
    assert (probe.created_count, probe.updated_count) == (1, 0)
    assert Contact.objects.get(pk=hidden.pk).name == before.name
