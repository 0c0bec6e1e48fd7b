"""The X connector running the real tweepy client, with X's API stubbed at the HTTP layer.

Payloads in ``payloads/x/`` follow the shapes of the X API v2 reference (and, for webhooks,
the Account Activity API); ``payloads/x/account_activity.json`` holds several event types in
one delivery so one parse covers them all.
"""

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from django.utils import timezone

from channels_ingest.connectors.base import (
    ConnectorError,
    RateLimited,
    ReauthRequired,
    TransientError,
)
from channels_ingest.connectors.x import (
    XConnector,
    crc_response_token,
    search_query,
    signature_is_valid,
)
from channels_ingest.models import DeadLetter, DeadLetterStatus, WebhookDelivery
from channels_ingest.pipeline import ingest
from channels_ingest.services import dead_letter_retry
from channels_ingest.types import InboundAuthor
from channels_ingest.webhooks import webhook_process
from conversations.models import Conversation, Direction, Message
from conversations.services import conversation_reply_create
from tests.factories import ChannelFactory, ConversationFactory, MessageFactory, UserFactory

pytestmark = pytest.mark.django_db

API = "https://api.twitter.com/2"
OWN_ID = "2244994945"
MENTIONS_URL = f"{API}/users/{OWN_ID}/mentions"
SEARCH_URL = f"{API}/tweets/search/recent"
DM_EVENTS_URL = f"{API}/dm_events"
TWEETS_URL = f"{API}/tweets"
CREDENTIALS = {
    "bearer_token": "AAAAAAAAAAAAAAAAAAAAAtestbearer",
    "consumer_key": "test-consumer-key",
    "consumer_secret": "test-consumer-secret",
    "access_token": f"{OWN_ID}-test-access-token",
    "access_token_secret": "test-access-token-secret",
}
PAYLOADS = Path(__file__).parent / "payloads" / "x"
MENTIONS_PAGE_2 = "7140dibdnow9c7btw481sb2wfbbxbm1g1zqo7dxuzlhzq"
DM_PAGE_2 = "18LAA581J5II7LA00C00ZZZZ"
CURSOR = {"mentions_since_id": "1800000000000000100", "dm_newest_id": "1790000000000000500"}
SNOWFLAKE_EPOCH_MS = 1288834974657

ANN_ROOT = "1800000000000000101"
MISSING_AUTHOR = "1800000000000000102"
RETWEET = "1800000000000000107"
BOB_REPLY = "1800000000000000108"
OWN_POST = "1800000000000000109"
CARA_REPLY = "1800000000000000110"
FRIEDA_POST = "1800000000000000120"
BOB_DM = "1790000000000000505"
OWN_DM = "1790000000000000520"
ANN_DM = "1790000000000000530"


def payload(name: str) -> dict:
    return json.loads((PAYLOADS / f"{name}.json").read_text())


def x_channel(**fields):
    defaults = {
        "platform": "x",
        "handle": "@acme",
        "external_account_id": OWN_ID,
        "credentials": dict(CREDENTIALS),
        "settings": {"keywords": ["acme"]},
    }
    return ChannelFactory(**{**defaults, **fields})


def paged(param: str, token: str | None = None):
    """Matches a request whose paging parameter is ``token``, or absent for a first page."""

    def match(request):
        got = parse_qs(urlsplit(request.url).query).get(param)
        expected = [token] if token else None
        return got == expected, f"{param}={got}, expected {expected}"

    return match


def query_of(call) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(call.request.url).query).items()}


def calls_to(api, url: str) -> list:
    return [call for call in api.calls if call.request.url.split("?")[0] == url]


def snowflake(moment: datetime) -> int:
    return (int(moment.timestamp() * 1000) - SNOWFLAKE_EPOCH_MS) << 22


def snowflake_time(tweet_id: int) -> datetime:
    return datetime.fromtimestamp(((tweet_id >> 22) + SNOWFLAKE_EPOCH_MS) / 1000, tz=UTC)


def stub_poll(api) -> None:
    """Two pages of mentions, one of search hits, and DMs whose second page reaches the
    newest event of ``CURSOR``."""
    api.get(MENTIONS_URL, json=payload("mentions_page1"), match=[paged("pagination_token")])
    api.get(
        MENTIONS_URL,
        json=payload("mentions_page2"),
        match=[paged("pagination_token", MENTIONS_PAGE_2)],
    )
    api.get(SEARCH_URL, json=payload("search"))
    api.get(DM_EVENTS_URL, json=payload("dm_events_page1"), match=[paged("pagination_token")])
    api.get(
        DM_EVENTS_URL, json=payload("dm_events_page2"), match=[paged("pagination_token", DM_PAGE_2)]
    )


@pytest.fixture
def api():
    """X's API, stubbed; a request to anything not registered fails."""
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


@pytest.fixture
def polled(api):
    stub_poll(api)
    result = XConnector().fetch(x_channel(), dict(CURSOR))
    return result, {post.external_id: post for post in result.posts}


# --- fetch -----------------------------------------------------------------------------------


def test_a_poll_reads_mentions_search_hits_and_direct_messages(polled):
    result, posts = polled
    assert set(posts) == {ANN_ROOT, BOB_REPLY, CARA_REPLY, FRIEDA_POST, ANN_DM, BOB_DM}
    assert len(result.posts) == 6


def test_authors_come_from_the_included_users(polled):
    _, posts = polled
    ann = posts[ANN_ROOT]
    assert ann.author == InboundAuthor(
        platform_user_id="1111111111",
        handle="ann_c",
        display_name="Ann Customer",
        profile_url="https://x.com/ann_c",
        followers_count=120,
        verified=False,
    )
    assert ann.kind == "mention"
    assert ann.body == "@acme my order #5512 still hasn't arrived, it's been 9 days. Any update?"
    assert ann.created_at == datetime(2024, 6, 10, 9, 15, tzinfo=UTC)
    assert ann.language == "en"
    assert ann.raw["id"] == ANN_ROOT
    assert ann.raw["_author"]["username"] == "ann_c"
    bob = posts[BOB_REPLY].author
    assert (bob.handle, bob.followers_count, bob.verified) == ("bob_buys", 45000, True)


def test_replies_name_the_post_they_answer_and_take_the_conversation_as_thread(polled):
    _, posts = polled
    cara = posts[CARA_REPLY]
    assert (cara.kind, cara.in_reply_to_id, cara.thread_id) == ("reply", ANN_ROOT, ANN_ROOT)
    bob = posts[BOB_REPLY]
    assert (bob.kind, bob.in_reply_to_id) == ("reply", "1800000000000000050")
    assert bob.thread_id == "1800000000000000050"
    assert (posts[ANN_ROOT].in_reply_to_id, posts[ANN_ROOT].thread_id) == ("", ANN_ROOT)


def test_a_search_hit_that_answers_no_one_is_a_post(polled):
    _, posts = polled
    frieda = posts[FRIEDA_POST]
    assert (frieda.kind, frieda.thread_id, frieda.language) == ("post", FRIEDA_POST, "de")
    assert frieda.author.handle == "frieda_f"


def test_a_post_found_by_mentions_and_search_is_taken_once_as_found_in_mentions(polled):
    result, posts = polled
    assert [p.external_id for p in result.posts].count(CARA_REPLY) == 1
    assert posts[CARA_REPLY].kind == "reply"


def test_direct_messages_are_threaded_by_their_sender(polled):
    _, posts = polled
    dm = posts[ANN_DM]
    assert (dm.kind, dm.thread_id, dm.in_reply_to_id) == ("dm", "1111111111", "")
    assert dm.body == "Hi, my order number is 5512."
    assert dm.author.handle == "ann_c"
    assert dm.created_at == datetime(2024, 6, 10, 9, 50, tzinfo=UTC)
    assert dm.raw["dm_conversation_id"] == "1111111111-2244994945"
    assert posts[BOB_DM].thread_id == "2222222222"


def test_the_accounts_own_posts_and_messages_retweets_and_joins_are_skipped(polled):
    result, posts = polled
    assert not {OWN_POST, OWN_DM, RETWEET, "1790000000000000510"} & set(posts)
    assert all(post.author.platform_user_id != OWN_ID for post in result.posts)


def test_mentions_follow_next_token_and_ask_only_for_posts_after_the_cursor(api):
    stub_poll(api)
    XConnector().fetch(x_channel(), dict(CURSOR))
    first, second = (query_of(call) for call in calls_to(api, MENTIONS_URL))
    assert first["since_id"] == second["since_id"] == CURSOR["mentions_since_id"]
    assert "pagination_token" not in first
    assert second["pagination_token"] == MENTIONS_PAGE_2
    assert first["max_results"] == "100"
    assert first["expansions"] == "author_id,referenced_tweets.id,in_reply_to_user_id"
    assert {"created_at", "conversation_id", "referenced_tweets", "lang", "author_id"} <= set(
        first["tweet.fields"].split(",")
    )
    assert first["user.fields"] == "username,name,public_metrics,verified,profile_image_url"


def test_the_search_asks_for_the_channels_keywords_without_retweets(api):
    stub_poll(api)
    XConnector().fetch(x_channel(), dict(CURSOR))
    (search,) = calls_to(api, SEARCH_URL)
    assert query_of(search)["query"] == "(acme) -is:retweet"


def test_reads_use_the_bearer_token_and_direct_messages_the_account_tokens(api):
    stub_poll(api)
    XConnector().fetch(x_channel(), dict(CURSOR))
    for url in (MENTIONS_URL, SEARCH_URL):
        assert calls_to(api, url)[0].request.headers["Authorization"].startswith("Bearer ")
    dm_call = calls_to(api, DM_EVENTS_URL)[0]
    assert dm_call.request.headers["Authorization"].startswith("OAuth ")
    assert query_of(dm_call)["dm_event.fields"] == (
        "id,text,created_at,sender_id,dm_conversation_id,event_type"
    )


def test_dm_paging_stops_at_the_newest_event_already_seen(api, polled):
    result, posts = polled
    # Page 2 still has a next_token; a third request would fail as unregistered.
    assert len(calls_to(api, DM_EVENTS_URL)) == 2
    assert not {"1790000000000000500", "1790000000000000490"} & set(posts)
    assert result.cursor["dm_newest_id"] == ANN_DM


def test_a_post_whose_author_is_missing_from_includes_is_rejected_and_the_rest_go_through(
    polled,
):
    result, posts = polled
    (rejected,) = result.rejected
    assert json.loads(rejected.raw)["id"] == MISSING_AUTHOR
    assert "5555555555" in rejected.error
    assert MISSING_AUTHOR not in posts
    assert ANN_ROOT in posts  # the next tweet on the same page


def test_the_new_cursor_holds_the_newest_id_of_each_stream(polled):
    result, _ = polled
    assert result.cursor == {
        "mentions_since_id": CARA_REPLY,
        "search_since_id": FRIEDA_POST,
        "dm_newest_id": ANN_DM,
    }


def test_a_poll_with_nothing_new_keeps_the_cursor(api):
    empty = {"meta": {"result_count": 0}}
    api.get(MENTIONS_URL, json=empty)
    api.get(SEARCH_URL, json=empty)
    api.get(DM_EVENTS_URL, json=payload("dm_events_page2"))
    cursor = {
        "mentions_since_id": CARA_REPLY,
        "search_since_id": str(snowflake(timezone.now() - timedelta(hours=1))),
        "dm_newest_id": "1790000000000000505",
    }
    result = XConnector().fetch(x_channel(), dict(cursor))
    assert result.posts == []
    assert result.rejected == []
    assert result.cursor == cursor


def test_a_first_poll_reads_one_page_per_stream_and_starts_from_its_newest_post(api):
    api.get(MENTIONS_URL, json=payload("mentions_page1"))
    api.get(SEARCH_URL, json=payload("search"))
    api.get(DM_EVENTS_URL, json=payload("dm_events_page1"))
    result = XConnector().fetch(x_channel(), {})
    assert len(api.calls) == 3  # no second pages, though both offered one
    assert all("since_id" not in query_of(call) for call in api.calls)
    assert {p.external_id for p in result.posts} == {CARA_REPLY, BOB_REPLY, FRIEDA_POST, ANN_DM}
    assert result.cursor == {
        "mentions_since_id": CARA_REPLY,
        "search_since_id": FRIEDA_POST,
        "dm_newest_id": ANN_DM,
    }


def test_a_backlog_beyond_the_page_bound_is_read_on_the_next_poll_below_the_oldest_id(
    api, monkeypatch
):
    monkeypatch.setattr("channels_ingest.connectors.x.MAX_PAGES", 1)
    channel = x_channel(credentials={"bearer_token": "b"}, settings={})
    api.get(MENTIONS_URL, json=payload("mentions_page1"), match=[paged("until_id")])
    api.get(MENTIONS_URL, json=payload("mentions_page2"), match=[paged("until_id", RETWEET)])

    first = XConnector().fetch(channel, {"mentions_since_id": "1800000000000000100"})
    assert first.cursor == {
        "mentions_since_id": "1800000000000000100",
        "mentions_until_id": RETWEET,
        "mentions_pending_since_id": CARA_REPLY,
    }
    second = XConnector().fetch(channel, first.cursor)
    resumed = query_of(api.calls[1])
    assert (resumed["since_id"], resumed["until_id"]) == ("1800000000000000100", RETWEET)
    assert "pagination_token" not in resumed
    assert ANN_ROOT in {p.external_id for p in second.posts}
    assert second.cursor == {"mentions_since_id": CARA_REPLY}


def test_a_search_position_older_than_the_search_window_is_moved_into_it(api):
    api.get(MENTIONS_URL, json={"meta": {"result_count": 0}})
    api.get(SEARCH_URL, json={"meta": {"result_count": 0}})
    channel = x_channel(credentials={"bearer_token": "b"})
    old = "1800000000000000100"  # June 2024
    result = XConnector().fetch(channel, {"mentions_since_id": old, "search_since_id": old})
    sent = int(query_of(calls_to(api, SEARCH_URL)[0])["since_id"])
    assert timezone.now() - timedelta(days=7) < snowflake_time(sent) < timezone.now()
    assert query_of(calls_to(api, MENTIONS_URL)[0])["since_id"] == old
    assert result.cursor["search_since_id"] == old  # only the request is adjusted


def test_a_recent_search_position_is_sent_as_it_is(api):
    api.get(MENTIONS_URL, json={"meta": {"result_count": 0}})
    api.get(SEARCH_URL, json={"meta": {"result_count": 0}})
    recent = str(snowflake(timezone.now() - timedelta(days=2)))
    XConnector().fetch(
        x_channel(credentials={"bearer_token": "b"}),
        {"mentions_since_id": "1", "search_since_id": recent},
    )
    assert query_of(calls_to(api, SEARCH_URL)[0])["since_id"] == recent


def test_without_search_settings_or_account_tokens_only_mentions_are_read(api):
    api.get(MENTIONS_URL, json=payload("mentions_page2"))
    result = XConnector().fetch(x_channel(credentials={"bearer_token": "b"}, settings={}), {})
    assert len(api.calls) == 1
    assert [p.external_id for p in result.posts] == [ANN_ROOT]


def test_direct_messages_can_be_turned_off_for_an_app_not_allowed_to_read_them(api):
    api.get(MENTIONS_URL, json=payload("mentions_page2"))
    XConnector().fetch(x_channel(settings={"direct_messages": False}), {})
    assert [call.request.url.split("?")[0] for call in api.calls] == [MENTIONS_URL]


def test_without_a_bearer_token_reads_are_signed_with_the_account_tokens(api):
    api.get(MENTIONS_URL, json=payload("mentions_page2"))
    api.get(DM_EVENTS_URL, json={"meta": {"result_count": 0}})
    credentials = {k: v for k, v in CREDENTIALS.items() if k != "bearer_token"}
    XConnector().fetch(x_channel(credentials=credentials, settings={}), {})
    assert all(c.request.headers["Authorization"].startswith("OAuth ") for c in api.calls)


def test_keywords_become_a_query_for_any_of_them_with_phrases_quoted():
    assert search_query({"keywords": ["acme", "acme fibre", " ", "AcmeHelp"]}) == (
        '(acme OR "acme fibre" OR AcmeHelp) -is:retweet'
    )
    assert search_query({"search_query": "@acme OR #acmehelp", "keywords": ["x"]}) == (
        "@acme OR #acmehelp"
    )
    assert search_query({}) == ""
    assert search_query({"keywords": []}) == ""


def test_a_channel_without_its_account_id_is_refused_before_calling_x(api):
    with pytest.raises(ConnectorError, match="account id"):
        XConnector().fetch(x_channel(external_account_id=""), {})


# --- errors ----------------------------------------------------------------------------------


def test_a_rate_limit_raises_rate_limited_with_xs_reset_time(api):
    reset = datetime(2030, 1, 1, 12, 15, tzinfo=UTC)
    api.get(
        MENTIONS_URL,
        status=429,
        json={
            "title": "Too Many Requests",
            "detail": "Too Many Requests",
            "type": "about:blank",
            "status": 429,
        },
        headers={
            "x-rate-limit-limit": "450",
            "x-rate-limit-remaining": "0",
            "x-rate-limit-reset": str(int(reset.timestamp())),
        },
    )
    with pytest.raises(RateLimited) as raised:
        XConnector().fetch(x_channel(), dict(CURSOR))
    assert raised.value.reset_at == reset
    assert "Too Many Requests" in str(raised.value)


def test_a_rate_limit_without_a_reset_time_waits_a_rate_limit_window(api):
    api.get(MENTIONS_URL, status=429, json={"title": "Too Many Requests", "status": 429})
    with pytest.raises(RateLimited) as raised:
        XConnector().fetch(x_channel(), dict(CURSOR))
    expected = timezone.now() + timedelta(minutes=15)
    assert abs(raised.value.reset_at - expected) < timedelta(seconds=30)


def test_rejected_credentials_ask_for_reauthentication(api):
    api.get(
        MENTIONS_URL,
        status=401,
        json={
            "title": "Unauthorized",
            "type": "about:blank",
            "status": 401,
            "detail": "Unauthorized",
        },
    )
    with pytest.raises(ReauthRequired, match="Unauthorized"):
        XConnector().fetch(x_channel(), dict(CURSOR))


@pytest.mark.parametrize(
    "body",
    [
        {"errors": [{"code": 89, "message": "Invalid or expired token."}]},
        {
            "errors": [
                {
                    "code": 64,
                    "message": "Your account is suspended and is not permitted to access this "
                    "feature.",
                }
            ]
        },
    ],
)
def test_a_refusal_naming_a_dead_token_or_suspended_account_asks_for_reauthentication(api, body):
    api.get(MENTIONS_URL, status=403, json=body)
    with pytest.raises(ReauthRequired, match=body["errors"][0]["message"][:20]):
        XConnector().fetch(x_channel(), dict(CURSOR))


def test_other_refusals_are_connector_errors_carrying_xs_message(api):
    api.get(
        MENTIONS_URL,
        status=403,
        json={
            "client_id": "27614530",
            "detail": "When authenticating requests to the Twitter API v2 endpoints, you must use "
            "keys and tokens from a Twitter developer App that is attached to a Project. You can "
            "create a project via the developer portal.",
            "registration_url": "https://developer.twitter.com/en/docs/projects/overview",
            "title": "Client Forbidden",
            "required_enrollment": "Appropriate Level of API Access",
            "reason": "client-not-enrolled",
            "type": "https://api.twitter.com/2/problems/client-forbidden",
        },
    )
    with pytest.raises(ConnectorError) as raised:
        XConnector().fetch(x_channel(), dict(CURSOR))
    assert not isinstance(raised.value, ReauthRequired | TransientError)
    assert "attached to a Project" in str(raised.value)


def test_an_invalid_request_is_a_connector_error(api):
    api.get(MENTIONS_URL, json=payload("mentions_page2"))
    api.get(
        SEARCH_URL,
        status=400,
        json={
            "errors": [
                {
                    "parameters": {"query": ["(acme"]},
                    "message": "There were errors processing your request: missing ')'",
                }
            ],
            "title": "Invalid Request",
            "detail": "One or more parameters to your request was invalid.",
            "type": "https://api.twitter.com/2/problems/invalid-request",
        },
    )
    channel = x_channel(credentials={"bearer_token": "b"}, settings={"search_query": "(acme"})
    with pytest.raises(ConnectorError, match="missing '\\)'") as raised:
        XConnector().fetch(channel, {})
    assert not isinstance(raised.value, TransientError)


def test_a_server_error_is_transient(api):
    api.get(
        MENTIONS_URL,
        status=503,
        json={
            "title": "Service Unavailable",
            "detail": "Service Unavailable",
            "type": "about:blank",
            "status": 503,
        },
    )
    with pytest.raises(TransientError, match="503"):
        XConnector().fetch(x_channel(), dict(CURSOR))


@pytest.mark.parametrize(
    "failure",
    [
        requests.exceptions.ReadTimeout("Read timed out. (read timeout=30.0)"),
        requests.exceptions.ConnectTimeout("Connection to api.twitter.com timed out."),
        requests.exceptions.ConnectionError("Connection reset by peer"),
    ],
)
def test_a_timeout_or_lost_connection_is_transient(api, failure):
    api.get(MENTIONS_URL, body=failure)
    with pytest.raises(TransientError):
        XConnector().fetch(x_channel(), dict(CURSOR))


def test_every_request_carries_a_timeout(api):
    api.get(MENTIONS_URL, json={"meta": {"result_count": 0}})
    XConnector().fetch(x_channel(credentials={"bearer_token": "b"}, settings={}), {})
    assert api.calls[0].request.req_kwargs["timeout"] == (5.0, 30.0)


# --- send ------------------------------------------------------------------------------------


def outbound(channel, *, thread_key: str, kind: str, in_reply_to: str = "", body: str = "Hi"):
    conversation = ConversationFactory(channel=channel, thread_key=thread_key)
    return MessageFactory(
        conversation=conversation,
        direction=Direction.OUT,
        kind=kind,
        external_id=None,
        in_reply_to_external_id=in_reply_to,
        body=body,
    )


def test_a_reply_is_posted_under_the_post_it_answers(api):
    api.post(
        TWEETS_URL,
        status=201,
        json={
            "data": {
                "id": "1800000000000000300",
                "edit_history_tweet_ids": ["1800000000000000300"],
                "text": "Sorry Cara, we're on it.",
            }
        },
    )
    message = outbound(
        x_channel(),
        thread_key=f"thread:{ANN_ROOT}",
        kind="reply",
        in_reply_to=CARA_REPLY,
        body="Sorry Cara, we're on it.",
    )
    sent = XConnector().send(message.channel, message)
    assert sent.external_id == "1800000000000000300"
    request = api.calls[0].request
    assert json.loads(request.body) == {
        "text": "Sorry Cara, we're on it.",
        "reply": {"in_reply_to_tweet_id": CARA_REPLY},
    }
    assert request.headers["Authorization"].startswith("OAuth ")


def test_a_direct_message_is_sent_to_the_customer_of_the_thread(api):
    api.post(
        f"{API}/dm_conversations/with/1111111111/messages",
        status=201,
        json={
            "data": {
                "dm_conversation_id": "1111111111-2244994945",
                "dm_event_id": "1790000000000000700",
            }
        },
    )
    message = outbound(
        x_channel(), thread_key="dm:1111111111", kind="dm", body="Thanks Ann, checking now."
    )
    sent = XConnector().send(message.channel, message)
    assert sent.external_id == "1790000000000000700"
    assert "/dm_conversations/with/1111111111/messages" in api.calls[0].request.url
    assert json.loads(api.calls[0].request.body) == {"text": "Thanks Ann, checking now."}


def test_a_reply_with_no_post_to_answer_is_refused_without_calling_x(api):
    message = outbound(x_channel(), thread_key=f"thread:{ANN_ROOT}", kind="reply")
    with pytest.raises(ConnectorError, match="no X post to answer"):
        XConnector().send(message.channel, message)
    assert len(api.calls) == 0


def test_sending_without_the_account_tokens_asks_for_reauthentication(api):
    channel = x_channel(credentials={"bearer_token": "b"})
    message = outbound(channel, thread_key="dm:1111111111", kind="dm")
    with pytest.raises(ReauthRequired):
        XConnector().send(channel, message)


def test_a_refused_send_reports_xs_reason(api):
    api.post(
        TWEETS_URL,
        status=403,
        json={
            "detail": "You are not allowed to create a Tweet with duplicate content.",
            "type": "about:blank",
            "title": "Forbidden",
            "status": 403,
        },
    )
    message = outbound(x_channel(), thread_key="thread:1", kind="reply", in_reply_to="1")
    with pytest.raises(ConnectorError, match="duplicate content") as raised:
        XConnector().send(message.channel, message)
    assert not isinstance(raised.value, ReauthRequired)


def test_a_send_that_times_out_is_transient(api):
    api.post(TWEETS_URL, body=requests.exceptions.ReadTimeout("Read timed out."))
    message = outbound(x_channel(), thread_key="thread:1", kind="reply", in_reply_to="1")
    with pytest.raises(TransientError):
        XConnector().send(message.channel, message)


# --- parse (Account Activity webhooks) -------------------------------------------------------


def test_a_webhook_payload_yields_its_posts_and_messages_and_skips_echoes_and_likes():
    result = XConnector().parse(x_channel(), payload("account_activity"))
    posts = {post.external_id: post for post in result.posts}
    assert set(posts) == {"1800000000000000200", "1800000000000000201", "1790000000000000600"}
    assert result.rejected == []

    reply = posts["1800000000000000200"]
    assert (reply.kind, reply.in_reply_to_id) == ("reply", "1800000000000000050")
    assert reply.created_at == datetime(2024, 6, 10, 11, 5, 30, tzinfo=UTC)
    assert reply.author == InboundAuthor(
        platform_user_id="1111111111",
        handle="ann_c",
        display_name="Ann Customer",
        profile_url="https://x.com/ann_c",
        followers_count=120,
        verified=False,
    )
    assert reply.raw["_author"]["screen_name"] == "ann_c"

    mention = posts["1800000000000000201"]
    assert (mention.kind, mention.thread_id, mention.language) == (
        "mention",
        "1800000000000000201",
        "en",
    )
    assert mention.body.endswith("What are you going to do about it?")  # the untruncated text
    assert mention.author.verified is True

    dm = posts["1790000000000000600"]
    assert (dm.kind, dm.thread_id) == ("dm", "2222222222")
    assert dm.body == "Here is a photo of the error https://t.co/abcdEFGH12"
    assert dm.created_at == datetime(2024, 6, 10, 11, 10, 0, 123000, tzinfo=UTC)
    assert (dm.author.handle, dm.author.followers_count) == ("bob_buys", 45000)


@pytest.mark.parametrize(
    "events",
    [
        {"favorite_events": payload("account_activity")["favorite_events"]},
        {"follow_events": [{"type": "follow", "created_timestamp": "1718017800000"}]},
        {"direct_message_indicate_typing_events": [{"created_timestamp": "1718017800000"}]},
        {"tweet_delete_events": [{"status": {"id": "1", "user_id": "1111111111"}}]},
    ],
)
def test_events_other_than_posts_and_messages_yield_nothing(events):
    result = XConnector().parse(x_channel(), {"for_user_id": OWN_ID, **events})
    assert (result.posts, result.rejected) == ([], [])


def test_an_unreadable_webhook_event_is_rejected_and_the_rest_go_through():
    good = payload("account_activity")["tweet_create_events"][0]
    body = {
        "for_user_id": OWN_ID,
        "tweet_create_events": [good, {"id_str": "1800000000000000203", "text": "no user"}],
        "direct_message_events": [
            {
                "type": "message_create",
                "id": "1790000000000000602",
                "created_timestamp": "1718017900000",
                "message_create": {
                    "target": {"recipient_id": OWN_ID},
                    "sender_id": "9999999999",
                    "message_data": {"text": "hello?"},
                },
            }
        ],
        "users": {},
    }
    result = XConnector().parse(x_channel(), body)
    assert [p.external_id for p in result.posts] == [good["id_str"]]
    tweet, message = result.rejected
    assert json.loads(tweet.raw)["id_str"] == "1800000000000000203"
    assert "no user" in tweet.error
    assert json.loads(message.raw)["id"] == "1790000000000000602"
    assert "9999999999" in message.error


def test_a_webhook_payload_for_another_account_is_rejected_whole():
    body = payload("account_activity") | {"for_user_id": "123456"}
    result = XConnector().parse(x_channel(), body)
    assert result.posts == []
    (rejected,) = result.rejected
    assert "123456" in rejected.error
    assert json.loads(rejected.raw)["for_user_id"] == "123456"


# --- webhook security ------------------------------------------------------------------------


def expected_signature(secret: str, message: bytes) -> str:
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return "sha256=" + base64.b64encode(digest).decode()


def test_the_crc_response_is_the_base64_hmac_of_the_token():
    assert crc_response_token("secret", "token") == (
        "sha256=6UERDj0r/oJiHw4+FDRzDXMF0QbF9oyHFl0LJ6RhGko="
    )
    assert crc_response_token(
        "test-consumer-secret", "0a1b2c3d-crc-challenge"
    ) == expected_signature("test-consumer-secret", b"0a1b2c3d-crc-challenge")


def test_a_signature_over_the_exact_body_is_valid():
    body = json.dumps(payload("account_activity")).encode()
    assert signature_is_valid("s3cret", body, expected_signature("s3cret", body))
    utf8 = '{"text": "Grüße aus Köln, 東京 too 👋"}'.encode()
    assert signature_is_valid("s3cret", utf8, expected_signature("s3cret", utf8))


def test_a_tampered_body_or_another_secret_is_invalid():
    body = b'{"for_user_id": "2244994945"}'
    header = expected_signature("s3cret", body)
    assert not signature_is_valid("s3cret", body.replace(b"2244", b"9999"), header)
    assert not signature_is_valid("other-secret", body, header)


@pytest.mark.parametrize(
    "header", [None, "", "sha256=", "sha256=not-base64!!", "md5=abc", "sha256=Grüße"]
)
def test_a_missing_or_garbled_signature_is_invalid(header):
    assert not signature_is_valid("s3cret", b"{}", header)


def test_an_empty_secret_validates_nothing():
    assert not signature_is_valid("", b"{}", expected_signature("", b"{}"))


# --- through the pipeline --------------------------------------------------------------------


def test_a_poll_is_stored_threaded_and_only_once(api):
    stub_poll(api)
    channel = x_channel()
    fetched = XConnector().fetch(channel, dict(CURSOR))

    first = ingest(
        channel=channel, posts=fetched.posts, cursor=fetched.cursor, rejected=fetched.rejected
    )
    assert first.stored == 6
    messages = {m.external_id: m for m in Message.objects.filter(channel=channel)}
    # Cara answers Ann's post: another customer, the same conversation.
    assert messages[CARA_REPLY].conversation_id == messages[ANN_ROOT].conversation_id
    assert messages[ANN_ROOT].conversation.thread_key == f"thread:{ANN_ROOT}"
    assert messages[CARA_REPLY].in_reply_to_external_id == ANN_ROOT
    ann_dm = messages[ANN_DM].conversation
    assert ann_dm.thread_key == "dm:1111111111"
    assert ann_dm.pk != messages[ANN_ROOT].conversation_id
    assert messages[ANN_DM].author_identity == messages[ANN_ROOT].author_identity
    channel.refresh_from_db()
    assert channel.cursor == fetched.cursor
    assert DeadLetter.objects.filter(channel=channel).count() == 1

    conversations = Conversation.objects.filter(channel=channel).count()
    again = ingest(channel=channel, posts=fetched.posts, cursor=fetched.cursor)
    assert (again.stored, again.duplicates) == (0, 6)
    assert Message.objects.filter(channel=channel).count() == 6
    assert Conversation.objects.filter(channel=channel).count() == conversations


def test_agents_answers_go_under_the_latest_post_and_to_the_dm_sender(api):
    stub_poll(api)
    channel = x_channel()
    fetched = XConnector().fetch(channel, dict(CURSOR))
    ingest(channel=channel, posts=fetched.posts, cursor=fetched.cursor)
    messages = {m.external_id: m for m in Message.objects.filter(channel=channel)}
    agent = UserFactory()

    api.post(TWEETS_URL, status=201, json={"data": {"id": "1800000000000000400", "text": "x"}})
    api.post(
        f"{API}/dm_conversations/with/1111111111/messages",
        status=201,
        json={"data": {"dm_conversation_id": "1111111111-2244994945", "dm_event_id": "17900701"}},
    )
    public = conversation_reply_create(
        conversation=messages[ANN_ROOT].conversation, author=agent, body="We're on it, Ann."
    )
    private = conversation_reply_create(
        conversation=messages[ANN_DM].conversation, author=agent, body="Thanks, checking now."
    )
    assert XConnector().send(channel, public).external_id == "1800000000000000400"
    assert XConnector().send(channel, private).external_id == "17900701"
    tweet, dm = api.calls[-2].request, api.calls[-1].request
    assert json.loads(tweet.body)["reply"] == {"in_reply_to_tweet_id": CARA_REPLY}
    assert dm.url.endswith("/dm_conversations/with/1111111111/messages")


# --- dead letters of one tweet or event ------------------------------------------------------

BAD_TWEET = "1800000000000000130"
GOOD_TWEET = "1800000000000000131"
BAD_DM = "1790000000000000540"


def user(user_id: str) -> dict:
    users = (
        payload("mentions_page1")["includes"]["users"]
        + payload("dm_events_page1")["includes"]["users"]
    )
    return next(u for u in users if u["id"] == user_id)


def tweet(tweet_id: str, author_id: str, **fields) -> dict:
    return {
        "id": tweet_id,
        "edit_history_tweet_ids": [tweet_id],
        "text": f"@acme tweet {tweet_id}",
        "author_id": author_id,
        "created_at": "2024-06-10T10:00:00.000Z",
        "conversation_id": tweet_id,
        "lang": "en",
        **fields,
    }


def tweet_page(*tweets: dict, users: list[dict]) -> dict:
    ids = [t["id"] for t in tweets]
    return {
        "data": list(tweets),
        "includes": {"users": users},
        "meta": {"result_count": len(ids), "newest_id": max(ids), "oldest_id": min(ids)},
    }


def poll_into_dead_letters(channel) -> DeadLetter:
    """Fetch and ingest as the poll task does; the one dead letter it wrote."""
    fetched = XConnector().fetch(channel, {})
    ingest(channel=channel, posts=fetched.posts, cursor=fetched.cursor, rejected=fetched.rejected)
    return DeadLetter.objects.get(channel=channel)


def fix_raw(letter: DeadLetter, **fields) -> DeadLetter:
    """The letter's item as an admin corrects it."""
    DeadLetter.objects.filter(pk=letter.pk).update(raw=json.dumps(json.loads(letter.raw) | fields))
    letter.refresh_from_db()
    return letter


@pytest.fixture
def bad_mention(api):
    """A mentions page with Cara's readable tweet and Bob's, whose time is a number."""
    page = tweet_page(
        tweet(BAD_TWEET, "2222222222", created_at=1718013600),
        tweet(GOOD_TWEET, "3333333333"),
        users=[user("2222222222"), user("3333333333")],
    )
    api.get(MENTIONS_URL, json=page)
    channel = x_channel(credentials={"bearer_token": "b"}, settings={})
    return channel, poll_into_dead_letters(channel)


def test_a_rejected_mention_keeps_its_reader_and_its_authors_included_user(bad_mention):
    channel, letter = bad_mention
    assert list(Message.objects.filter(channel=channel).values_list("external_id", flat=True)) == [
        GOOD_TWEET
    ]
    assert json.loads(letter.raw)["id"] == BAD_TWEET  # the item alone, for inspection
    assert letter.context == {
        "reader": "mention",
        "own_id": OWN_ID,
        "users": {"2222222222": user("2222222222")},
    }


def test_a_rejected_mention_still_unreadable_stays_with_the_new_reason(bad_mention):
    channel, letter = bad_mention
    letter = dead_letter_retry(letter=letter)
    assert letter.status == DeadLetterStatus.NEW
    assert letter.error == "Retry failed: Unreadable X post: it has no created_at"
    assert Message.objects.filter(channel=channel).count() == 1


def test_a_corrected_mention_is_stored_once_by_its_retry_with_the_kept_author(bad_mention):
    channel, letter = bad_mention
    letter = dead_letter_retry(letter=fix_raw(letter, created_at="2024-06-10T10:00:00.000Z"))
    assert letter.status == DeadLetterStatus.RETRIED
    assert letter.resolved_at is not None
    stored = Message.objects.get(channel=channel, external_id=BAD_TWEET)
    assert stored.kind == "mention"
    assert stored.author_identity.handle == "bob_buys"  # from the page's includes.users

    dead_letter_retry(letter=letter)
    assert Message.objects.filter(channel=channel, external_id=BAD_TWEET).count() == 1


def test_a_mention_is_read_again_with_the_readers_code_of_today(bad_mention, monkeypatch):
    from channels_ingest.connectors import x

    channel, letter = bad_mention
    read_time = x._iso_time

    def read_epoch_too(value):
        if isinstance(value, int):
            return datetime.fromtimestamp(value, tz=UTC)
        return read_time(value)

    monkeypatch.setattr(x, "_iso_time", read_epoch_too)
    assert dead_letter_retry(letter=letter).status == DeadLetterStatus.RETRIED
    stored = Message.objects.get(channel=channel, external_id=BAD_TWEET)
    assert stored.created_at == datetime.fromtimestamp(1718013600, tz=UTC)


def test_a_search_hit_whose_author_x_left_out_stays_unreadable(api):
    api.get(MENTIONS_URL, json={"meta": {"result_count": 0}})
    api.get(
        SEARCH_URL,
        json=tweet_page(
            tweet(BAD_TWEET, "5555555555"),
            tweet(GOOD_TWEET, "3333333333"),
            users=[user("3333333333")],
        ),
    )
    channel = x_channel(credentials={"bearer_token": "b"})
    letter = poll_into_dead_letters(channel)
    assert letter.context == {"reader": "search", "own_id": OWN_ID, "users": {}}
    letter = dead_letter_retry(letter=letter)
    assert letter.status == DeadLetterStatus.NEW
    assert "5555555555 is not among the users X included" in letter.error
    assert "cannot be read again alone" not in letter.error


def test_a_corrected_direct_message_is_stored_once_in_its_senders_thread(api):
    page = payload("dm_events_page1")
    bad = {**page["data"][0], "id": BAD_DM, "text": None}
    page["data"].insert(0, bad)
    api.get(MENTIONS_URL, json={"meta": {"result_count": 0}})
    api.get(DM_EVENTS_URL, json=page, match=[paged("pagination_token")])
    api.get(
        DM_EVENTS_URL, json=payload("dm_events_page2"), match=[paged("pagination_token", DM_PAGE_2)]
    )
    channel = x_channel(settings={})
    fetched = XConnector().fetch(channel, {"dm_newest_id": CURSOR["dm_newest_id"]})
    ingest(channel=channel, posts=fetched.posts, cursor=fetched.cursor, rejected=fetched.rejected)
    letter = DeadLetter.objects.get(channel=channel)
    assert letter.context == {
        "reader": "dm",
        "own_id": OWN_ID,
        "users": {"1111111111": user("1111111111")},
    }
    assert Message.objects.filter(channel=channel, external_id=ANN_DM).exists()

    assert dead_letter_retry(letter=letter).status == DeadLetterStatus.NEW
    letter = dead_letter_retry(letter=fix_raw(letter, text="Any news on 5512?"))
    assert letter.status == DeadLetterStatus.RETRIED
    dm = Message.objects.get(channel=channel, external_id=BAD_DM)
    assert (dm.kind, dm.body, dm.conversation.thread_key) == (
        "dm",
        "Any news on 5512?",
        "dm:1111111111",
    )
    assert (
        dm.conversation_id
        == Message.objects.get(channel=channel, external_id=ANN_DM).conversation_id
    )
    dead_letter_retry(letter=letter)
    assert Message.objects.filter(channel=channel, external_id=BAD_DM).count() == 1


def test_a_corrected_event_of_a_webhook_delivery_is_stored_by_its_retry():
    channel = x_channel()
    body = payload("account_activity")
    dm = body["direct_message_events"][0]
    dm_id = dm["id"]
    dm["message_create"].pop("message_data")
    delivery = WebhookDelivery.objects.create(channel=channel, body=json.dumps(body))
    assert webhook_process(delivery_id=delivery.pk) == 2  # the two tweets
    letter = DeadLetter.objects.get(channel=channel)
    sender = dm["message_create"]["sender_id"]
    assert letter.context["reader"] == "webhook_dm"
    assert letter.context["users"][sender] == body["users"][sender]

    assert dead_letter_retry(letter=letter).status == DeadLetterStatus.NEW
    assert "it has no message_data" in letter.error
    created = json.loads(letter.raw)["message_create"] | {"message_data": {"text": "Hello?"}}
    letter = dead_letter_retry(letter=fix_raw(letter, message_create=created))
    assert letter.status == DeadLetterStatus.RETRIED
    assert Message.objects.get(channel=channel, external_id=dm_id).body == "Hello?"
    dead_letter_retry(letter=letter)
    assert Message.objects.filter(channel=channel).count() == 3
