"""Adding and editing contacts by hand, and who may export and import."""

import pytest

from contacts.models import Contact, ContactImport, ContactSource
from governance.models import Role
from tests.factories import ContactFactory, UserFactory

pytestmark = pytest.mark.django_db


def _form(**values):
    data = {
        "name": "Dana Reyes",
        "email": "dana@example.com",
        "phone": "+1 555 0100",
        "company": "Acme",
        "external_crm_id": "",
        "external_crm_url": "",
        "attributes": "",
    }
    return data | values


def test_any_logged_in_user_may_add_a_contact_by_hand(login, world):
    client = login(world.agent_a)
    response = client.post(
        "/contacts/new/",
        _form(
            is_vip="on",
            external_crm_id="CRM-7",
            external_crm_url="https://crm.example.com/7",
            attributes="plan: gold\nregion: EMEA",
        ),
    )
    contact = Contact.objects.get(email="dana@example.com")
    assert response.status_code == 302
    assert response["Location"] == f"/contacts/{contact.pk}/"
    assert contact.source == ContactSource.MANUAL
    assert contact.created_by == world.agent_a
    assert contact.is_vip
    assert (contact.external_crm_id, contact.external_crm_url) == (
        "CRM-7",
        "https://crm.example.com/7",
    )
    assert contact.attributes == {"plan": "gold", "region": "EMEA"}
    page = client.get(response["Location"]).content.decode()
    assert "Dana Reyes" in page and "Added by hand" in page and "plan" in page


def test_a_contact_added_by_hand_is_visible_to_every_team(login, world):
    login(world.agent_a).post("/contacts/new/", _form())
    contact = Contact.objects.get(email="dana@example.com")
    client = login(world.agent_b)
    assert client.get(f"/contacts/{contact.pk}/").status_code == 200
    assert f"/contacts/{contact.pk}/" in client.get("/contacts/").content.decode()


def test_a_contact_needs_a_name_or_an_email(login, world):
    response = login(world.agent_a).post("/contacts/new/", _form(name="", email=""))
    assert response.status_code == 200
    assert "Give a name or an email address." in response.content.decode()
    assert not Contact.objects.filter(source=ContactSource.MANUAL).exists()


def test_an_email_alone_is_enough(login, world):
    response = login(world.agent_a).post("/contacts/new/", _form(name=""))
    assert response.status_code == 302
    assert str(Contact.objects.get(email="dana@example.com")).startswith("Contact #")


def test_invalid_email_and_crm_link_are_shown_next_to_their_fields(login, world):
    response = login(world.agent_a).post(
        "/contacts/new/", _form(email="dana@", external_crm_url="not a link")
    )
    content = response.content.decode()
    assert response.status_code == 200
    assert "Enter a valid email address." in content
    assert "Enter a valid URL." in content
    assert 'role="alert"' in content


def test_malformed_attribute_lines_are_reported_by_line(login, world):
    response = login(world.agent_a).post(
        "/contacts/new/", _form(attributes="plan: gold\njust words\nplan: silver\n: empty")
    )
    content = response.content.decode()
    assert "Line 2: write key: value." in content
    assert "Line 3: “plan” is already set above." in content
    assert "Line 4: write key: value." in content
    assert not Contact.objects.filter(source=ContactSource.MANUAL).exists()


def test_a_crm_id_another_contact_holds_is_refused(login, world):
    ContactFactory(external_crm_id="CRM-1")
    response = login(world.agent_a).post("/contacts/new/", _form(external_crm_id="CRM-1"))
    assert response.status_code == 200
    assert "Another contact already has this CRM id." in response.content.decode()


def test_an_agent_edits_a_contact_of_their_teams(login, world):
    contact = world.conversation_a.contact
    contact.attributes = {"orders": 3, "tier": "gold"}
    contact.save()
    client = login(world.agent_a)
    form_page = client.get(f"/contacts/{contact.pk}/edit/").content.decode()
    assert "orders: 3" in form_page

    response = client.post(
        f"/contacts/{contact.pk}/edit/",
        _form(name="Renamed", attributes="orders: 3\ntier: platinum\nnew: yes"),
    )
    assert response.status_code == 302
    contact.refresh_from_db()
    assert contact.name == "Renamed"
    assert contact.source == ContactSource.SOCIAL
    # An untouched number stays a number; edited values are text.
    assert contact.attributes == {"orders": 3, "tier": "platinum", "new": "yes"}


def test_editing_keeps_the_contacts_own_crm_id(login, world):
    contact = world.conversation_a.contact
    contact.external_crm_id = "CRM-9"
    contact.save()
    response = login(world.agent_a).post(
        f"/contacts/{contact.pk}/edit/", _form(external_crm_id="CRM-9")
    )
    assert response.status_code == 302


@pytest.mark.parametrize("method", ["get", "post"])
def test_editing_a_contact_the_user_may_not_see_is_404(login, world, method):
    contact = world.conversation_a.contact
    client = login(world.agent_b)
    response = getattr(client, method)(f"/contacts/{contact.pk}/edit/", _form(name="Hijacked"))
    assert response.status_code == 404
    contact.refresh_from_db()
    assert contact.name != "Hijacked"


def test_the_list_and_detail_link_to_the_forms(login, world):
    client = login(world.agent_a)
    assert 'href="/contacts/new/"' in client.get("/contacts/").content.decode()
    contact = world.conversation_a.contact
    detail = client.get(f"/contacts/{contact.pk}/").content.decode()
    assert f'href="/contacts/{contact.pk}/edit/"' in detail


@pytest.mark.parametrize(("persona", "shown"), [("agent_a", False), ("manager", True)])
def test_export_and_import_links_show_only_to_managers_and_admins(login, world, persona, shown):
    page = login(world.persona(persona)).get("/contacts/").content.decode()
    assert ('href="/contacts/export.csv"' in page) is shown
    assert ('href="/contacts/imports/"' in page) is shown


@pytest.mark.parametrize("persona", ["agent_a", "agent_b"])
def test_agents_may_not_export_or_import(login, world, persona):
    client = login(world.persona(persona))
    job = ContactImport.objects.create(created_by=world.persona(persona), file_name="x.csv")
    assert client.get("/contacts/export.csv").status_code == 403
    assert client.get("/contacts/imports/").status_code == 403
    assert client.post("/contacts/imports/", {}).status_code == 403
    assert client.get(f"/contacts/imports/{job.pk}/").status_code == 403
    assert client.get(f"/contacts/imports/{job.pk}/progress/").status_code == 403


@pytest.mark.parametrize("persona", ["manager", "admin"])
def test_managers_and_admins_may_export_and_import(login, world, persona):
    client = login(world.persona(persona))
    assert client.get("/contacts/export.csv").status_code == 200
    assert client.get("/contacts/imports/").status_code == 200


def test_a_manager_follows_their_own_imports_and_admins_all(login, world):
    other_manager = UserFactory(role=Role.MANAGER)
    job = ContactImport.objects.create(created_by=other_manager, file_name="theirs.csv")
    assert login(world.manager).get(f"/contacts/imports/{job.pk}/").status_code == 404
    assert "theirs.csv" not in login(world.manager).get("/contacts/imports/").content.decode()
    assert login(other_manager).get(f"/contacts/imports/{job.pk}/").status_code == 200
    assert login(world.admin).get(f"/contacts/imports/{job.pk}/").status_code == 200
