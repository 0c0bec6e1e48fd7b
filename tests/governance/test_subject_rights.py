"""Data-subject rights: a contact's data as a download, and its irreversible erasure."""

import csv
import io
import json
import zipfile
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.apps import apps
from django.db import models
from django.utils import timezone

from channels_ingest.models import DeadLetter, DeadLetterStatus, WebhookDelivery, WebhookStatus
from channels_ingest.pipeline import ingest
from contacts.models import Contact, MergeSuggestion, SocialIdentity
from contacts.services import contact_merge
from conversations.models import (
    Conversation,
    ConversationEvent,
    DeliveryStatus,
    Direction,
    Escalation,
    EscalationStatus,
    EscalationTrigger,
    EventKind,
    Message,
    MessageKind,
    Notification,
    Status,
    WebhookCall,
    WebhookCallStatus,
)
from governance.models import ApprovalStatus, AuditEntry, OutboundApproval
from governance.subject_rights import (
    ERASED,
    ERASED_ATTRIBUTE,
    contact_data_export,
    contact_erase,
)
from tests.factories import (
    ContactFactory,
    ConversationFactory,
    IdentityFactory,
    MessageFactory,
    WebhookEndpointFactory,
    post,
)
from tests.governance.test_retention import kpi_totals

pytestmark = pytest.mark.django_db

USER_ID = "998877665544"
ALIAS_USER_ID = "uid-zeb-alias-4321"
# Everything that could identify the person or repeat what was said to or about them.
TRACES = (
    "Zebulon",
    "Quixote",
    "zebulon.q@unique-example.org",
    "7700 900123",
    "Quixotic Widgets",
    "zq-gold-7781",
    "CRM-ZQ-5561",
    "zebq_unique",
    USER_ID,
    "QX-4417",
    "zeb_alias_handle",
    ALIAS_USER_ID,
    "zeb.alias@unique-example.org",
)


@dataclass
class Person:
    contact: Contact
    alias: Contact
    on_a: Conversation
    on_b: Conversation
    elsewhere: Conversation
    other_message: Message
    queued: Message
    held: Message


@pytest.fixture
def person(world):
    now = timezone.now()
    contact = ContactFactory(
        name="Zebulon Quixote-Marsh",
        email="zebulon.q@unique-example.org",
        phone="+44 7700 900123",
        company="Quixotic Widgets",
        attributes={"loyalty": "zq-gold-7781"},
        is_vip=True,
        external_crm_id="CRM-ZQ-5561",
        external_crm_url="https://crm.example.com/CRM-ZQ-5561",
    )
    identity = IdentityFactory(
        contact=contact,
        platform_user_id=USER_ID,
        handle="zebq_unique",
        display_name="Zebulon Q",
        profile_url="https://social.example.com/zebq_unique",
    )
    alias = ContactFactory(name="Zeb Alias Quixote", email="zeb.alias@unique-example.org")
    alias_identity = IdentityFactory(
        contact=alias, platform_user_id=ALIAS_USER_ID, handle="zeb_alias_handle"
    )
    olga = IdentityFactory(contact=ContactFactory(name="Olga Other"), handle="olga_o")

    on_a = ConversationFactory(
        channel=world.channel_a,
        contact=contact,
        team=world.team_a,
        subject="Zebulon: parcel QX-4417 missing",
        last_message_preview="Zebulon, one more thing",
        thread_key=f"dm:{USER_ID}",
        status=Status.OPEN,
        message_count=5,
        inbound_count=2,
        first_response_at=now - timedelta(hours=1),
        created_at=now - timedelta(hours=3),
    )
    MessageFactory(
        conversation=on_a,
        author_identity=identity,
        kind=MessageKind.DM,
        body="Hi, Zebulon here, order QX-4417 never came",
        raw={"from": {"id": USER_ID, "name": "Zebulon Q"}, "text": "order QX-4417"},
        created_at=now - timedelta(hours=3),
    )
    other_message = MessageFactory(
        conversation=on_a,
        author_identity=olga,
        body="Same problem here, my order is late too",
        created_at=now - timedelta(hours=2, minutes=30),
    )
    MessageFactory(
        conversation=on_a,
        direction=Direction.OUT,
        kind=MessageKind.DM,
        author_user=world.agent_a,
        external_id=None,
        body="Sorry Zebulon, refunding QX-4417",
        raw={"id": "sent-1", "recipient": USER_ID},
        delivery_status=DeliveryStatus.SENT,
        created_at=now - timedelta(hours=1),
    )
    MessageFactory(
        conversation=on_a,
        direction=Direction.OUT,
        kind=MessageKind.NOTE,
        author_user=world.agent_a,
        external_id=None,
        body="Zebulon is a repeat complainer",
        delivery_status=DeliveryStatus.SENT,
        created_at=now - timedelta(minutes=50),
    )
    queued = MessageFactory(
        conversation=on_a,
        direction=Direction.OUT,
        kind=MessageKind.DM,
        author_user=world.agent_a,
        external_id=None,
        body="Zebulon, one more thing",
        delivery_status=DeliveryStatus.QUEUED,
        created_at=now - timedelta(minutes=10),
    )
    held = MessageFactory(
        conversation=on_a,
        direction=Direction.OUT,
        kind=MessageKind.DM,
        author_user=world.agent_a,
        external_id=None,
        body="Zebulon, your card QX-4417 is fine",
        delivery_status=DeliveryStatus.PENDING_APPROVAL,
        created_at=now - timedelta(minutes=5),
    )
    OutboundApproval.objects.create(
        message=held,
        requested_by=world.agent_a,
        original_body="Zebulon, your card QX-4417",
        expires_at=now + timedelta(days=1),
    )
    escalation = Escalation.objects.create(
        conversation=on_a,
        trigger=EscalationTrigger.AGENT,
        reason="Zebulon wants a refund for QX-4417",
        answer="Refund QX-4417 approved for Zebulon",
        answered_by_name="Lena from billing",
        status=EscalationStatus.RETURNED,
    )
    ConversationEvent.objects.create(
        conversation=on_a,
        kind=EventKind.ESCALATED,
        actor=world.agent_a,
        data={"escalation": escalation.pk, "reason": "Zebulon wants a refund", "level": 0},
    )
    Notification.objects.create(
        recipient=world.manager,
        conversation=on_a,
        actor=world.agent_a,
        text="bob mentioned you: Zebulon is a repeat complainer",
    )
    WebhookCall.objects.create(
        endpoint=WebhookEndpointFactory(),
        key="escalation:1:0",
        event="escalation.opened",
        payload={
            "conversation": {"id": on_a.pk, "subject": "Zebulon: parcel QX-4417 missing"},
            "contact": {"name": "Zebulon Quixote-Marsh", "handles": ["@zebq_unique"]},
        },
        status=WebhookCallStatus.PENDING,
    )
    on_b = ConversationFactory(
        channel=world.channel_b,
        contact=alias,
        subject="Zeb Alias Quixote asks about QX-4417",
        last_message_preview="Zeb Alias Quixote asks about QX-4417",
    )
    MessageFactory(
        conversation=on_b,
        author_identity=alias_identity,
        body="Zeb Alias Quixote asks about QX-4417",
    )
    elsewhere = ConversationFactory(
        channel=world.channel_a,
        contact=olga.contact,
        subject="Olga's late order",
        last_message_preview="Zebulon chimes in: QX-4417 too",
    )
    MessageFactory(conversation=elsewhere, author_identity=olga, body="Olga's late order")
    MessageFactory(
        conversation=elsewhere, author_identity=identity, body="Zebulon chimes in: QX-4417 too"
    )
    DeadLetter.objects.create(
        channel=world.channel_a,
        source="webhook",
        raw=json.dumps({"from": {"id": USER_ID}, "text": "Zebulon QX-4417"}),
        error="Unknown field",
    )
    WebhookDelivery.objects.create(
        channel=world.channel_a,
        body=json.dumps({"from": {"id": ALIAS_USER_ID}, "text": "Zeb Alias Quixote"}),
        status=WebhookStatus.PROCESSED,
    )
    unrelated_letter = DeadLetter.objects.create(
        channel=world.channel_a, source="poll", raw='{"from": {"id": "42"}}', error="x"
    )
    suspect = IdentityFactory(handle="suspect_handle_2")
    low, high = sorted((contact.pk, suspect.contact_id))
    MergeSuggestion.objects.create(
        contact_id=low, other_id=high, reason="Same handle @zebq_unique on Demo and X"
    )
    # The alias was merged into the contact: one person, whose conversations moved with it.
    contact_merge(merged=alias, kept=contact, actor=world.manager)
    assert unrelated_letter.raw
    return Person(
        contact=contact,
        alias=alias,
        on_a=on_a,
        on_b=on_b,
        elsewhere=elsewhere,
        other_message=other_message,
        queued=queued,
        held=held,
    )


def _text_columns(model):
    return [
        f.attname
        for f in model._meta.concrete_fields
        if isinstance(f, models.CharField | models.TextField | models.JSONField)
    ]


def traces_left(needles):
    """Every stored text value (all models, all rows) that holds one of the needles."""
    found = []
    for model in apps.get_models():
        columns = _text_columns(model)
        if not columns or model._meta.proxy:
            continue
        for row in model._base_manager.values_list("pk", *columns):
            for name, value in zip(columns, row[1:], strict=True):
                text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
                for needle in needles:
                    if needle.lower() in (text or "").lower():
                        found.append(f"{model._meta.label}#{row[0]}.{name}: {needle}")
    return found


# --- Export ------------------------------------------------------------------------------


def _archive(data: bytes):
    archive = zipfile.ZipFile(io.BytesIO(data))
    return archive, json.loads(archive.read("contact.json"))


def test_the_export_holds_everything_about_the_person(world, person):
    archive, data = _archive(contact_data_export(contact=person.contact, actor=world.admin))

    assert set(archive.namelist()) == {"contact.json", "messages.csv", "identities.csv"}
    assert data["complete"] is True
    assert data["contact"]["email"] == "zebulon.q@unique-example.org"
    assert data["contact"]["attributes"]["loyalty"] == "zq-gold-7781"
    assert [c["name"] for c in data["merged_contacts"]] == ["Zeb Alias Quixote"]
    assert {i["handle"] for i in data["identities"]} == {"zebq_unique", "zeb_alias_handle"}
    conversations = {c["id"]: c for c in data["conversations"]}
    assert set(conversations) == {person.on_a.pk, person.on_b.pk}
    bodies = [m["body"] for m in conversations[person.on_a.pk]["messages"]]
    assert "Hi, Zebulon here, order QX-4417 never came" in bodies
    assert "Sorry Zebulon, refunding QX-4417" in bodies
    assert "Zebulon is a repeat complainer" in bodies
    # What someone else wrote in the same thread is theirs, not this person's.
    assert person.other_message.body not in json.dumps(data)
    assert conversations[person.on_a.pk]["escalations"][0]["reason"].startswith("Zebulon wants")
    assert {e["kind"] for e in conversations[person.on_a.pk]["events"]} >= {"escalated"}
    assert [m["body"] for m in data["messages_in_other_conversations"]] == [
        "Zebulon chimes in: QX-4417 too"
    ]
    assert [(m["kept"], m["merged"]) for m in data["merges"]] == [
        (person.contact.pk, person.alias.pk)
    ]
    rows = list(csv.DictReader(io.StringIO(archive.read("messages.csv").decode("utf-8-sig"))))
    assert "Sorry Zebulon, refunding QX-4417" in {r["body"] for r in rows}
    identities = list(
        csv.DictReader(io.StringIO(archive.read("identities.csv").decode("utf-8-sig")))
    )
    assert {r["platform_user_id"] for r in identities} == {USER_ID, ALIAS_USER_ID}


def test_the_export_is_audited_without_personal_data(world, person):
    contact_data_export(contact=person.contact, actor=world.admin)

    entry = AuditEntry.objects.get(action="contact.exported")
    assert (entry.actor, entry.object_id) == (world.admin, str(person.contact.pk))
    assert entry.data["complete"] is True and entry.data["conversations"] == 2
    assert not [t for t in TRACES if t.lower() in json.dumps(entry.data).lower()]
    assert "Zebulon" not in entry.object_repr


def test_a_managers_export_covers_the_channels_they_may_see(world, person):
    _, data = _archive(contact_data_export(contact=person.contact, actor=world.manager))

    assert data["complete"] is False
    assert [c["id"] for c in data["conversations"]] == [person.on_a.pk]


def test_the_export_page_downloads_a_zip(login, world, person):
    client = login(world.manager)
    url = f"/contacts/{person.contact.pk}/export-data/"

    assert "contact.json" in client.get(url).content.decode()
    response = client.post(url)

    assert response["Content-Type"] == "application/zip"
    assert f"contact-{person.contact.pk}-data-" in response["Content-Disposition"]
    _, data = _archive(response.content)
    assert data["contact"]["id"] == person.contact.pk


# --- Erasure -----------------------------------------------------------------------------


def test_erasure_leaves_no_trace_of_the_person(world, person):
    assert traces_left(TRACES)  # the scan sees them before

    contact_erase(contact=person.contact, actor=world.admin)

    assert traces_left(TRACES) == []
    contact = Contact.objects.get(pk=person.contact.pk)
    assert contact.name == f"Erased contact #{contact.pk}"
    assert (contact.email, contact.phone, contact.company, contact.is_vip) == ("", "", "", False)
    assert list(contact.attributes) == [ERASED_ATTRIBUTE]
    assert not SocialIdentity.objects.filter(contact__in=[person.contact, person.alias]).exists()
    assert not MergeSuggestion.objects.filter(contact=person.contact).exists()


def test_erasure_keeps_the_facts_and_what_others_wrote(world, person):
    on_a = Conversation.objects.get(pk=person.on_a.pk)
    messages_before = list(
        Message.objects.filter(conversation=on_a)
        .order_by("pk")
        .values_list("pk", "direction", "created_at")
    )

    contact_erase(contact=person.contact, actor=world.admin)

    person.on_a.refresh_from_db()
    assert (person.on_a.status, person.on_a.message_count, person.on_a.inbound_count) == (
        on_a.status,
        on_a.message_count,
        on_a.inbound_count,
    )
    assert person.on_a.first_response_at == on_a.first_response_at
    assert (person.on_a.subject, person.on_a.last_message_preview) == ("", "")
    assert person.on_a.thread_key == f"dm:erased-{person.on_a.pk}"
    assert (
        list(
            Message.objects.filter(conversation=on_a)
            .order_by("pk")
            .values_list("pk", "direction", "created_at")
        )
        == messages_before
    )
    person.other_message.refresh_from_db()
    assert person.other_message.body == "Same problem here, my order is late too"
    assert Message.objects.filter(conversation=person.elsewhere, body="Olga's late order").exists()
    escalation = Escalation.objects.get(conversation=on_a)
    assert (escalation.reason, escalation.answer) == (ERASED, ERASED)
    assert escalation.status == EscalationStatus.RETURNED


def test_replies_not_sent_yet_are_stopped(world, person):
    contact_erase(contact=person.contact, actor=world.admin)

    person.queued.refresh_from_db()
    person.held.refresh_from_db()
    assert person.queued.delivery_status == DeliveryStatus.FAILED
    assert person.held.delivery_status == DeliveryStatus.REJECTED
    assert OutboundApproval.objects.get(message=person.held).status == ApprovalStatus.REJECTED
    call = WebhookCall.objects.get()
    assert call.status == WebhookCallStatus.FAILED
    assert call.payload["conversation"] == {"id": person.on_a.pk}
    assert DeadLetter.objects.get(raw=ERASED).status == DeadLetterStatus.DISCARDED
    assert DeadLetter.objects.filter(raw='{"from": {"id": "42"}}').exists()


def test_erasure_is_audited_with_counts_only(world, person):
    contact_erase(contact=person.contact, actor=world.manager)

    entry = AuditEntry.objects.get(action="contact.erased")
    assert (entry.actor, entry.object_id) == (world.manager, str(person.contact.pk))
    assert entry.data["identities"] == 2 and entry.data["contacts"] == 2
    # Five in the conversation on A (not the other customer's), one on B, one elsewhere.
    assert entry.data["messages"] == 7
    assert entry.data["dead_letters"] == 1 and entry.data["webhook_deliveries"] == 1


def test_kpi_totals_are_identical_after_erasure(world, person):
    before = {user: kpi_totals(user) for user in (world.admin, world.manager)}

    contact_erase(contact=person.contact, actor=world.admin)

    assert {user: kpi_totals(user) for user in before} == before


def test_pages_still_open_for_an_erased_contact(login, world, person):
    contact_erase(contact=person.contact, actor=world.admin)

    for user in (world.admin, world.agent_a):
        client = login(user)
        page = client.get(f"/contacts/{person.contact.pk}/")
        assert page.status_code == 200
        assert f"Erased contact #{person.contact.pk}" in page.content.decode()
        conversation = client.get(f"/inbox/{person.on_a.pk}/")
        assert conversation.status_code == 200
        assert "Zebulon" not in conversation.content.decode()


def test_a_new_message_from_an_erased_account_makes_a_new_contact(world, person):
    contact_erase(contact=person.contact, actor=world.admin)

    ingest(
        channel=world.channel_a,
        posts=[post("after-erasure-1", author=USER_ID, kind="dm", body="Hello again")],
    )

    message = Message.objects.get(external_id="after-erasure-1")
    assert message.conversation_id != person.on_a.pk
    assert message.author_identity.contact_id not in (person.contact.pk, person.alias.pk)
    assert Conversation.objects.get(pk=person.on_a.pk).message_count == person.on_a.message_count


# --- The two confirmations ---------------------------------------------------------------


def _erased(contact: Contact) -> bool:
    contact.refresh_from_db()
    return ERASED_ATTRIBUTE in contact.attributes


def test_the_first_confirmation_needs_the_name_and_the_tick(login, world, person):
    client = login(world.admin)
    url = f"/contacts/{person.contact.pk}/erase/"

    wrong_name = client.post(url, {"confirm_text": "Zebulon", "understood": "yes"})
    no_tick = client.post(url, {"confirm_text": "Zebulon Quixote-Marsh"})

    assert "Type the contact&#x27;s name" in wrong_name.content.decode()
    assert "Tick the box" in no_tick.content.decode()
    assert "Erase now" not in wrong_name.content.decode() + no_tick.content.decode()
    assert not _erased(person.contact)


def test_erasure_needs_the_final_confirmation_with_its_token(login, world, person):
    client = login(world.admin)
    pk = person.contact.pk

    missing = client.post(f"/contacts/{pk}/erase/confirm/")
    assert missing.status_code == 302 and missing["Location"] == f"/contacts/{pk}/erase/"
    first = client.post(
        f"/contacts/{pk}/erase/", {"confirm_text": f"ERASE {pk}", "understood": "yes"}
    )
    assert "Erase now" in first.content.decode()
    forged = client.post(f"/contacts/{pk}/erase/confirm/", {"token": "guessed"})
    assert forged.status_code == 302
    assert not _erased(person.contact)
    # A wrong token used the issued one up: the final page's token no longer works either.
    stale = first.context["token"]
    client.post(f"/contacts/{pk}/erase/confirm/", {"token": stale})
    assert not _erased(person.contact)

    first = client.post(
        f"/contacts/{pk}/erase/",
        {"confirm_text": "  zebulon   quixote-marsh ", "understood": "yes"},
    )
    response = client.post(f"/contacts/{pk}/erase/confirm/", {"token": first.context["token"]})

    assert response.status_code == 302 and response["Location"] == f"/contacts/{pk}/"
    assert _erased(person.contact)
    assert AuditEntry.objects.filter(action="contact.erased", actor=world.admin).count() == 1


def test_a_token_is_for_one_contact_only(login, world, person):
    client = login(world.admin)
    other = world.conversation_a.contact
    first = client.post(
        f"/contacts/{other.pk}/erase/", {"confirm_text": f"ERASE {other.pk}", "understood": "yes"}
    )

    client.post(f"/contacts/{person.contact.pk}/erase/confirm/", {"token": first.context["token"]})

    assert not _erased(person.contact)


def test_the_contact_page_offers_export_and_erasure_to_managers_only(login, world, person):
    url = f"/contacts/{person.contact.pk}/"
    manager_page = login(world.manager).get(url).content.decode()
    agent_page = login(world.agent_a).get(url).content.decode()

    assert "Export data" in manager_page and "Erase…" in manager_page
    assert "Export data" not in agent_page and "Erase…" not in agent_page
