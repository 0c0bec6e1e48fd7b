import base64
import hashlib
import hmac
import json
import threading

import pytest
from django.db import connection
from django.test import Client

from channels_ingest.models import DeadLetter, DeadLetterStatus, WebhookDelivery, WebhookStatus
from channels_ingest.services import dead_letter_retry
from channels_ingest.tasks import requeue_stale_webhooks
from channels_ingest.webhooks import webhook_process
from conversations.models import Conversation, Message
from tests.factories import ChannelFactory

pytestmark = pytest.mark.django_db

FB_SECRET = "fb-app-secret"
X_SECRET = "x-consumer-secret"
PAGE_ID = "1234567890"


def fb_signature(body: bytes, secret: str = FB_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def x_signature(body: bytes, secret: str = X_SECRET) -> str:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return "sha256=" + base64.b64encode(digest).decode()


@pytest.fixture
def fb_channel():
    return ChannelFactory(
        platform="facebook",
        external_account_id=PAGE_ID,
        credentials={"page_access_token": "t", "app_secret": FB_SECRET, "verify_token": "vt-1"},
    )


@pytest.fixture
def x_channel():
    return ChannelFactory(
        platform="x",
        external_account_id="2244994945",
        credentials={"bearer_token": "b", "consumer_secret": X_SECRET},
    )


def fb_comment_payload(comment_id: str = "111_222", text: str = "Where is my order?") -> bytes:
    return json.dumps(
        {
            "object": "page",
            "entry": [
                {
                    "id": PAGE_ID,
                    "time": 1767600000,
                    "changes": [
                        {
                            "field": "feed",
                            "value": {
                                "item": "comment",
                                "verb": "add",
                                "post_id": f"{PAGE_ID}_999",
                                "comment_id": comment_id,
                                "parent_id": f"{PAGE_ID}_999",
                                "from": {"id": "5550001", "name": "Grete Müller"},
                                "message": text,
                                "created_time": 1767600000,
                            },
                        }
                    ],
                }
            ],
        },
        ensure_ascii=False,
    ).encode()


def x_tweet_payload() -> bytes:
    return json.dumps(
        {
            "for_user_id": "2244994945",
            "tweet_create_events": [
                {
                    "id_str": "1880000000000000001",
                    "text": "@acme my router died again",
                    "created_at": "Mon Jan 05 12:00:00 +0000 2026",
                    "in_reply_to_status_id_str": None,
                    "user": {
                        "id_str": "778899",
                        "screen_name": "dana",
                        "name": "Dana",
                        "followers_count": 42,
                        "verified": False,
                    },
                }
            ],
        }
    ).encode()


# --- Facebook ---------------------------------------------------------------------------


def test_facebook_handshake_echoes_the_challenge_for_the_right_token(client, fb_channel):
    url = f"/webhooks/facebook/{fb_channel.pk}/"
    ok = client.get(
        url, {"hub.mode": "subscribe", "hub.verify_token": "vt-1", "hub.challenge": "1158201444"}
    )
    assert (ok.status_code, ok.content) == (200, b"1158201444")
    wrong = client.get(
        url, {"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "1"}
    )
    assert wrong.status_code == 403


@pytest.mark.parametrize(
    ("signature", "expected"),
    [
        (lambda body: fb_signature(body), 200),
        (lambda body: fb_signature(body + b" "), 403),  # tampered body
        (lambda body: None, 403),  # missing
        (lambda body: fb_signature(body, "wrong-secret"), 403),
        (lambda body: "sha1=" + hashlib.sha1(body).hexdigest(), 403),
    ],
)
def test_facebook_posts_are_stored_only_with_a_valid_signature(
    client, fb_channel, django_capture_on_commit_callbacks, signature, expected
):
    body = fb_comment_payload(text="Grüße aus München 👋, wo ist meine Bestellung?")
    headers = {}
    if (sig := signature(body)) is not None:
        headers["HTTP_X_HUB_SIGNATURE_256"] = sig
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            f"/webhooks/facebook/{fb_channel.pk}/", body, content_type="application/json", **headers
        )
    assert response.status_code == expected
    stored = Message.objects.filter(channel=fb_channel)
    if expected == 200:
        assert stored.get().body.startswith("Grüße aus München 👋")
        assert WebhookDelivery.objects.get().status == WebhookStatus.PROCESSED
    else:
        assert not stored.exists()
        assert not WebhookDelivery.objects.exists()


def test_a_webhook_for_another_platforms_channel_is_404(client, x_channel):
    body = fb_comment_payload()
    response = client.post(
        f"/webhooks/facebook/{x_channel.pk}/",
        body,
        content_type="application/json",
        HTTP_X_HUB_SIGNATURE_256=fb_signature(body),
    )
    assert response.status_code == 404


# --- X ----------------------------------------------------------------------------------


def test_x_crc_answers_with_the_signed_token(client, x_channel):
    response = client.get(f"/webhooks/x/{x_channel.pk}/", {"crc_token": "challenge-123"})
    expected = base64.b64encode(
        hmac.new(X_SECRET.encode(), b"challenge-123", hashlib.sha256).digest()
    ).decode()
    assert response.json() == {"response_token": f"sha256={expected}"}
    assert client.get(f"/webhooks/x/{x_channel.pk}/").status_code == 403


def test_the_crc_check_cannot_be_used_to_sign_a_forged_body(client, x_channel):
    forged = x_tweet_payload()
    response = client.get(f"/webhooks/x/{x_channel.pk}/", {"crc_token": forged.decode()})
    assert response.status_code == 403
    assert b"response_token" not in response.content


@pytest.mark.parametrize(
    ("signature", "expected"),
    [
        (lambda body: x_signature(body), 200),
        (lambda body: x_signature(body.replace(b"died", b"works")), 403),
        (lambda body: None, 403),
        (lambda body: x_signature(body, "wrong"), 403),
    ],
)
def test_x_events_are_stored_only_with_a_valid_signature(
    client, x_channel, django_capture_on_commit_callbacks, signature, expected
):
    body = x_tweet_payload()
    headers = {}
    if (sig := signature(body)) is not None:
        headers["HTTP_X_TWITTER_WEBHOOKS_SIGNATURE"] = sig
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            f"/webhooks/x/{x_channel.pk}/", body, content_type="application/json", **headers
        )
    assert response.status_code == expected
    assert Message.objects.filter(channel=x_channel).count() == (1 if expected == 200 else 0)


# --- Processing -------------------------------------------------------------------------


def test_a_body_that_is_not_json_becomes_a_dead_letter_with_the_raw_body(fb_channel):
    delivery = WebhookDelivery.objects.create(channel=fb_channel, body='{"object": "page", ')
    assert webhook_process(delivery_id=delivery.pk) is None
    letter = DeadLetter.objects.get()
    assert letter.raw == '{"object": "page", '
    assert "Not JSON" in letter.error
    delivery.refresh_from_db()
    assert delivery.status == WebhookStatus.FAILED


def test_processing_a_delivery_twice_stores_its_posts_once(fb_channel):
    delivery = WebhookDelivery.objects.create(
        channel=fb_channel, body=fb_comment_payload().decode()
    )
    assert webhook_process(delivery_id=delivery.pk) == 1
    assert webhook_process(delivery_id=delivery.pk) is None
    again = WebhookDelivery.objects.create(channel=fb_channel, body=fb_comment_payload().decode())
    assert webhook_process(delivery_id=again.pk) == 0
    assert Message.objects.count() == 1


def test_deliveries_whose_task_was_lost_are_processed_by_the_sweeper(fb_channel):
    from datetime import timedelta

    from django.utils import timezone

    WebhookDelivery.objects.create(
        channel=fb_channel,
        body=fb_comment_payload().decode(),
        received_at=timezone.now() - timedelta(minutes=10),
    )
    assert requeue_stale_webhooks() == 1
    assert Message.objects.count() == 1
    assert requeue_stale_webhooks() == 0


@pytest.mark.django_db(transaction=True)
def test_the_same_post_delivered_fifty_times_at_once_is_stored_once(fb_channel):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite serialises writers; the race needs a server database")
    body = fb_comment_payload(comment_id="111_race")
    signature = fb_signature(body)
    url = f"/webhooks/facebook/{fb_channel.pk}/"
    barrier = threading.Barrier(50)
    statuses: list[int] = []

    def deliver() -> None:
        try:
            barrier.wait()
            response = Client().post(
                url, body, content_type="application/json", HTTP_X_HUB_SIGNATURE_256=signature
            )
            statuses.append(response.status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 50
    assert WebhookDelivery.objects.count() == 50
    assert Message.objects.filter(external_id="111_race").count() == 1
    assert Conversation.objects.filter(channel=fb_channel).count() == 1


def _two_page_payload(other_page: str) -> str:
    payload = json.loads(fb_comment_payload(comment_id="111_a"))
    other = json.loads(fb_comment_payload(comment_id="222_b", text="Second page here"))
    other["entry"][0]["id"] = other_page
    other["entry"][0]["changes"][0]["value"]["post_id"] = f"{other_page}_5"
    other["entry"][0]["changes"][0]["value"]["parent_id"] = f"{other_page}_5"
    payload["entry"].append(other["entry"][0])
    return json.dumps(payload)


def _second_page(app_secret: str = FB_SECRET):
    """Another page's channel, of the same app unless another secret is given."""
    return ChannelFactory(
        platform="facebook",
        external_account_id="9876543210",
        credentials={"page_access_token": "t2", "app_secret": app_secret},
    )


def test_one_apps_body_with_two_pages_feeds_each_pages_channel(fb_channel):
    second = _second_page()
    delivery = WebhookDelivery.objects.create(
        channel=fb_channel, body=_two_page_payload("9876543210")
    )
    assert webhook_process(delivery_id=delivery.pk) == 2
    assert Message.objects.get(channel=fb_channel).external_id == "111_a"
    assert Message.objects.get(channel=second).external_id == "222_b"


def test_a_retried_dead_letter_body_feeds_each_pages_channel_as_a_delivery_does(fb_channel):
    second = _second_page()
    letter = DeadLetter.objects.create(
        channel=fb_channel, source="webhook", raw=_two_page_payload("9876543210"), error="Down"
    )
    letter = dead_letter_retry(letter=letter)
    assert letter.status == DeadLetterStatus.RETRIED
    assert Message.objects.get(channel=fb_channel).external_id == "111_a"
    assert Message.objects.get(channel=second).external_id == "222_b"


def test_a_retried_body_stores_what_reads_and_keeps_saying_what_does_not(fb_channel):
    payload = json.loads(_two_page_payload("1111111111"))  # a page no channel has
    letter = DeadLetter.objects.create(
        channel=fb_channel, source="webhook", raw=json.dumps(payload), error="Down"
    )
    letter = dead_letter_retry(letter=letter)
    assert Message.objects.get(channel=fb_channel).external_id == "111_a"
    assert letter.status == DeadLetterStatus.NEW
    assert letter.error.startswith("Retry stored 1 post; still unreadable:")
    assert "1111111111" in letter.error
    # Retried again, it stores nothing twice.
    letter = dead_letter_retry(letter=letter)
    assert Message.objects.filter(channel=fb_channel).count() == 1


def test_an_entry_for_a_page_no_channel_served_is_delivered_again_once_one_does(fb_channel):
    delivery = WebhookDelivery.objects.create(
        channel=fb_channel, body=_two_page_payload("9876543210")
    )
    assert webhook_process(delivery_id=delivery.pk) == 1
    letter = DeadLetter.objects.get(channel=fb_channel)
    assert json.loads(letter.raw)["id"] == "9876543210"  # the entry alone
    assert letter.context == {"reader": "webhook_entry"}
    # Retried before any channel serves the Page: kept, saying why.
    letter = dead_letter_retry(letter=letter)
    assert letter.status == DeadLetterStatus.NEW
    assert letter.error.startswith("Retry failed:") and "Page 9876543210" in letter.error
    # The admin connects the Page (same app): the retry feeds its channel, once.
    second = _second_page()
    letter = dead_letter_retry(letter=letter)
    assert letter.status == DeadLetterStatus.RETRIED
    assert Message.objects.get(channel=second).external_id == "222_b"
    dead_letter_retry(letter=letter)
    assert Message.objects.filter(channel=second).count() == 1
    assert Message.objects.filter(channel=fb_channel).count() == 1


def test_a_malformed_entry_is_kept_as_an_entry_and_its_retry_says_what_is_wrong(fb_channel):
    body = json.loads(fb_comment_payload())
    body["entry"].append("not an entry")
    delivery = WebhookDelivery.objects.create(channel=fb_channel, body=json.dumps(body))
    assert webhook_process(delivery_id=delivery.pk) == 1  # the good entry's comment
    letter = DeadLetter.objects.get(channel=fb_channel)
    assert json.loads(letter.raw) == "not an entry"
    assert letter.context == {"reader": "webhook_entry"}
    letter = dead_letter_retry(letter=letter)
    assert letter.status == DeadLetterStatus.NEW
    assert letter.error == "Retry failed: A webhook entry that is not an object"


def test_a_retried_item_of_a_delivery_says_it_cannot_be_read_alone(fb_channel):
    change = json.loads(fb_comment_payload())["entry"][0]["changes"][0]
    letter = DeadLetter.objects.create(
        channel=fb_channel, source="webhook", raw=json.dumps(change), error="Unreadable"
    )
    letter = dead_letter_retry(letter=letter)
    assert letter.status == DeadLetterStatus.NEW
    assert letter.error.startswith("Retry failed:")
    assert "cannot be read again alone" in letter.error


def test_a_page_of_another_app_is_not_fed_from_this_apps_body(fb_channel):
    foreign = _second_page(app_secret="another-apps-secret")
    delivery = WebhookDelivery.objects.create(
        channel=fb_channel, body=_two_page_payload("9876543210")
    )
    webhook_process(delivery_id=delivery.pk)
    assert not Message.objects.filter(channel=foreign).exists()
    assert Message.objects.filter(channel=fb_channel).count() == 1
    assert "Page 9876543210" in DeadLetter.objects.get(channel=fb_channel).error


def test_a_delivery_that_cannot_be_processed_is_kept_and_not_retried_forever(
    fb_channel, monkeypatch
):
    def broken(self, channel, payload):
        raise RuntimeError("parser fault")

    monkeypatch.setattr("channels_ingest.connectors.facebook.FacebookConnector.parse", broken)
    body = fb_comment_payload().decode()
    delivery = WebhookDelivery.objects.create(channel=fb_channel, body=body)
    assert webhook_process(delivery_id=delivery.pk) is None
    delivery.refresh_from_db()
    assert delivery.status == WebhookStatus.FAILED
    letter = DeadLetter.objects.get()
    assert letter.raw == body and "parser fault" in letter.error
    assert requeue_stale_webhooks() == 0


def test_a_delivery_abandoned_by_a_dead_worker_is_processed_again(fb_channel):
    from datetime import timedelta

    from django.utils import timezone

    long_ago = timezone.now() - timedelta(minutes=30)
    WebhookDelivery.objects.create(
        channel=fb_channel,
        body=fb_comment_payload().decode(),
        received_at=long_ago,
        status=WebhookStatus.PROCESSING,
        claimed_at=long_ago,
    )
    assert requeue_stale_webhooks() == 1
    assert Message.objects.count() == 1
    assert WebhookDelivery.objects.get().status == WebhookStatus.PROCESSED
