"""Outbound webhook subscriptions: events to subscribed endpoints, signed with a timestamp,
retried, redelivered from the log, and never sent to private addresses unless allowed (not even
by a name that points elsewhere after the check)."""

import hashlib
import hmac
import ipaddress
import json
import socket
import ssl
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import requests
import responses
import urllib3.util.connection
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from channels_ingest.pipeline import ingest
from contacts.models import Contact, SocialIdentity
from conversations import webhook_guard
from conversations.models import WebhookCall, WebhookCallStatus, WebhookEndpoint
from conversations.webhook_calls import webhook_call_deliver
from conversations.webhook_guard import WebhookTarget, webhook_post
from governance.approvals import approval_reject, reply_submit
from governance.models import OutboundApproval, PolicyAction, PublishingPolicy
from governance.tasks import expire_approvals
from tests.factories import ContactFactory, DepartmentFactory, WebhookEndpointFactory, post

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
        # IPv6 forms that a translator on the way turns into a private IPv4 address.
        "http://[64:ff9b::a00:5]/hook",  # NAT64 of 10.0.0.5
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data",  # NAT64 of 169.254.169.254
        "http://[2002:a00:5::1]/hook",  # 6to4 of 10.0.0.5
        "http://[::127.0.0.1]/hook",  # IPv4-compatible, deprecated
        "http://[::a00:5]/hook",
        "http://[::8.8.8.8]/hook",  # no public host has such an address either
        "http://[::ffff:0:a9fe:a9fe]/latest/meta-data",  # IPv4-translated 169.254.169.254
        "http://[64:ff9b:1:7f00:0:100::]/hook",  # local-use NAT64 (/48) of 127.0.0.1
        "http://[64:ff9b:1::808:808]/hook",  # local-use NAT64: the network's own layout
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


def test_an_endpoint_keeps_its_secret_while_a_webhook_department_uses_it(world, api, subscribed):
    DepartmentFactory(name="Logistics", delivery="webhook", team=None, endpoint=subscribed)
    client = api("admin")
    url = f"/api/v1/webhook-endpoints/{subscribed.pk}/"
    refused = client.patch(url, {"secret": ""}, format="json")
    assert refused.status_code == 400
    assert refused.json()["fields"]["secret"] == [
        "Escalations to “Logistics” are posted here and must stay signed: "
        "give those departments another endpoint first."
    ]
    subscribed.refresh_from_db()
    assert subscribed.secret == "whsec-test"
    # A new secret in its place, or other changes, are fine.
    assert client.patch(url, {"secret": "rotated"}, format="json").status_code == 200
    assert client.patch(url, {"name": "Ops"}, format="json").status_code == 200
    subscribed.refresh_from_db()
    assert (subscribed.secret, subscribed.name) == ("rotated", "Ops")


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


def test_an_approval_that_expires_is_announced_as_decided_expired(world):
    WebhookEndpointFactory(url=URL, events=["approval.decided"])
    PublishingPolicy.objects.create(banned_terms=["refund"], banned_action=PolicyAction.APPROVE)
    rejected, expiring = (
        reply_submit(conversation=world.conversation_a, author=world.agent_a, body=text).approval
        for text in ("A refund", "Another refund")
    )
    approval_reject(approval=rejected, approver=world.manager, note="No")
    OutboundApproval.objects.filter(pk=expiring.pk).update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )

    assert expire_approvals.delay().get() == 1

    calls = {c.payload["data"]["approval"]["id"]: c for c in WebhookCall.objects.all()}
    assert set(calls) == {rejected.pk, expiring.pk}
    expired = calls[expiring.pk]
    assert expired.event == "approval.decided"
    assert expired.payload["event"] == "approval.decided"
    assert expired.payload["data"]["approval"] == {
        "id": expiring.pk,
        "status": "expired",
        "reasons": expiring.reasons,
        "message": expiring.message_id,
        "conversation": world.conversation_a.pk,
        "channel": world.channel_a.pk,
        "requested_by": world.agent_a.pk,
        "decided_by": None,
    }
    assert set(expired.payload["data"]["approval"]) == set(
        calls[rejected.pk].payload["data"]["approval"]
    )
    assert expire_approvals.delay().get() == 0
    assert WebhookCall.objects.count() == 2


def test_an_expiry_without_subscribers_queues_nothing(world):
    WebhookEndpointFactory(url=URL, events=["approval.requested"])
    PublishingPolicy.objects.create(banned_terms=["refund"], banned_action=PolicyAction.APPROVE)
    held = reply_submit(conversation=world.conversation_a, author=world.agent_a, body="A refund")
    OutboundApproval.objects.filter(pk=held.approval.pk).update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )
    assert expire_approvals.delay().get() == 1
    assert list(WebhookCall.objects.values_list("event", flat=True)) == ["approval.requested"]


# --- DNS rebinding: a call connects to the address that was checked ---------------------------

PUBLIC, INSIDE = "93.184.216.34", "10.0.0.7"


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@pytest.fixture
def rebinding_dns(monkeypatch):
    """A name server that answers the first lookup of a name with a public address and every
    later one with a private address; returns the names looked up."""
    lookups = []

    def resolve(host: str) -> list[str]:
        if _is_address(host):
            return [host]
        lookups.append(host)
        return [PUBLIC] if len(lookups) == 1 else [INSIDE]

    monkeypatch.setattr(webhook_guard, "_addresses", resolve)
    return resolve, lookups


@pytest.fixture
def connections(monkeypatch, rebinding_dns):
    """Records where each connection would go (resolving names through the same name
    server, as the operating system would) and refuses it: no network in tests."""
    resolve, _ = rebinding_dns
    attempts = []

    def connect(address, *args, **kwargs):
        host, port = address
        attempts.append((resolve(host)[0], port))
        raise ConnectionRefusedError("no network in tests")

    monkeypatch.setattr(urllib3.util.connection, "create_connection", connect)
    return attempts


def test_a_name_that_turns_private_after_the_check_is_not_reached_there(
    world, rebinding_dns, connections
):
    _, lookups = rebinding_dns
    endpoint = WebhookEndpointFactory(url=URL)
    call = WebhookCall.objects.create(endpoint=endpoint, key="rebind", event="contact.created")

    call = webhook_call_deliver(call_id=call.pk)

    assert connections == [(PUBLIC, 443)]
    assert lookups == ["hooks.example.com"]
    assert call.status == WebhookCallStatus.PENDING and "ConnectionError" in call.last_error


def test_each_attempt_checks_the_name_again(world, rebinding_dns, connections):
    endpoint = WebhookEndpointFactory(url=URL)
    call = WebhookCall.objects.create(endpoint=endpoint, key="again", event="contact.created")
    webhook_call_deliver(call_id=call.pk)
    WebhookCall.objects.filter(pk=call.pk).update(next_attempt_at=timezone.now())

    call = webhook_call_deliver(call_id=call.pk)

    assert connections == [(PUBLIC, 443)]
    assert call.status == WebhookCallStatus.FAILED and INSIDE in call.last_error


def test_an_endpoint_allowed_inside_connects_by_name(world, rebinding_dns, connections):
    _, lookups = rebinding_dns
    endpoint = WebhookEndpointFactory(url=URL, allow_private_network=True)
    call = WebhookCall.objects.create(endpoint=endpoint, key="inside", event="contact.created")
    webhook_call_deliver(call_id=call.pk)
    assert connections == [(PUBLIC, 443)] and lookups == ["hooks.example.com"]


def test_the_next_checked_address_is_tried_only_when_no_connection_was_made(monkeypatch):
    attempts = []

    def connect(address, *args, **kwargs):
        attempts.append(address[0])
        if address[0] == "192.0.2.1":
            raise ConnectionRefusedError("refused")
        ours, theirs = socket.socketpair()
        theirs.close()  # connected, then the other side hangs up without answering
        return ours

    monkeypatch.setattr(urllib3.util.connection, "create_connection", connect)
    target = WebhookTarget(
        url="http://hooks.example.com/crm", addresses=("192.0.2.1", "198.51.100.1", "203.0.113.1")
    )
    with pytest.raises(requests.ConnectionError):
        webhook_post(target, data=b"{}", headers={}, timeout=5)
    # The body may have reached the second address: a third would get it twice.
    assert attempts == ["192.0.2.1", "198.51.100.1"]


def _certificate(tmp_path, name: str) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


@pytest.fixture
def tls_receiver(tmp_path, monkeypatch):
    """An HTTPS receiver on the loopback address with a certificate for hooks.example.com,
    trusted by the client; records the server name asked for and the request's Host."""
    cert, key = _certificate(tmp_path, "hooks.example.com")
    seen = {}
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, name, ctx: seen.update(sni=name)

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            seen["host"] = self.headers["Host"]
            seen["body"] = self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", cert)
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    yield server.server_address[1], seen
    server.shutdown()
    server.server_close()
    thread.join()


def test_a_pinned_call_speaks_tls_to_the_host_name_at_the_checked_address(tls_receiver):
    port, seen = tls_receiver
    target = WebhookTarget(url=f"https://hooks.example.com:{port}/crm", addresses=("127.0.0.1",))
    response = webhook_post(target, data=b'{"ok":1}', headers={}, timeout=5)
    assert response.status_code == 204
    assert seen == {
        "sni": "hooks.example.com",
        "host": f"hooks.example.com:{port}",
        "body": b'{"ok":1}',
    }


def test_a_pinned_call_checks_the_certificate_against_the_host_name(tls_receiver):
    port, seen = tls_receiver
    target = WebhookTarget(url=f"https://other.example.com:{port}/crm", addresses=("127.0.0.1",))
    with pytest.raises(requests.exceptions.SSLError):
        webhook_post(target, data=b"{}", headers={}, timeout=5)
    assert "body" not in seen


def test_a_public_address_behind_nat64_is_allowed():
    from conversations.webhook_guard import webhook_url_problem

    assert webhook_url_problem("http://[64:ff9b::808:808]/hook", allow_private=False) is None
