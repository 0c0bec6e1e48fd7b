"""Contacts through the API: scoping, create and edit with the CRM link, merge, CSV export,
data-subject export and erasure."""

import csv
import io

import pytest

from contacts.models import Contact
from tests.factories import ContactFactory, ConversationFactory, IdentityFactory

pytestmark = pytest.mark.django_db

SEES_A = {"admin": 200, "manager": 200, "agent_a": 200, "agent_b": 404}
DATA_RIGHTS = {"admin": 200, "manager": 200, "agent_a": 403, "agent_b": 403}


@pytest.mark.parametrize("persona", SEES_A)
def test_contacts_are_scoped_to_the_teams_channels(world, api, persona):
    client = api(persona)
    contact = world.conversation_a.contact_id
    ids = {row["id"] for row in client.get("/api/v1/contacts/").json()["results"]}
    assert (contact in ids) == (SEES_A[persona] == 200)
    detail = client.get(f"/api/v1/contacts/{contact}/")
    assert detail.status_code == SEES_A[persona]
    if detail.status_code == 200:
        assert detail.json()["identities"][0]["platform"] == "demo"
    edit = client.patch(f"/api/v1/contacts/{contact}/", {"company": "Acme"}, format="json")
    assert edit.status_code == SEES_A[persona]


def test_a_contact_carries_its_crm_id_and_link(world, api):
    client = api("agent_a")
    made = client.post(
        "/api/v1/contacts/",
        {
            "name": "Dana Quillfeather",  # no generated name contains it
            "email": "dana@example.com",
            "external_crm_id": "SF-001",
            "external_crm_url": "https://crm.example.com/SF-001",
            "attributes": {"plan": "gold"},
        },
        format="json",
    )
    assert made.status_code == 201, made.json()
    assert made.json()["external_crm_id"] == "SF-001" and made.json()["source"] == "manual"
    taken = client.post(
        "/api/v1/contacts/", {"name": "Other", "external_crm_id": "SF-001"}, format="json"
    )
    assert taken.status_code == 400 and "external_crm_id" in taken.json()["fields"]
    assert client.post("/api/v1/contacts/", {"phone": "1"}, format="json").status_code == 400
    pk = made.json()["id"]
    patched = client.patch(f"/api/v1/contacts/{pk}/", {"is_vip": True}, format="json")
    assert patched.json()["is_vip"] is True and patched.json()["external_crm_id"] == "SF-001"
    found = client.get("/api/v1/contacts/?external_crm_id=SF-001").json()["results"]
    assert [c["id"] for c in found] == [pk]
    searched = client.get("/api/v1/contacts/?q=quillfeather").json()["results"]
    assert [c["id"] for c in searched] == [pk]


def test_merge_another_contact_into_this_one(world, api):
    client = api("agent_a")
    kept = world.conversation_a.contact
    other = IdentityFactory().contact
    ConversationFactory(channel=world.channel_a, contact=other)
    merged = client.post(f"/api/v1/contacts/{kept.pk}/merge/", {"other": other.pk}, format="json")
    assert merged.status_code == 200, merged.json()
    assert Contact.objects.get(pk=other.pk).merged_into_id == kept.pk
    assert client.get(f"/api/v1/contacts/{other.pk}/").status_code == 404
    itself = client.post(f"/api/v1/contacts/{kept.pk}/merge/", {"other": kept.pk}, format="json")
    assert itself.status_code == 409
    # A contact the agent cannot see is not there to merge.
    hidden = world.conversation_b.contact_id
    assert (
        client.post(f"/api/v1/contacts/{kept.pk}/merge/", {"other": hidden}, format="json")
    ).status_code == 404


@pytest.mark.parametrize("persona", DATA_RIGHTS)
def test_csv_export_and_data_rights_are_for_managers_and_admins(world, api, persona):
    client = api(persona)
    expected = DATA_RIGHTS[persona]
    export = client.get("/api/v1/contacts/export/")
    assert export.status_code == expected
    contact = world.conversation_a.contact
    data = client.post(f"/api/v1/contacts/{contact.pk}/export-data/")
    assert data.status_code == expected
    if expected == 200:
        rows = list(csv.reader(io.StringIO(b"".join(export.streaming_content).decode())))
        assert rows[0][:8] == [
            "id",
            "name",
            "email",
            "phone",
            "company",
            "vip",
            "external_crm_id",
            "external_crm_url",
        ]
        assert data["Content-Type"] == "application/zip"


def test_erasure_needs_the_typed_confirmation(world, api):
    client = api("manager")
    contact = world.conversation_a.contact
    url = f"/api/v1/contacts/{contact.pk}/erase/"
    refused = client.post(url, {"confirm": "nope", "understood": True}, format="json")
    assert refused.status_code == 400 and refused.json()["fields"]["confirm"]
    assert client.post(url, {"confirm": f"ERASE {contact.pk}"}, format="json").status_code == 400
    done = client.post(url, {"confirm": f"ERASE {contact.pk}", "understood": True}, format="json")
    assert done.status_code == 204
    contact.refresh_from_db()
    assert contact.email == "" and contact.name != ""
    # Team B's customer is not there for team A's manager.
    other = world.conversation_b.contact_id
    assert client.post(f"/api/v1/contacts/{other}/erase/", {}, format="json").status_code == 404


def test_a_shared_contact_is_seen_by_everyone(world, api):
    shared = ContactFactory(source="manual")
    assert api("agent_b").get(f"/api/v1/contacts/{shared.pk}/").status_code == 200
