"""Outbound webhooks: signing, delivery, retries with backoff, permanent failures, idempotent
enqueueing and the beat sweep. The receiver is stubbed at the HTTP layer (responses)."""

import hashlib
import hmac
import json
import time
from datetime import timedelta

import pytest
import requests
import responses
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from conversations import tasks
from conversations.models import WebhookCall, WebhookCallStatus
from conversations.webhook_calls import (
    MAX_ATTEMPTS,
    USER_AGENT,
    webhook_call_deliver,
    webhook_call_enqueue,
    webhook_calls_due,
    webhook_retry_delay,
    webhook_signature,
)
from tests.factories import WebhookEndpointFactory
from tests.plans import query_plan

pytestmark = pytest.mark.django_db

URL = "https://hooks.example.com/scrm/receiver"


@pytest.fixture
def endpoint():
    return WebhookEndpointFactory(url=URL, secret="whsec-test")


def _call(endpoint, key="k1", **fields):
    return WebhookCall.objects.create(
        endpoint=endpoint,
        key=key,
        event="escalation.opened",
        payload={"escalation": {"id": 7}, "answer_url": "https://crm.example.com/a/"},
        **fields,
    )


def _due(call):
    """Make a scheduled retry due now."""
    WebhookCall.objects.filter(pk=call.pk).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1)
    )


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body():
    body = b'{"event":"ping"}'
    # Computed outside the code under test: printf '1700000000.{"event":"ping"}' |
    # openssl dgst -sha256 -hmac whsec-test
    known = "sha256=18edb01b9146fe04b3de9e92ca1594f97bbf2547c75e7584f34d3bedfe76f0a6"
    assert webhook_signature(secret="whsec-test", timestamp=1700000000, body=body) == known
    by_hand = hmac.new(b"whsec-test", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert known == f"sha256={by_hand}"


@responses.activate
def test_a_2xx_answer_delivers_the_call_with_signed_headers(endpoint):
    responses.post(URL, status=204)
    call = _call(endpoint)

    result = webhook_call_deliver(call_id=call.pk)

    assert result.status == WebhookCallStatus.DELIVERED
    assert result.delivered_at is not None
    assert result.response_status == 204
    assert result.attempts == 1
    assert result.last_error == ""
    request = responses.calls[0].request
    headers = request.headers
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == USER_AGENT
    assert headers["X-SCRM-Event"] == "escalation.opened"
    assert headers["X-SCRM-Delivery"] == str(call.pk)
    timestamp = int(headers["X-SCRM-Timestamp"])
    assert abs(timestamp - time.time()) < 60
    expected = hmac.new(
        b"whsec-test", f"{timestamp}.".encode() + request.body, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(headers["X-SCRM-Signature"], f"sha256={expected}")
    assert json.loads(request.body) == call.payload


@responses.activate
def test_an_endpoint_without_a_secret_gets_no_signature_header(endpoint):
    endpoint.secret = ""
    endpoint.save()
    responses.post(URL, status=200)

    webhook_call_deliver(call_id=_call(endpoint).pk)

    assert "X-SCRM-Signature" not in responses.calls[0].request.headers


@responses.activate
def test_a_5xx_answer_is_retried_later_with_backoff(endpoint):
    responses.post(URL, status=503, body="upstream down")
    call = _call(endpoint)
    before = timezone.now()

    result = webhook_call_deliver(call_id=call.pk)

    assert result.status == WebhookCallStatus.PENDING
    assert result.attempts == 1
    assert result.response_status == 503
    assert "503" in result.last_error
    assert "upstream down" in result.last_error
    # 30 s for the first retry, less up to a fifth of jitter.
    wait = (result.next_attempt_at - before).total_seconds()
    assert 23 <= wait <= 31


def test_retry_delays_double_and_stop_at_an_hour():
    for attempts, base in [(1, 30), (2, 60), (3, 120), (7, 1920), (8, 3600), (12, 3600)]:
        delay = webhook_retry_delay(attempts).total_seconds()
        assert base * 0.8 <= delay <= base


@responses.activate
def test_a_call_fails_for_good_after_eight_attempts(endpoint):
    responses.post(URL, status=500)
    call = _call(endpoint)

    for _ in range(MAX_ATTEMPTS):
        result = webhook_call_deliver(call_id=call.pk)
        _due(call)

    assert MAX_ATTEMPTS == 8
    assert result.status == WebhookCallStatus.FAILED
    assert result.attempts == 8
    assert "Gave up after 8 attempts" in result.last_error
    assert len(responses.calls) == 8
    # A failed call is never sent again.
    webhook_call_deliver(call_id=call.pk)
    assert len(responses.calls) == 8


@pytest.mark.parametrize("status", [400, 401, 404, 410, 422])
@responses.activate
def test_a_4xx_answer_fails_the_call_at_once(endpoint, status):
    responses.post(URL, status=status, json={"error": "unknown department"})

    result = webhook_call_deliver(call_id=_call(endpoint).pk)

    assert result.status == WebhookCallStatus.FAILED
    assert result.attempts == 1
    assert result.response_status == status
    assert f"HTTP {status}" in result.last_error
    assert "unknown department" in result.last_error


@pytest.mark.parametrize("status", [408, 429])
@responses.activate
def test_408_and_429_are_retried(endpoint, status):
    responses.post(URL, status=status)

    result = webhook_call_deliver(call_id=_call(endpoint).pk)

    assert result.status == WebhookCallStatus.PENDING
    assert result.next_attempt_at > timezone.now()


@responses.activate
def test_a_timeout_is_retried(endpoint):
    responses.post(URL, body=requests.Timeout("read timed out"))

    result = webhook_call_deliver(call_id=_call(endpoint).pk)

    assert result.status == WebhookCallStatus.PENDING
    assert result.attempts == 1
    assert result.response_status is None
    assert result.last_error == "No answer within 10 s."
    assert result.next_attempt_at > timezone.now()


@responses.activate
def test_a_connection_error_is_retried_and_never_raised(endpoint):
    responses.post(URL, body=requests.ConnectionError("connection refused"))

    result = webhook_call_deliver(call_id=_call(endpoint).pk)

    assert result.status == WebhookCallStatus.PENDING
    assert "connection refused" in result.last_error


@responses.activate
def test_a_redirect_fails_the_call_instead_of_being_followed(endpoint):
    responses.post(URL, status=301, headers={"Location": "https://elsewhere.example.com/"})

    result = webhook_call_deliver(call_id=_call(endpoint).pk)

    assert result.status == WebhookCallStatus.FAILED
    assert "elsewhere.example.com" in result.last_error
    assert len(responses.calls) == 1


@responses.activate
def test_a_call_is_sent_once_when_two_workers_get_it(endpoint):
    responses.post(URL, status=500)
    call = _call(endpoint)

    webhook_call_deliver(call_id=call.pk)
    # The retry is not due yet: a second task for the same call does nothing.
    second = webhook_call_deliver(call_id=call.pk)

    assert len(responses.calls) == 1
    assert second.attempts == 1


@responses.activate
def test_a_switched_off_endpoint_fails_the_call_without_sending(endpoint):
    endpoint.is_active = False
    endpoint.save()

    result = webhook_call_deliver(call_id=_call(endpoint).pk)

    assert result.status == WebhookCallStatus.FAILED
    assert "switched off" in result.last_error
    assert len(responses.calls) == 0


def test_enqueueing_twice_with_one_key_stores_and_enqueues_once(
    endpoint, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as first_callbacks:
        first = webhook_call_enqueue(
            endpoint=endpoint, event="escalation.opened", payload={"a": 1}, key="esc:1:0"
        )
    with django_capture_on_commit_callbacks() as second_callbacks:
        second = webhook_call_enqueue(
            endpoint=endpoint, event="escalation.opened", payload={"a": 2}, key="esc:1:0"
        )

    assert second.pk == first.pk
    assert second.payload == {"a": 1}
    assert WebhookCall.objects.count() == 1
    assert len(first_callbacks) == 1
    assert second_callbacks == []


@responses.activate
def test_an_enqueued_call_is_delivered_once_committed(endpoint, django_capture_on_commit_callbacks):
    responses.post(URL, status=200)
    with django_capture_on_commit_callbacks(execute=True):
        call = webhook_call_enqueue(endpoint=endpoint, event="ping", payload={}, key="ping:1")
        assert len(responses.calls) == 0

    call.refresh_from_db()
    assert call.status == WebhookCallStatus.DELIVERED


def test_the_sweep_enqueues_only_pending_calls_that_are_due(
    endpoint, monkeypatch, django_assert_num_queries
):
    now = timezone.now()
    due = _call(endpoint, key="due", next_attempt_at=now - timedelta(minutes=1))
    _call(endpoint, key="later", next_attempt_at=now + timedelta(minutes=1))
    _call(
        endpoint,
        key="done",
        next_attempt_at=now - timedelta(minutes=1),
        status=WebhookCallStatus.DELIVERED,
    )
    _call(
        endpoint,
        key="failed",
        next_attempt_at=now - timedelta(minutes=1),
        status=WebhookCallStatus.FAILED,
    )
    enqueued = []
    monkeypatch.setattr(tasks.deliver_webhook_call, "delay", enqueued.append)

    with django_assert_num_queries(1):
        count = tasks.retry_due_webhook_calls()

    assert count == 1
    assert enqueued == [due.pk]


def test_the_sweep_finds_due_calls_through_the_partial_index(endpoint):
    _call(endpoint)
    with CaptureQueriesContext(connection) as captured:
        webhook_calls_due()
    assert "webhook_call_due_idx" in query_plan(captured.captured_queries[0]["sql"])


@responses.activate
def test_a_retry_after_the_sweep_delivers(endpoint):
    responses.post(URL, status=502)
    responses.post(URL, status=200)
    call = _call(endpoint)
    webhook_call_deliver(call_id=call.pk)
    _due(call)

    assert tasks.retry_due_webhook_calls() == 1  # tasks run in-process in the tests

    call.refresh_from_db()
    assert call.status == WebhookCallStatus.DELIVERED
    assert call.attempts == 2


def test_an_unexpected_error_counts_as_a_failed_attempt_and_is_recorded(endpoint, monkeypatch):
    """A bug, or a secret that no longer decrypts: the call is retried like any failure,
    gives up after the last attempt, and says why, rather than staying pending for ever."""
    from conversations import webhook_calls

    def broken(*args, **kwargs):
        raise ValueError("the secret no longer decrypts")

    monkeypatch.setattr(webhook_calls, "webhook_post", broken)
    call = _call(endpoint)
    for _ in range(MAX_ATTEMPTS + 2):
        result = webhook_call_deliver(call_id=call.pk)
        _due(call)

    assert (result.status, result.attempts) == (WebhookCallStatus.FAILED, MAX_ATTEMPTS)
    assert "ValueError: the secret no longer decrypts" in result.last_error
