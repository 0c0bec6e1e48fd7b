"""Contact workflows through the API: CSV import and its progress, undoing a merge, moving an
identity to another contact, and merge suggestions. The same services, checks and scoping as
the Contacts pages."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext

from contacts.models import (
    Contact,
    ContactImport,
    ContactMerge,
    MergeSuggestion,
    MergeSuggestionStatus,
    SocialIdentity,
)
from contacts.services import contact_import_create, import_file_read
from conversations.models import Conversation
from governance.models import AuditEntry
from tests.factories import ContactFactory, ConversationFactory, IdentityFactory, MessageFactory

pytestmark = pytest.mark.django_db

CSV = (
    "name,email,company,vip,shoe_size\n"
    "Dana Reyes,dana@example.com,Acme,yes,42\n"
    "Eli Moss,eli@example.com,,no,\n"
    "Bad Row,nope,,,\n"
)


@pytest.fixture
def upload(api, django_capture_on_commit_callbacks):
    """POST a CSV as ``persona``; the import task runs once the request commits."""

    def send(persona: str, content: bytes, name: str = "people.csv"):
        with django_capture_on_commit_callbacks(execute=True):
            return api(persona).post(
                "/api/v1/contact-imports/",
                {"file": SimpleUploadedFile(name, content, "text/csv")},
                format="multipart",
            )

    return send


# --- CSV import ------------------------------------------------------------------------------


def test_an_upload_is_imported_and_reports_each_row_not_imported(world, api, upload):
    response = upload("manager", CSV.encode())
    assert response.status_code == 201, response.json()
    started = response.json()
    assert (started["file_name"], started["total_rows"], started["status"]) == (
        "people.csv",
        3,
        "pending",
    )
    assert started["ignored_columns"] == ["shoe_size"]

    job = api("manager").get(f"/api/v1/contact-imports/{started['id']}/").json()
    assert job["status"] == "done" and job["is_finished"] is True
    assert (job["processed_rows"], job["percent"]) == (3, 100)
    assert (
        job["created_count"],
        job["updated_count"],
        job["unchanged_count"],
        job["skipped_count"],
    ) == (2, 0, 0, 1)
    assert job["row_errors"] == [
        {"row": 4, "column": "email", "message": "“nope” is not a valid email address."}
    ]
    assert job["errors_truncated"] is False and job["created_by"] == world.manager.pk
    dana = Contact.objects.get(email="dana@example.com")
    assert (dana.name, dana.company, dana.is_vip, dana.source) == (
        "Dana Reyes",
        "Acme",
        True,
        "import",
    )
    actions = list(
        AuditEntry.objects.filter(object_type="contacts.contactimport")
        .order_by("pk")
        .values_list("action", "actor_id", "data__rows")
    )
    assert actions == [
        ("contacts.import_started", world.manager.pk, 3),
        ("contacts.imported", world.manager.pk, 3),
    ]
    # Imported twice, the file matches the contacts it made: nothing new.
    again = upload("manager", CSV.encode()).json()
    job = api("manager").get(f"/api/v1/contact-imports/{again['id']}/").json()
    assert (job["created_count"], job["unchanged_count"], job["skipped_count"]) == (0, 2, 1)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"name,email\n\xff\xfe\n", "The file is not UTF-8 text."),
        (b"phone,company\n1,Acme\n", "The header row needs a “name” or an “email” column"),
        (b"name,email\n", "The file has a header row but no contacts."),
    ],
)
def test_a_file_that_cannot_be_imported_is_refused_with_the_reason(world, upload, content, message):
    response = upload("admin", content)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert response.json()["fields"]["file"][0].startswith(message)
    assert not ContactImport.objects.exists()


def test_an_upload_without_a_file_is_refused(world, api):
    response = api("manager").post("/api/v1/contact-imports/", {}, format="multipart")
    assert response.status_code == 400 and list(response.json()["fields"]) == ["file"]


IMPORTS = {"admin": 201, "manager": 201, "agent_a": 403, "agent_b": 403, "anonymous": 401}


@pytest.mark.parametrize("persona", IMPORTS)
def test_imports_are_for_managers_and_admins(world, api, upload, persona):
    response = upload(persona, CSV.encode())
    assert response.status_code == IMPORTS[persona]
    listed = api(persona).get("/api/v1/contact-imports/")
    assert listed.status_code == (200 if IMPORTS[persona] == 201 else IMPORTS[persona])
    if IMPORTS[persona] != 201:
        assert not Contact.objects.filter(email="dana@example.com").exists()


def test_managers_follow_their_own_imports_and_admins_everyones(world, api, upload):
    mine = upload("manager", CSV.encode()).json()["id"]
    admins = upload("admin", CSV.encode(), name="admin.csv").json()["id"]
    manager = api("manager")
    assert [r["id"] for r in manager.get("/api/v1/contact-imports/").json()["results"]] == [mine]
    assert manager.get(f"/api/v1/contact-imports/{admins}/").status_code == 404
    listed = api("admin").get("/api/v1/contact-imports/").json()["results"]
    assert [r["id"] for r in listed] == [admins, mine]


# --- Merge and its undo ------------------------------------------------------------------------


@pytest.fixture
def pair(world):
    """Two contacts on channel A that are one customer."""
    kept = world.conversation_a.contact
    kept.email = ""
    kept.save()
    other = ContactFactory(name="Dana R.", email="dana@example.com", company="Acme")
    identity = IdentityFactory(contact=other, platform="facebook", handle="danarossi")
    conversation = ConversationFactory(channel=world.channel_a, contact=other)
    MessageFactory(conversation=conversation, author_identity=identity)
    return kept, other, identity, conversation


def test_a_merge_is_listed_and_undone(world, api, pair):
    kept, other, identity, conversation = pair
    client = api("agent_a")
    merged = client.post(f"/api/v1/contacts/{kept.pk}/merge/", {"other": other.pk}, format="json")
    assert merged.status_code == 200
    merge = merged.json()
    assert (merge["kept"], merge["merged"], merge["merged_by"]) == (
        kept.pk,
        other.pk,
        world.agent_a.pk,
    )
    assert merge["identity_ids"] == [identity.pk]
    assert merge["conversation_ids"] == [conversation.pk] and merge["undone_at"] is None

    listed = client.get(f"/api/v1/contact-merges/?contact={kept.pk}&undone=false").json()
    assert [row["id"] for row in listed["results"]] == [merge["id"]]

    undone = client.post(f"/api/v1/contact-merges/{merge['id']}/undo/")
    assert undone.status_code == 200
    assert undone.json()["undone_by"] == world.agent_a.pk and undone.json()["undone_at"]
    other.refresh_from_db()
    kept.refresh_from_db()
    assert other.merged_into_id is None and kept.email == ""
    assert SocialIdentity.objects.get(pk=identity.pk).contact_id == other.pk
    assert Conversation.objects.get(pk=conversation.pk).contact_id == other.pk
    entry = AuditEntry.objects.get(action="contact.merge_undone")
    assert (entry.actor_id, entry.object_id, entry.data["merge"]) == (
        world.agent_a.pk,
        str(other.pk),
        merge["id"],
    )
    assert client.get("/api/v1/contact-merges/?undone=false").json()["results"] == []

    again = client.post(f"/api/v1/contact-merges/{merge['id']}/undo/")
    assert again.status_code == 409
    assert again.json() == {"code": "conflict", "detail": "This merge was already undone."}


def test_another_teams_agent_cannot_see_or_undo_a_merge(world, api, pair):
    kept, other, *_ = pair
    api("agent_a").post(f"/api/v1/contacts/{kept.pk}/merge/", {"other": other.pk}, format="json")
    merge = ContactMerge.objects.get()
    client = api("agent_b")
    assert client.get("/api/v1/contact-merges/").json()["results"] == []
    assert client.post(f"/api/v1/contact-merges/{merge.pk}/undo/").status_code == 404
    assert ContactMerge.objects.get().undone_at is None


# --- Identities -------------------------------------------------------------------------------


def test_an_identity_moves_to_another_contact_with_its_own_conversations(world, api, pair):
    kept, other, identity, conversation = pair
    client = api("agent_a")
    moved = client.post(
        f"/api/v1/identities/{identity.pk}/move/", {"contact": kept.pk}, format="json"
    )
    assert moved.status_code == 200, moved.json()
    body = moved.json()
    assert (body["identity"], body["from_contact"], body["to_contact"]) == (
        identity.pk,
        other.pk,
        kept.pk,
    )
    assert body["conversation_ids"] == [conversation.pk] and body["moved_by"] == world.agent_a.pk
    assert SocialIdentity.objects.get(pk=identity.pk).contact_id == kept.pk
    assert Conversation.objects.get(pk=conversation.pk).contact_id == kept.pk
    entry = AuditEntry.objects.get(action="identity.moved")
    assert (entry.actor_id, entry.before, entry.after) == (
        world.agent_a.pk,
        {"contact": other.pk},
        {"contact": kept.pk},
    )
    # Left without a conversation on channel A, the old contact is out of the agent's sight;
    # an admin sees it and moves the identity back, naming it by its email in another case.
    url = f"/api/v1/identities/{identity.pk}/move/"
    hidden = client.post(url, {"email": "DANA@example.com"}, format="json")
    assert hidden.status_code == 400
    back = api("admin").post(url, {"email": "DANA@example.com"}, format="json")
    assert back.status_code == 200 and back.json()["to_contact"] == other.pk
    assert back.json()["conversation_ids"] == [conversation.pk]


def test_moving_an_identity_checks_the_target(world, api, pair):
    kept, other, identity, _ = pair
    client = api("agent_a")
    url = f"/api/v1/identities/{identity.pk}/move/"
    hidden = world.conversation_b.contact_id
    refused = client.post(url, {"contact": hidden}, format="json")
    assert refused.status_code == 400
    assert refused.json()["fields"] == {"contact": [f"No contact #{hidden} that you can see."]}
    unknown = client.post(url, {"email": "nobody@example.com"}, format="json")
    assert unknown.json()["fields"] == {
        "email": ["No contact nobody@example.com that you can see."]
    }
    both = client.post(url, {"contact": kept.pk, "email": "dana@example.com"}, format="json")
    assert both.status_code == 400
    assert both.json()["fields"] == {
        "non_field_errors": ["Name the contact by its id or by its email."]
    }
    same = client.post(url, {"contact": other.pk}, format="json")
    assert same.status_code == 409
    assert same.json()["detail"] == "The identity already belongs to that contact."
    assert SocialIdentity.objects.get(pk=identity.pk).contact_id == other.pk
    assert not AuditEntry.objects.filter(action="identity.moved").exists()


def test_another_teams_agent_cannot_see_or_move_an_identity(world, api, pair):
    _, other, identity, _ = pair
    shared = ContactFactory(source="manual")
    client = api("agent_b")
    listed = {row["id"] for row in client.get("/api/v1/identities/").json()["results"]}
    theirs = SocialIdentity.objects.get(contact=world.conversation_b.contact)
    assert listed == {theirs.pk}
    assert client.get(f"/api/v1/identities/{identity.pk}/").status_code == 404
    moved = client.post(
        f"/api/v1/identities/{identity.pk}/move/", {"contact": shared.pk}, format="json"
    )
    assert moved.status_code == 404
    assert SocialIdentity.objects.get(pk=identity.pk).contact_id == other.pk
    mine = api("agent_a").get(f"/api/v1/identities/?contact={other.pk}").json()["results"]
    assert [(row["id"], row["contact"], row["handle"]) for row in mine] == [
        (identity.pk, other.pk, "danarossi")
    ]


# --- Merge suggestions -------------------------------------------------------------------------


def _suggest(a: Contact, b: Contact, reason: str = "Same handle") -> MergeSuggestion:
    low, high = sorted((a.pk, b.pk))
    return MergeSuggestion.objects.create(contact_id=low, other_id=high, reason=reason)


def test_suggestions_are_those_about_two_contacts_you_see(world, api, pair):
    kept, other, *_ = pair
    ours = _suggest(kept, other)
    across = _suggest(kept, world.conversation_b.contact)
    assert {
        r["id"] for r in api("agent_a").get("/api/v1/merge-suggestions/").json()["results"]
    } == {ours.pk}
    assert api("agent_b").get("/api/v1/merge-suggestions/").json()["results"] == []
    everyone = api("admin").get(f"/api/v1/merge-suggestions/?contact={kept.pk}").json()
    assert {row["id"] for row in everyone["results"]} == {ours.pk, across.pk}
    row = api("agent_a").get(f"/api/v1/merge-suggestions/{ours.pk}/").json()
    assert row == {
        "id": ours.pk,
        "contact": min(kept.pk, other.pk),
        "other": max(kept.pk, other.pk),
        "reason": "Same handle",
        "status": "open",
        "created_at": row["created_at"],
    }
    assert api("agent_a").get(f"/api/v1/merge-suggestions/{across.pk}/").status_code == 404


def test_a_suggestion_is_dismissed_once(world, api, pair):
    kept, other, *_ = pair
    suggestion = _suggest(kept, other)
    assert (
        api("agent_b").post(f"/api/v1/merge-suggestions/{suggestion.pk}/dismiss/").status_code
        == 404
    )
    client = api("agent_a")
    dismissed = client.post(f"/api/v1/merge-suggestions/{suggestion.pk}/dismiss/")
    assert dismissed.status_code == 200 and dismissed.json()["status"] == "dismissed"
    suggestion.refresh_from_db()
    assert suggestion.status == MergeSuggestionStatus.DISMISSED
    again = client.post(f"/api/v1/merge-suggestions/{suggestion.pk}/dismiss/")
    assert again.status_code == 409
    assert again.json()["detail"] == "This suggestion was already dismissed."
    open_ones = client.get("/api/v1/merge-suggestions/?status=open").json()["results"]
    assert open_ones == []


def test_merging_accepts_the_suggestion_and_undoing_opens_it_again(world, api, pair):
    kept, other, *_ = pair
    suggestion = _suggest(kept, other)
    client = api("agent_a")
    merge = client.post(
        f"/api/v1/contacts/{kept.pk}/merge/", {"other": other.pk}, format="json"
    ).json()
    # The merged contact is hidden, so the suggestion is no longer between two visible ones.
    assert client.get(f"/api/v1/merge-suggestions/{suggestion.pk}/").status_code == 404
    suggestion.refresh_from_db()
    assert suggestion.status == MergeSuggestionStatus.ACCEPTED
    client.post(f"/api/v1/contact-merges/{merge['id']}/undo/")
    assert client.get(f"/api/v1/merge-suggestions/{suggestion.pk}/").json()["status"] == "open"


# --- Contact details ---------------------------------------------------------------------------


def test_attribute_keys_are_as_long_as_on_the_contact_form(world, api):
    client = api("agent_a")
    long_key = "k" * 101
    refused = client.post(
        "/api/v1/contacts/", {"name": "Dana", "attributes": {long_key: "x"}}, format="json"
    )
    assert refused.status_code == 400
    assert refused.json()["fields"] == {
        "attributes": [f"A key is at most 100 characters: “{'k' * 40}…” is longer."]
    }
    made = client.post(
        "/api/v1/contacts/", {"name": "Dana", "attributes": {"k" * 100: "x"}}, format="json"
    )
    assert made.status_code == 201


def test_a_contacts_history_holds_the_conversations_on_channels_you_see(world, api):
    contact = world.conversation_a.contact
    on_b = ConversationFactory(channel=world.channel_b, contact=contact, subject="On B")
    url = f"/api/v1/contacts/{contact.pk}/conversations/"

    def history(persona: str) -> list[tuple[int, int]]:
        rows = api(persona).get(url).json()["results"]
        return [(row["id"], row["channel"]) for row in rows]

    assert history("agent_a") == [(world.conversation_a.pk, world.channel_a.pk)]
    assert history("agent_b") == [(on_b.pk, world.channel_b.pk)]
    assert sorted(history("admin")) == sorted(
        [(world.conversation_a.pk, world.channel_a.pk), (on_b.pk, world.channel_b.pk)]
    )
    other = world.conversation_b.contact_id
    assert api("agent_a").get(f"/api/v1/contacts/{other}/conversations/").status_code == 404


def _queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured.captured_queries)


def test_the_lists_cost_the_same_queries_however_long(world, api):
    client = api("agent_a")
    manager = api("manager")
    urls = ["/api/v1/merge-suggestions/", "/api/v1/contact-merges/", "/api/v1/identities/"]

    def grow(n):
        for _ in range(n):
            a, b = IdentityFactory().contact, IdentityFactory().contact
            for contact in (a, b):
                ConversationFactory(channel=world.channel_a, contact=contact)
            _suggest(a, b)
            api("agent_a").post(f"/api/v1/contacts/{a.pk}/merge/", {"other": b.pk}, format="json")
            contact_import_create(
                file=import_file_read(raw=b"name\nDana\n"), file_name="a.csv", actor=world.manager
            )

    grow(1)
    client.get("/api/v1/me/"), manager.get("/api/v1/me/")  # a token's first use is recorded
    few = [_queries(client, url) for url in urls] + [_queries(manager, "/api/v1/contact-imports/")]
    grow(15)
    many = [_queries(client, url) for url in urls] + [_queries(manager, "/api/v1/contact-imports/")]
    assert many == few
