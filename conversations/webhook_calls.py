"""Outbound webhooks: signed JSON POSTs to outside systems, retried until they are accepted.

Each call is a row (``WebhookCall``) whose unique ``key`` makes a repeated request harmless.
A worker claims a due call with a conditional update, posts it once, and records what
happened; a call that may still succeed gets a later ``next_attempt_at``, and the beat sweep
(``webhook_calls_due``) enqueues it again then, so retries survive worker restarts.

How a receiver verifies a call
------------------------------
Every request carries::

    Content-Type: application/json
    User-Agent: SocialCRM-Webhook/1
    X-SCRM-Event: escalation.opened          (what happened)
    X-SCRM-Delivery: 42                      (the call id: the same on every retry)
    X-SCRM-Timestamp: 1700000000             (unix seconds when this attempt was sent)
    X-SCRM-Signature: sha256=<hex>           (only when the endpoint has a secret)

where ``<hex>`` is HMAC-SHA256, keyed with the endpoint's secret, of the timestamp, a dot, and
the raw request body, exactly as received. In Python::

    expected = "sha256=" + hmac.new(
        secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256
    ).hexdigest()
    ok = hmac.compare_digest(expected, request.headers["X-SCRM-Signature"])

Reject requests whose timestamp is more than a few minutes old (replays), and treat
``X-SCRM-Delivery`` as an idempotency key: a retry after a lost response repeats the call.
Answer 2xx to accept; 408, 429 and 5xx are retried; any other 4xx fails the call for good.
"""

import hashlib
import hmac
import json
import logging
import random
import time
from datetime import datetime, timedelta
from typing import Any

import requests
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from conversations.models import WebhookCall, WebhookCallStatus, WebhookEndpoint
from conversations.webhook_guard import (
    RefusedAddress,
    UnresolvedHost,
    webhook_post,
    webhook_target,
)

logger = logging.getLogger(__name__)

USER_AGENT = "SocialCRM-Webhook/1"
TIMEOUT_SECONDS = 10
MAX_ATTEMPTS = 8
BACKOFF_BASE_SECONDS = 30
BACKOFF_MAX_SECONDS = 3600
# A claimed call is not due again for this long: longer than a request can take, so no other
# worker takes it meanwhile, yet a call whose worker died is retried by the sweep afterwards.
CLAIM_LEASE = timedelta(minutes=5)
# Statuses that may pass: the receiver is busy, slow or rate limiting us.
_RETRYABLE_STATUSES = frozenset({408, 429})
_ERROR_LENGTH = 300


def webhook_signature(*, secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-SCRM-Signature`` header value: ``sha256=`` and the hex HMAC-SHA256, keyed with
    ``secret``, of ``f"{timestamp}."`` followed by the raw body. Receivers compute the same
    over the bytes they received and compare with ``hmac.compare_digest``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def webhook_call_enqueue(
    *, endpoint: WebhookEndpoint, event: str, payload: dict[str, Any], key: str
) -> WebhookCall:
    """Store a call and enqueue its delivery once the row is committed. A second request with
    the same ``key`` returns the stored call and enqueues nothing."""
    from conversations.tasks import deliver_webhook_call

    call, created = WebhookCall.objects.get_or_create(
        key=key, defaults={"endpoint": endpoint, "event": event, "payload": payload}
    )
    if created:
        transaction.on_commit(lambda: deliver_webhook_call.delay(call.pk))
    return call


def webhook_calls_enqueue(calls: list[WebhookCall]) -> int:
    """Store many calls in one statement (the ingest pipeline's way) and enqueue the new
    ones; calls whose key is stored already are left as they are. Returns how many were new."""
    from conversations.tasks import deliver_webhook_call

    if not calls:
        return 0
    keys = [call.key for call in calls]
    known = set(WebhookCall.objects.filter(key__in=keys).values_list("key", flat=True))
    WebhookCall.objects.bulk_create([c for c in calls if c.key not in known], ignore_conflicts=True)
    new_ids = list(
        WebhookCall.objects.filter(key__in=set(keys) - known).values_list("pk", flat=True)
    )
    transaction.on_commit(lambda: [deliver_webhook_call.delay(pk) for pk in new_ids])
    return len(new_ids)


def webhook_call_deliver(*, call_id: int) -> WebhookCall:
    """Make one attempt at a pending, due call and record the outcome. HTTP and network errors
    end up on the row, never raised: 2xx delivers; 408, 429, 5xx, timeouts and connection
    errors are retried with backoff up to ``MAX_ATTEMPTS``; anything else fails at once.

    Of two workers given the same call, only the one whose conditional update claims it posts.
    """
    now = timezone.now()
    claimed = WebhookCall.objects.filter(
        pk=call_id, status=WebhookCallStatus.PENDING, next_attempt_at__lte=now
    ).update(attempts=F("attempts") + 1, next_attempt_at=now + CLAIM_LEASE)
    call = WebhookCall.objects.select_related("endpoint").get(pk=call_id)
    if not claimed:
        return call
    try:
        return _attempt(call)
    except Exception as exc:
        # A bug, or a secret that no longer decrypts: the attempt counts, the call is retried
        # like any other failure and gives up after MAX_ATTEMPTS, and the row says why.
        logger.exception("Webhook call %s failed unexpectedly", call.pk)
        return _retry_or_fail(call, error=f"Unexpected error: {type(exc).__name__}: {exc}")


def _attempt(call: WebhookCall) -> WebhookCall:
    """One claimed attempt of ``webhook_call_deliver``."""
    endpoint = call.endpoint
    if not endpoint.is_active:
        return _finish(call, status=WebhookCallStatus.FAILED, error="The endpoint is switched off.")

    try:
        target = webhook_target(endpoint.url, allow_private=endpoint.allow_private_network)
    except UnresolvedHost as unresolved:
        return _retry_or_fail(call, error=str(unresolved))
    except RefusedAddress as refused:
        return _finish(call, status=WebhookCallStatus.FAILED, error=f"Refused: {refused}")

    body = json.dumps(call.payload, cls=DjangoJSONEncoder, separators=(",", ":")).encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-SCRM-Event": call.event,
        "X-SCRM-Delivery": str(call.pk),
        "X-SCRM-Timestamp": str(timestamp),
    }
    if endpoint.secret:
        headers["X-SCRM-Signature"] = webhook_signature(
            secret=endpoint.secret, timestamp=timestamp, body=body
        )
    try:
        # Redirects are not followed (a POST would turn into a GET somewhere else): the call
        # reports them instead.
        response = webhook_post(target, data=body, headers=headers, timeout=TIMEOUT_SECONDS)
    except requests.Timeout:
        return _retry_or_fail(call, error=f"No answer within {TIMEOUT_SECONDS} s.")
    except requests.RequestException as exc:
        return _retry_or_fail(call, error=f"{type(exc).__name__}: {exc}")

    code = response.status_code
    if 200 <= code < 300:
        return _finish(call, status=WebhookCallStatus.DELIVERED, response_status=code)
    if 300 <= code < 400:
        error = f"HTTP {code}: redirected to {response.headers.get('Location', '?')}"
    else:
        excerpt = " ".join(response.text[:200].split())
        error = f"HTTP {code}: {excerpt}" if excerpt else f"HTTP {code}"
    if code >= 500 or code in _RETRYABLE_STATUSES:
        return _retry_or_fail(call, error=error, response_status=code)
    return _finish(call, status=WebhookCallStatus.FAILED, error=error, response_status=code)


def webhook_retry_delay(attempts: int) -> timedelta:
    """How long to wait after the given number of failed attempts: 30 s doubling per attempt,
    at most an hour, less up to a fifth at random so retries of many calls spread out."""
    delay = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, attempts - 1))
    return timedelta(seconds=delay - random.uniform(0, delay / 5))


def webhook_calls_due(*, now: datetime | None = None, limit: int = 500) -> list[int]:
    """Pending calls whose next attempt is due, oldest first: one query on the partial index
    ``webhook_call_due_idx``. Enqueuing one twice is harmless; delivery claims it."""
    now = now or timezone.now()
    return list(
        WebhookCall.objects.filter(status=WebhookCallStatus.PENDING, next_attempt_at__lte=now)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )


def _retry_or_fail(
    call: WebhookCall, *, error: str, response_status: int | None = None
) -> WebhookCall:
    if call.attempts >= MAX_ATTEMPTS:
        return _finish(
            call,
            status=WebhookCallStatus.FAILED,
            error=f"Gave up after {call.attempts} attempts. {error}",
            response_status=response_status,
        )
    call.next_attempt_at = timezone.now() + webhook_retry_delay(call.attempts)
    call.last_error = error[:_ERROR_LENGTH]
    call.response_status = response_status
    call.save(update_fields=["next_attempt_at", "last_error", "response_status"])
    return call


def _finish(
    call: WebhookCall,
    *,
    status: str,
    error: str = "",
    response_status: int | None = None,
) -> WebhookCall:
    call.status = status
    call.last_error = error[:_ERROR_LENGTH]
    call.response_status = response_status
    fields = ["status", "last_error", "response_status"]
    if status == WebhookCallStatus.DELIVERED:
        call.delivered_at = timezone.now()
        fields.append("delivered_at")
    call.save(update_fields=fields)
    return call


def webhook_call_redeliver(*, call: WebhookCall, actor: Any = None) -> WebhookCall:
    """Send a call again (an admin's request from the delivery log): it goes back to pending,
    due now, with a fresh round of attempts. The delivery id stays, so a receiver that got it
    before can tell (one sent again while an attempt is under way may arrive twice)."""
    from conversations.tasks import deliver_webhook_call
    from governance.audit import audit_record

    now = timezone.now()
    with transaction.atomic():
        WebhookCall.objects.filter(pk=call.pk).update(
            status=WebhookCallStatus.PENDING, attempts=0, next_attempt_at=now
        )
        audit_record(action="webhook_call.redelivered", actor=actor, obj=call, event=call.event)
        transaction.on_commit(lambda: deliver_webhook_call.delay(call.pk))
    call.refresh_from_db()
    return call
