"""Outbound webhook subscriptions: events to subscribed endpoints, signed with a timestamp,
retried, redelivered from the log, and never sent to private addresses unless allowed."""

import hashlib
import hmac
import json

import pytest
import responses
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext

from channels_ingest.pipeline import ingest
from contacts.models import Contact, SocialIdentity
from conversations.models import WebhookCall, WebhookCallStatus, WebhookEndpoint
from conversations.webhook_calls import webhook_call_deliver
from tests.factories import ContactFactory, WebhookEndpointFactory, post

pytestmark = pytest.mark.django_db

URL = "https://hooks.example.com/crm"


@pytest.fixture
def subscribed(world):
    return WebhookEndpointFactory(
        url=URL, secret="whsec-test", events=["conversation.assigned", "contact.created"]
    )


@responses.activate
def test_a_subscribed_event_is_delivered_signed_with_the_crm_id(
    world, api, subscribed, django_capture_on_commit_callbacks
):
    responses.add(responses.POST, URL, status=200)
    contact = world.conversation_a.contact
    contact.external_crm_id = "SF-42"
    contact.save()
    with django_capture_on_commit_callbacks(execute=True):
        api("agent_a").post(
            f"/api/v1/conversations/{world.conversation_a.pk}/assign/",
            {"assignee": world.agent_a.pk},
            format="json",
        )
    call = WebhookCall.objects.get(event="conversation.assigned")
    assert call.status == WebhookCallStatus.DELIVERED and call.response_status == 200
    request = responses.calls[0].request
    body = request.body
    payload = json.loads(body)
    assert payload["data"]["conversation"]["contact"]["external_crm_id"] == "SF-42"
    timestamp = request.headers["X-SCRM-Timestamp"]
    expected = hmac.new(b"whsec-test", f"{timestamp}.".encode() + body, hashlib.sha256)
    assert request.headers["X-SCRM-Signature"] == f"sha256={expected.hexdigest()}"
    assert request.headers["X-SCRM-Event"] == "conversation.assigned"


def test_unsubscribed_events_queue_nothing(world, api, subscribed):
    api("agent_a").post(
        f"/api/v1/conversations/{world.conversation_a.pk}/priority/", {"priority": 3}, format="json"
    )
    assert not WebhookCall.objects.exists()


@responses.activate
def test_a_failed_delivery_is_retried_with_backoff_then_redelivered(
    world, api, subscribed, django_capture_on_commit_callbacks
):
    responses.add(responses.POST, URL, status=503)
    with django_capture_on_commit_callbacks(execute=True):
        api("admin").post("/api/v1/contacts/", {"name": "New person"}, format="json")
    call = WebhookCall.objects.get(event="contact.created")
    assert call.status == WebhookCallStatus.PENDING and call.attempts == 1
    assert call.response_status == 503 and call.next_attempt_at > call.created_at
    responses.replace(responses.POST, URL, status=204)
    with django_capture_on_commit_callbacks(execute=True):
        redelivered = api("admin").post(f"/api/v1/webhook-calls/{call.pk}/redeliver/")
    assert redelivered.status_code == 200
    call.refresh_from_db()
    assert call.status == WebhookCallStatus.DELIVERED and call.response_status == 204
    log = api("admin").get(f"/api/v1/webhook-calls/?endpoint={subscribed.pk}").json()
    assert [row["response_status"] for row in log["results"]] == [204]


def test_the_delivery_log_page_sends_a_call_again(world, login, subscribed):
    call = WebhookCall.objects.create(
        endpoint=subscribed, key="k", event="contact.created", status=WebhookCallStatus.FAILED
    )
    client = login(world.admin)
    page = client.get(f"/routing/endpoints/{subscribed.pk}/calls/")
    assert page.status_code == 200 and "Send again" in page.content.decode()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mocked:
        mocked.add(responses.POST, URL, status=200)
        response = client.post(f"/routing/calls/{call.pk}/redeliver/")
    assert response.status_code == 302
    call.refresh_from_db()
    # Pending again, due now (its delivery runs once the page's transaction commits).
    assert call.status == WebhookCallStatus.PENDING and call.attempts == 0
    assert login(world.manager).post(f"/routing/calls/{call.pk}/redeliver/").status_code == 403


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.5/hook",
        "http://192.168.1.2/hook",
        "http://[::1]/hook",
    ],
)
def test_private_addresses_are_refused_unless_allowed(world, api, url):
    client = api("admin")
    refused = client.post(
        "/api/v1/webhook-endpoints/", {"name": "Inside", "url": url}, format="json"
    )
    assert refused.status_code == 400 and "url" in refused.json()["fields"]
    allowed = client.post(
        "/api/v1/webhook-endpoints/",
        {"name": "Inside", "url": url, "allow_private_network": True},
        format="json",
    )
    assert allowed.status_code == 201


def test_a_call_to_an_address_that_turned_private_is_refused_without_a_request(world):
    endpoint = WebhookEndpointFactory(url="http://127.0.0.1:9/hook")
    call = WebhookCall.objects.create(endpoint=endpoint, key="x", event="contact.created")
    with responses.RequestsMock():  # any request would fail the test
        call = webhook_call_deliver(call_id=call.pk)
    assert call.status == WebhookCallStatus.FAILED and call.last_error.startswith("Refused")


def test_the_endpoint_form_refuses_private_addresses(world, login):
    client = login(world.admin)
    response = client.post(
        "/routing/endpoints/new/", {"name": "x", "url": "http://10.1.2.3/", "is_active": "on"}
    )
    assert response.status_code == 200 and "private" in response.content.decode()
    assert not WebhookEndpoint.objects.exists()


def test_the_endpoint_secret_is_never_returned(world, api, subscribed):
    row = api("admin").get(f"/api/v1/webhook-endpoints/{subscribed.pk}/").json()
    assert row["has_secret"] is True and "secret" not in row
    assert "whsec" not in json.dumps(row)


def test_contact_creation_by_the_pipeline_path_stays_quiet_without_subscribers(world):
    ContactFactory()
    assert not WebhookCall.objects.exists()


# --- contact.created from ingestion and imports -------------------------------------------


@pytest.fixture
def contacts_subscribed(world):
    return WebhookEndpointFactory(url=URL, events=["contact.created"])


def _created_calls(endpoint) -> dict[int, dict]:
    return {
        call.payload["data"]["contact"]["id"]: call.payload["data"]["contact"]
        for call in WebhookCall.objects.filter(endpoint=endpoint, event="contact.created")
    }


def test_contacts_made_by_ingestion_are_announced_once_each(world, contacts_subscribed):
    known = ContactFactory(email="known@example.com")
    ingest(
        channel=world.channel_a,
        posts=[
            post("p1", author="new1"),
            post("p2", author="new2"),
            post("p3", author="new1"),
            post("p4", author="known", email="known@example.com"),
        ],
    )
    made = {SocialIdentity.objects.get(platform_user_id=u).contact_id: u for u in ("new1", "new2")}
    calls = _created_calls(contacts_subscribed)
    assert set(calls) == set(made) and known.pk not in calls
    first = min(made)
    assert calls[first]["name"] == f"Name {made[first]}" and calls[first]["email"] == ""
    ingest(channel=world.channel_a, posts=[post("p5", author="new1"), post("p6", author="new2")])
    assert WebhookCall.objects.filter(event="contact.created").count() == 2


def test_announcing_contacts_keeps_the_batch_at_a_fixed_number_of_queries(
    world, contacts_subscribed
):
    def batch(prefix: str, size: int) -> list:
        return [post(f"{prefix}{n}", author=f"{prefix}-a{n}") for n in range(size)]

    ingest(channel=world.channel_a, posts=batch("warm", 2))
    with CaptureQueriesContext(connection) as small:
        ingest(channel=world.channel_a, posts=batch("s", 3))
    with CaptureQueriesContext(connection) as large:
        ingest(channel=world.channel_a, posts=batch("l", 120))
    assert WebhookCall.objects.filter(event="contact.created").count() == 2 + 3 + 120

    def calls(captured) -> int:
        return sum("webhookcall" in q["sql"] for q in captured.captured_queries)

    assert calls(small) == 3  # the keys already stored, the insert, the new ids
    if connection.vendor == "postgresql":
        assert len(large.captured_queries) == len(small.captured_queries)
        assert calls(large) == calls(small)
    else:
        # SQLite caps bound parameters per statement, so bulk inserts go in a few chunks.
        assert len(large.captured_queries) <= len(small.captured_queries) + 12


def test_contacts_made_by_an_import_are_announced_but_updated_ones_are_not(
    world, api, contacts_subscribed, django_capture_on_commit_callbacks
):
    existing = ContactFactory(source="manual", name="Old Name", email="old@example.com")
    upload = SimpleUploadedFile(
        "people.csv",
        b"name,email\nDana Reyes,dana@example.com\nOld Name Changed,old@example.com\n",
        "text/csv",
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = api("manager").post(
            "/api/v1/contact-imports/", {"file": upload}, format="multipart"
        )
    assert response.status_code == 201, response.json()
    dana = Contact.objects.get(email="dana@example.com")
    calls = _created_calls(contacts_subscribed)
    assert calls == {
        dana.pk: {
            "id": dana.pk,
            "name": "Dana Reyes",
            "email": "dana@example.com",
            "external_crm_id": "",
            "external_crm_url": "",
        }
    }
    assert existing.pk not in calls
