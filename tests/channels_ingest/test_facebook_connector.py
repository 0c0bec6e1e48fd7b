"""The Facebook connector against Graph API responses stubbed at the HTTP layer: facebook-sdk
and requests run for real, and no request leaves the machine."""

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import facebook
import pytest
import requests
import responses
from django.utils import timezone

from channels_ingest.connectors import facebook as fb
from channels_ingest.connectors.base import (
    ConnectorError,
    RateLimited,
    ReauthRequired,
    TransientError,
)
from channels_ingest.connectors.facebook import (
    FacebookConnector,
    handshake_challenge,
    signature_is_valid,
)
from channels_ingest.models import DeadLetter, DeadLetterStatus
from channels_ingest.pipeline import ingest
from channels_ingest.services import dead_letter_retry
from channels_ingest.types import InboundAuthor
from conversations.models import Conversation, Message
from tests.factories import ChannelFactory, ConversationFactory, MessageFactory

pytestmark = pytest.mark.django_db

PAYLOADS = Path(__file__).parent / "payloads" / "facebook"
PAGE_ID = "1234567890"
GRAPH = f"https://graph.facebook.com/v{fb.GRAPH_API_VERSION}"
FEED_URL = f"{GRAPH}/{PAGE_ID}/feed"
CONVERSATIONS_URL = f"{GRAPH}/{PAGE_ID}/conversations"
PAGE_POST_COMMENTS_URL = f"{GRAPH}/1234567890_1002/comments"
FEED_SINCE = 1714500000  # 2024-04-30 18:00 UTC, before everything in the payloads
MESSENGER_SINCE = 1714500000
CURSOR = {"feed_since": FEED_SINCE, "messenger_since": MESSENGER_SINCE}
OVERLAP = int(fb.OVERLAP.total_seconds())


def load(name: str) -> dict:
    return json.loads((PAYLOADS / f"{name}.json").read_text())


def params(call) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(call.request.url).query).items()}


def form(call) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(call.request.body).items()}


def with_param(name: str, present: bool = True):
    """A matcher on whether the query has ``name``."""

    def match(request):
        found = name in parse_qs(urlsplit(request.url).query)
        return found == present, f"{name} {'missing' if present else 'present'}"

    return match


def calls_to(rsps, url: str) -> list:
    return [c for c in rsps.calls if c.request.url.split("?")[0] == url]


def graph_error(code: int, message: str, **extra) -> dict:
    return {
        "error": {
            "message": message,
            "type": "OAuthException",
            "code": code,
            "fbtrace_id": "AbCdEfGhIjK",
            **extra,
        }
    }


@pytest.fixture
def channel():
    return ChannelFactory(
        platform="facebook",
        external_account_id=PAGE_ID,
        credentials={
            "page_access_token": "EAAGtoken",
            "app_secret": "app-secret",
            "verify_token": "verify-me",
        },
        settings={},
    )


@pytest.fixture
def graph():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


@pytest.fixture
def page(graph):
    """The Page as the payloads describe it: two feed pages, a second page of comments on the
    Page's own post, and the Messenger inbox."""
    graph.get(FEED_URL, json=load("feed_page1"), match=[with_param("until", present=False)])
    graph.get(FEED_URL, json=load("feed_page2"), match=[with_param("until")])
    graph.get(PAGE_POST_COMMENTS_URL, json=load("comments_page2"))
    graph.get(CONVERSATIONS_URL, json=load("conversations"))
    return graph


def by_id(posts) -> dict:
    return {p.external_id: p for p in posts}


# Fetch -------------------------------------------------------------------------------------


def test_fetch_reads_visitor_posts_comments_replies_and_messenger_messages(channel, page):
    result = FacebookConnector().fetch(channel, CURSOR)
    posts = by_id(result.posts)

    post = posts["1234567890_1001"]
    assert (post.kind, post.body, post.thread_id, post.in_reply_to_id) == (
        "post",
        "Hi, my order #4411 never arrived. Can someone help?",
        "1234567890_1001",
        "",
    )
    assert post.author.platform_user_id == "5550001"
    assert post.author.display_name == "Jane Doe"
    assert post.created_at == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    assert "comments" not in post.raw
    assert post.raw["permalink_url"] == "https://www.facebook.com/1234567890/posts/1001/"

    comment = posts["1001_2001"]
    assert (comment.kind, comment.in_reply_to_id, comment.thread_id) == (
        "comment",
        "1234567890_1001",
        "1234567890_1001",
    )
    assert comment.author.display_name == "Omar Haddad"

    reply = posts["1001_2003"]
    assert (reply.kind, reply.in_reply_to_id, reply.thread_id) == (
        "reply",
        "1001_2001",
        "1234567890_1001",
    )

    on_page_post = posts["1002_3002"]
    assert (on_page_post.kind, on_page_post.in_reply_to_id, on_page_post.thread_id) == (
        "comment",
        "1234567890_1002",
        "1234567890_1002",
    )

    dm = posts["m_AAAAAAAAAAAAAAAAAAAAA1"]
    assert (dm.kind, dm.body, dm.thread_id, dm.in_reply_to_id) == (
        "dm",
        "Hello, I need help with a delivery.",
        "6660001",
        "",
    )
    assert dm.author.platform_user_id == "6660001"
    assert dm.created_at == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert dm.raw["id"] == "m_AAAAAAAAAAAAAAAAAAAAA1"
    assert all(p.created_at.tzinfo is not None for p in result.posts)


def test_fetch_skips_what_the_page_itself_wrote(channel, page):
    result = FacebookConnector().fetch(channel, CURSOR)
    ids = set(by_id(result.posts))
    assert "1234567890_1002" not in ids  # the Page's own post
    assert "1001_2002" not in ids  # the Page's reply to a comment
    assert "m_AAAAAAAAAAAAAAAAAAAAA3" not in ids  # the Page's Messenger answer
    assert all(p.author.platform_user_id != PAGE_ID for p in result.posts)
    assert ids == {
        "1234567890_1001",
        "1001_2001",
        "1001_2003",
        "1002_3002",
        "1002_3001",
        "1234567890_1003",
        "m_AAAAAAAAAAAAAAAAAAAAA1",
        "m_AAAAAAAAAAAAAAAAAAAAA2",
    }


def test_fetch_reads_comments_beyond_the_embedded_page(channel, page):
    result = FacebookConnector().fetch(channel, CURSOR)

    [call] = calls_to(page, PAGE_POST_COMMENTS_URL)
    query = params(call)
    assert query["filter"] == "stream"
    assert query["after"] == "QVFIUmFmdGVyMzAwMg"
    assert query["access_token"] == "EAAGtoken"
    later = by_id(result.posts)["1002_3001"]
    assert (later.kind, later.in_reply_to_id, later.thread_id) == (
        "comment",
        "1234567890_1002",
        "1234567890_1002",
    )
    assert later.author.display_name == "Max Müller"


def test_fetch_follows_the_feed_to_its_next_page(channel, page):
    result = FacebookConnector().fetch(channel, CURSOR)

    first, second = calls_to(page, FEED_URL)
    assert params(second)["until"] == "1714467600"
    assert params(second)["__paging_token"] == "enc_AdAnext"
    # The next link in the payload leaves ``since`` out; the walk keeps it.
    assert params(second)["since"] == params(first)["since"]
    assert by_id(result.posts)["1234567890_1003"].author.display_name == "Max Müller"


def test_fetch_asks_for_what_is_new_since_the_cursor_and_moves_the_cursor_on(channel, page):
    result = FacebookConnector().fetch(channel, CURSOR)

    first = params(calls_to(page, FEED_URL)[0])
    assert first["since"] == str(FEED_SINCE - OVERLAP)
    assert "comments.filter(stream)" in first["fields"]
    inbox = params(calls_to(page, CONVERSATIONS_URL)[0])
    assert inbox["platform"] == "messenger"
    assert "messages.limit(50)" in inbox["fields"]
    assert result.cursor == {
        # Newest comment seen: 2024-05-01 11:00; newest conversation update: 12:05.
        "feed_since": int(datetime(2024, 5, 1, 11, 0, tzinfo=UTC).timestamp()),
        "messenger_since": int(datetime(2024, 5, 1, 12, 5, tzinfo=UTC).timestamp()),
    }


def test_fetch_keeps_the_cursor_when_nothing_is_new(channel, graph):
    graph.get(FEED_URL, json={"data": []})
    graph.get(CONVERSATIONS_URL, json={"data": []})
    cursor = {"feed_since": 1714600000, "messenger_since": 1714600100}
    result = FacebookConnector().fetch(channel, cursor)
    assert result.posts == []
    assert result.cursor == cursor


def test_a_first_poll_reads_one_week_back(channel, graph):
    graph.get(FEED_URL, json={"data": []})
    graph.get(CONVERSATIONS_URL, json={"data": []})
    result = FacebookConnector().fetch(channel, {})
    week_ago = (timezone.now() - timedelta(days=7)).timestamp()
    since = int(params(calls_to(graph, FEED_URL)[0])["since"])
    assert abs(since - (week_ago - OVERLAP)) < 5
    assert abs(result.cursor["feed_since"] - week_ago) < 5


def test_fetch_rejects_a_comment_without_author_and_takes_the_rest(channel, page):
    result = FacebookConnector().fetch(channel, CURSOR)
    [rejected] = result.rejected
    assert json.loads(rejected.raw)["id"] == "1001_2004"
    assert "no author" in rejected.error
    assert len(result.posts) == 8


def test_a_post_without_text_arrives_with_a_placeholder(channel, graph):
    photo_only = {
        "id": "1234567890_1009",
        "created_time": "2024-05-01T10:00:00+0000",
        "from": {"name": "Jane Doe", "id": "5550001"},
    }
    graph.get(FEED_URL, json={"data": [photo_only]})
    graph.get(CONVERSATIONS_URL, json={"data": []})
    result = FacebookConnector().fetch(channel, CURSOR)
    assert result.rejected == []
    assert [p.body for p in result.posts] == ["[attachment without text]"]


def test_the_inbox_walk_stops_at_conversations_not_updated_since_the_last_poll(channel, page):
    result = FacebookConnector().fetch(channel, CURSOR)
    # The second conversation is older than the cursor: neither it nor the next page is read.
    assert "m_BBBBBBBBBBBBBBBBBBBBB1" not in by_id(result.posts)
    assert len(calls_to(page, CONVERSATIONS_URL)) == 1


def test_messages_beyond_the_embedded_page_are_read(channel, graph):
    conversation = {
        "id": "t_77",
        "updated_time": "2024-05-01T12:01:00+0000",
        "messages": {
            "data": [
                {
                    "id": "m_new",
                    "message": "Second",
                    "created_time": "2024-05-01T12:01:00+0000",
                    "from": {"name": "Jane Doe", "id": "6660001"},
                }
            ],
            "paging": {"next": f"{GRAPH}/t_77/messages?access_token=x&limit=50&after=QVFI"},
        },
    }
    graph.get(FEED_URL, json={"data": []})
    graph.get(CONVERSATIONS_URL, json={"data": [conversation]})
    graph.get(
        f"{GRAPH}/t_77/messages",
        json={
            "data": [
                {
                    "id": "m_old",
                    "message": "First",
                    "created_time": "2024-05-01T12:00:00+0000",
                    "from": {"name": "Jane Doe", "id": "6660001"},
                }
            ]
        },
    )
    result = FacebookConnector().fetch(channel, CURSOR)
    assert [p.external_id for p in result.posts] == ["m_new", "m_old"]
    assert params(calls_to(graph, f"{GRAPH}/t_77/messages")[0])["after"] == "QVFI"


def test_a_walk_longer_than_one_poll_resumes_where_it_stopped(channel, page, monkeypatch):
    monkeypatch.setattr(fb, "FEED_PAGES_PER_POLL", 1)
    connector = FacebookConnector()

    first = connector.fetch(channel, CURSOR)
    assert "1234567890_1003" not in by_id(first.posts)
    assert first.cursor["feed_since"] == FEED_SINCE  # not moved until the walk is done
    assert first.cursor["feed_resume"]["until"] == "1714467600"
    assert "access_token" not in first.cursor["feed_resume"]
    json.dumps(first.cursor)  # stored in a JSONField

    second = connector.fetch(channel, first.cursor)
    assert "1234567890_1003" in by_id(second.posts)
    assert params(calls_to(page, FEED_URL)[-1])["until"] == "1714467600"
    assert second.cursor["feed_since"] == int(datetime(2024, 5, 1, 11, tzinfo=UTC).timestamp())
    assert "feed_resume" not in second.cursor


# Errors ------------------------------------------------------------------------------------


def test_an_expired_token_needs_reauthentication(channel, graph):
    graph.get(
        FEED_URL,
        status=400,
        json=graph_error(
            190,
            "Error validating access token: Session has expired on Tuesday, 30-Apr-24.",
            error_subcode=463,
        ),
    )
    with pytest.raises(ReauthRequired, match="Session has expired"):
        FacebookConnector().fetch(channel, CURSOR)


def test_an_uninstalled_app_needs_reauthentication(channel, graph):
    graph.get(
        FEED_URL,
        status=400,
        json=graph_error(
            200, "The user has not authorized application 1517776481860111.", error_subcode=458
        ),
    )
    with pytest.raises(ReauthRequired):
        FacebookConnector().fetch(channel, CURSOR)


def test_a_channel_without_a_token_needs_reauthentication(channel, graph):
    channel.credentials = {"app_secret": "s"}
    with pytest.raises(ReauthRequired):
        FacebookConnector().fetch(channel, CURSOR)
    assert len(graph.calls) == 0


def test_a_rate_limit_waits_as_long_as_the_usage_header_says(channel, graph):
    usage = {
        PAGE_ID: [
            {
                "type": "pages",
                "call_count": 100,
                "total_cputime": 31,
                "total_time": 44,
                "estimated_time_to_regain_access": 27,
            }
        ]
    }
    graph.get(
        FEED_URL,
        status=400,
        json=graph_error(32, "(#32) Page request limit reached"),
        headers={"X-Business-Use-Case-Usage": json.dumps(usage)},
    )
    with pytest.raises(RateLimited, match="Page request limit reached") as caught:
        FacebookConnector().fetch(channel, CURSOR)
    expected = timezone.now() + timedelta(minutes=27)
    assert abs((caught.value.reset_at - expected).total_seconds()) < 5


def test_a_rate_limit_without_a_usage_header_waits_fifteen_minutes(channel, graph):
    graph.get(FEED_URL, status=400, json=graph_error(4, "(#4) Application request limit reached"))
    with pytest.raises(RateLimited) as caught:
        FacebookConnector().fetch(channel, CURSOR)
    expected = timezone.now() + timedelta(minutes=15)
    assert abs((caught.value.reset_at - expected).total_seconds()) < 5


def test_a_server_error_is_transient(channel, graph):
    graph.get(
        FEED_URL, status=500, body="<html>Internal Server Error</html>", content_type="text/html"
    )
    with pytest.raises(TransientError):
        FacebookConnector().fetch(channel, CURSOR)


def test_a_temporary_graph_error_is_transient(channel, graph):
    graph.get(
        FEED_URL,
        status=500,
        json=graph_error(2, "An unexpected error has occurred. Please retry your request later."),
    )
    with pytest.raises(TransientError, match="retry your request later"):
        FacebookConnector().fetch(channel, CURSOR)


@pytest.mark.parametrize(
    "failure", [requests.exceptions.ReadTimeout("read timed out"), requests.ConnectionError()]
)
def test_a_timeout_or_lost_connection_is_transient(channel, graph, failure):
    graph.get(FEED_URL, body=failure)
    with pytest.raises(TransientError):
        FacebookConnector().fetch(channel, CURSOR)


def test_any_other_graph_error_is_reported_in_facebooks_words(channel, graph):
    graph.get(
        FEED_URL,
        status=400,
        json=graph_error(100, "(#100) Tried accessing nonexisting field (feeed)"),
    )
    with pytest.raises(ConnectorError, match="nonexisting field") as caught:
        FacebookConnector().fetch(channel, CURSOR)
    assert type(caught.value) is ConnectorError


# Send --------------------------------------------------------------------------------------


def test_a_reply_is_posted_as_a_comment_on_what_it_answers(channel, graph):
    graph.post(f"{GRAPH}/1001_2003/comments", json={"id": "1001_2005"})
    message = MessageFactory(
        conversation=ConversationFactory(channel=channel, thread_key="thread:1234567890_1001"),
        direction="out",
        kind="reply",
        external_id=None,
        in_reply_to_external_id="1001_2003",
        body="So sorry, Jane! We have sent you a message.",
    )
    result = FacebookConnector().send(channel, message)
    assert result.external_id == "1001_2005"
    [call] = graph.calls
    assert call.request.method == "POST"
    assert call.request.url.startswith(f"{GRAPH}/1001_2003/comments")
    assert form(call)["message"] == "So sorry, Jane! We have sent you a message."
    assert form(call)["access_token"] == "EAAGtoken"


def test_a_dm_goes_to_the_customer_of_the_thread_through_messenger(channel, graph):
    graph.post(
        f"{GRAPH}/{PAGE_ID}/messages",
        json={"recipient_id": "6660001", "message_id": "m_DDDDDDDDDDDDDDDDDDDDD1"},
    )
    message = MessageFactory(
        conversation=ConversationFactory(channel=channel, thread_key="dm:6660001"),
        direction="out",
        kind="dm",
        external_id=None,
        body="Hi Jane, your parcel is on its way. Grüße 👋",
    )
    result = FacebookConnector().send(channel, message)
    assert result.external_id == "m_DDDDDDDDDDDDDDDDDDDDD1"
    [call] = graph.calls
    sent = form(call)
    assert json.loads(sent["recipient"]) == {"id": "6660001"}
    assert json.loads(sent["message"]) == {"text": "Hi Jane, your parcel is on its way. Grüße 👋"}
    assert sent["messaging_type"] == "RESPONSE"


def test_a_reply_that_answers_nothing_is_refused(channel, graph):
    message = MessageFactory(
        conversation=ConversationFactory(channel=channel),
        direction="out",
        kind="reply",
        external_id=None,
        in_reply_to_external_id="",
    )
    with pytest.raises(ConnectorError, match="answers none"):
        FacebookConnector().send(channel, message)
    assert len(graph.calls) == 0


def test_a_dm_outside_the_messaging_window_reports_facebooks_reason(channel, graph):
    graph.post(
        f"{GRAPH}/{PAGE_ID}/messages",
        status=400,
        json=graph_error(
            10,
            "(#10) This message is sent outside of allowed window.",
            error_subcode=2018278,
        ),
    )
    message = MessageFactory(
        conversation=ConversationFactory(channel=channel, thread_key="dm:6660001"),
        direction="out",
        kind="dm",
        external_id=None,
    )
    with pytest.raises(ConnectorError, match="outside of allowed window"):
        FacebookConnector().send(channel, message)


def test_a_rate_limited_send_says_when_to_retry(channel, graph):
    graph.post(
        f"{GRAPH}/1001_2003/comments",
        status=400,
        json=graph_error(613, "Calls to this api have exceeded the rate limit."),
    )
    message = MessageFactory(
        conversation=ConversationFactory(channel=channel),
        direction="out",
        kind="reply",
        external_id=None,
        in_reply_to_external_id="1001_2003",
    )
    with pytest.raises(RateLimited):
        FacebookConnector().send(channel, message)


# Webhooks ----------------------------------------------------------------------------------


def test_parse_reads_additions_and_ignores_edits_echoes_and_the_pages_own_items(channel):
    result = FacebookConnector().parse(channel, load("webhook"))
    posts = by_id(result.posts)
    assert set(posts) == {"1001_2001", "1001_2003", "1234567890_1005", "m_CCCCCCCCCCCCCCCCCCCCC1"}

    comment = posts["1001_2001"]
    assert (comment.kind, comment.in_reply_to_id, comment.thread_id) == (
        "comment",
        "1234567890_1001",
        "1234567890_1001",
    )
    # The addition, not the later edit.
    assert comment.body == "Did you check the tracking link in the email?"
    assert comment.created_at == datetime(2024, 5, 1, 10, 5, tzinfo=UTC)

    reply = posts["1001_2003"]
    assert (reply.kind, reply.in_reply_to_id, reply.thread_id) == (
        "reply",
        "1001_2001",
        "1234567890_1001",
    )

    post = posts["1234567890_1005"]
    assert (post.kind, post.thread_id, post.author.display_name) == (
        "post",
        "1234567890_1005",
        "Lina Berg",
    )

    dm = posts["m_CCCCCCCCCCCCCCCCCCCCC1"]
    assert (dm.kind, dm.thread_id, dm.body) == ("dm", "6660001", "Any update on my order?")
    assert dm.created_at == datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)

    [rejected] = result.rejected
    assert json.loads(rejected.raw)["comment_id"] == "1001_2004"
    assert "no author" in rejected.error


def test_parse_keeps_entries_of_another_page_as_dead_letters(channel):
    payload = load("webhook")
    payload["entry"][0]["id"] = "999999"
    result = FacebookConnector().parse(channel, payload)
    assert set(by_id(result.posts)) == {"m_CCCCCCCCCCCCCCCCCCCCC1"}
    assert any("Page 999999" in r.error for r in result.rejected)


def test_parse_rejects_what_is_not_a_page_delivery(channel):
    result = FacebookConnector().parse(channel, {"object": "instagram", "entry": []})
    assert result.posts == []
    assert "Not a Facebook Page" in result.rejected[0].error


def test_parse_gives_a_message_sent_without_text_a_placeholder(channel):
    payload = {
        "object": "page",
        "entry": [
            {
                "id": PAGE_ID,
                "time": 1714564800500,
                "messaging": [
                    {
                        "sender": {"id": "6660001"},
                        "recipient": {"id": PAGE_ID},
                        "timestamp": 1714564800123,
                        "message": {
                            "mid": "m_img",
                            "attachments": [{"type": "image", "payload": {"url": "https://x"}}],
                        },
                    },
                    {
                        "sender": {"id": "6660001"},
                        "recipient": {"id": PAGE_ID},
                        "timestamp": 1714564801123,
                        "message": {"mid": "m_txt", "text": "That's the parcel."},
                    },
                ],
            }
        ],
    }
    result = FacebookConnector().parse(channel, payload)
    assert [(p.external_id, p.body) for p in result.posts] == [
        ("m_img", "[image]"),
        ("m_txt", "That's the parcel."),
    ]
    assert result.rejected == []


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


BODY = json.dumps(load("webhook")).encode()


@pytest.mark.parametrize(
    ("secret", "body", "header", "valid"),
    [
        ("app-secret", BODY, sign("app-secret", BODY), True),
        ("app-secret", BODY + b" ", sign("app-secret", BODY), False),  # tampered body
        ("app-secret", BODY, None, False),
        ("app-secret", BODY, "", False),
        ("app-secret", BODY, sign("another-secret", BODY), False),
        ("app-secret", BODY, "sha1=" + sign("app-secret", BODY)[7:], False),
        ("app-secret", BODY, "sha256=", False),
        ("app-secret", BODY, "sha256=zz-not-hex-Grüße", False),
        ("", BODY, sign("", BODY), False),  # no secret configured
    ],
)
def test_signature_is_valid(secret, body, header, valid):
    assert signature_is_valid(secret, body, header) is valid


def test_the_signature_covers_the_raw_bytes_of_a_non_ascii_body():
    body = json.dumps({"message": "Grüße 👋"}, ensure_ascii=False).encode("utf-8")
    header = sign("app-secret", body)
    assert signature_is_valid("app-secret", body, header)
    escaped = json.dumps({"message": "Grüße 👋"}).encode()  # same JSON, other bytes
    assert not signature_is_valid("app-secret", escaped, header)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (
            {
                "hub.mode": "subscribe",
                "hub.verify_token": "verify-me",
                "hub.challenge": "1158201444",
            },
            "1158201444",
        ),
        (
            {"hub.mode": "subscribe", "hub.verify_token": "guess", "hub.challenge": "1158201444"},
            None,
        ),
        (
            {"hub.mode": "unsubscribe", "hub.verify_token": "verify-me", "hub.challenge": "1"},
            None,
        ),
        ({"hub.mode": "subscribe", "hub.challenge": "1158201444"}, None),
        ({"hub.mode": "subscribe", "hub.verify_token": "verify-me"}, None),
        ({}, None),
    ],
)
def test_handshake_challenge(query, expected):
    assert handshake_challenge("verify-me", query) == expected


def test_handshake_fails_when_no_verify_token_is_configured():
    query = {"hub.mode": "subscribe", "hub.verify_token": "", "hub.challenge": "1"}
    assert handshake_challenge("", query) is None


# Version and end to end --------------------------------------------------------------------


def test_the_graph_version_is_the_newest_facebook_sdk_accepts():
    def as_tuple(version: str) -> tuple[int, ...]:
        return tuple(int(part) for part in version.split("."))

    newest = max(facebook.VALID_API_VERSIONS, key=as_tuple)
    assert newest == fb.GRAPH_API_VERSION


def test_fetched_posts_are_stored_and_threaded_once(channel, page):
    connector = FacebookConnector()
    fetched = connector.fetch(channel, CURSOR)
    result = ingest(
        channel=channel, posts=fetched.posts, cursor=fetched.cursor, rejected=fetched.rejected
    )
    assert result.stored == 8
    channel.refresh_from_db()
    assert channel.cursor == fetched.cursor
    assert channel.dead_letters.count() == 1

    post = Message.objects.get(channel=channel, external_id="1234567890_1001")
    comment = Message.objects.get(channel=channel, external_id="1001_2001")
    reply = Message.objects.get(channel=channel, external_id="1001_2003")
    assert post.conversation_id == comment.conversation_id == reply.conversation_id
    assert post.conversation.thread_key == "thread:1234567890_1001"
    assert (comment.kind, reply.kind) == ("comment", "reply")
    assert reply.in_reply_to_external_id == "1001_2001"

    dm = Message.objects.get(channel=channel, external_id="m_AAAAAAAAAAAAAAAAAAAAA1")
    assert dm.conversation.thread_key == "dm:6660001"
    assert dm.conversation_id != post.conversation_id
    later_dm = Message.objects.get(channel=channel, external_id="m_AAAAAAAAAAAAAAAAAAAAA2")
    assert later_dm.conversation_id == dm.conversation_id

    again = connector.fetch(channel, CURSOR)
    repeat = ingest(channel=channel, posts=again.posts, cursor=again.cursor)
    assert (repeat.stored, repeat.duplicates) == (0, 8)
    assert Message.objects.filter(channel=channel).count() == 8
    assert Conversation.objects.filter(channel=channel).count() == result.conversations_created


# Dead letters of one item ------------------------------------------------------------------

AUTHORLESS_COMMENT = "1001_2004"
JANES_POST = "1234567890_1001"


def poll_into_dead_letters(channel) -> DeadLetter:
    fetched = FacebookConnector().fetch(channel, CURSOR)
    ingest(channel=channel, posts=fetched.posts, cursor=fetched.cursor, rejected=fetched.rejected)
    return DeadLetter.objects.get(channel=channel)


def test_a_rejected_comment_keeps_the_post_it_was_read_under(channel, page):
    letter = poll_into_dead_letters(channel)
    assert json.loads(letter.raw)["id"] == AUTHORLESS_COMMENT  # the comment alone
    assert letter.context == {"reader": "feed_comment", "post_id": JANES_POST}


def test_a_rejected_comment_still_unreadable_stays_with_the_new_reason(channel, page):
    letter = dead_letter_retry(letter=poll_into_dead_letters(channel))
    assert letter.status == DeadLetterStatus.NEW
    assert letter.error.startswith("Retry failed: Unreadable Facebook item: no author")
    assert "cannot be read again alone" not in letter.error
    assert not Message.objects.filter(external_id=AUTHORLESS_COMMENT).exists()


def test_a_comment_readable_after_a_fix_is_stored_once_under_its_post(channel, page, monkeypatch):
    letter = poll_into_dead_letters(channel)
    read_author = fb._author

    def anonymous_when_left_out(sender):
        if sender is None:
            return InboundAuthor(platform_user_id="anonymous", display_name="Facebook user")
        return read_author(sender)

    monkeypatch.setattr(fb, "_author", anonymous_when_left_out)
    letter = dead_letter_retry(letter=letter)
    assert letter.status == DeadLetterStatus.RETRIED
    comment = Message.objects.get(channel=channel, external_id=AUTHORLESS_COMMENT)
    post = Message.objects.get(channel=channel, external_id=JANES_POST)
    assert (comment.kind, comment.in_reply_to_external_id) == ("comment", JANES_POST)
    assert comment.conversation_id == post.conversation_id

    dead_letter_retry(letter=letter)
    assert Message.objects.filter(channel=channel, external_id=AUTHORLESS_COMMENT).count() == 1


def test_a_corrected_messenger_message_is_stored_by_its_retry(channel, graph):
    inbox = load("conversations")
    messages = inbox["data"][0]["messages"]["data"]
    messages[1]["created_time"] = 1714564860  # a number where Graph writes a time
    graph.get(FEED_URL, json={"data": []})
    graph.get(CONVERSATIONS_URL, json=inbox)
    letter = poll_into_dead_letters(channel)
    assert letter.context == {
        "reader": "messenger_message",
        "conversation_id": "t_1016100000000001",
    }
    assert dead_letter_retry(letter=letter).status == DeadLetterStatus.NEW

    fixed = json.loads(letter.raw) | {"created_time": "2024-05-01T12:01:00+0000"}
    DeadLetter.objects.filter(pk=letter.pk).update(raw=json.dumps(fixed))
    letter.refresh_from_db()
    assert dead_letter_retry(letter=letter).status == DeadLetterStatus.RETRIED
    dm = Message.objects.get(channel=channel, external_id=messages[1]["id"])
    first = Message.objects.get(channel=channel, external_id=messages[2]["id"])
    assert (dm.kind, dm.conversation_id) == ("dm", first.conversation_id)
