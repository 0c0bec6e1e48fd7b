"""X: mentions, brand search and direct messages read through API v2, Account Activity webhook
payloads, and replies or direct messages sent back from the account.

Reads use the app's bearer token when the channel has one, the account's user tokens
otherwise; direct messages and everything we send need the user tokens (OAuth 1.0a).

Cursor keys, per tweet stream ("mentions", "search"):
  ``<stream>_since_id``          newest tweet id taken in; the next poll asks for newer ones.
  ``<stream>_until_id``          set while catching up on a backlog larger than one poll reads:
                                 the oldest id read so far, the next poll continues below it.
  ``<stream>_pending_since_id``  the newest id of that backlog, adopted once it is read.
and ``dm_newest_id``, the newest direct message event seen (the endpoint has no since_id).
"""

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, ClassVar

import requests
import tweepy
from django.utils import timezone

from channels_ingest.connectors.base import (
    ConnectorError,
    RateLimited,
    ReauthRequired,
    TransientError,
)
from channels_ingest.platforms import Platform
from channels_ingest.types import (
    FetchResult,
    InboundAuthor,
    InboundPost,
    ParseResult,
    RejectedPayload,
    SendResult,
)

if TYPE_CHECKING:
    from channels_ingest.models import ChannelAccount
    from conversations.models import Message

PAGE_SIZE = 100
# Pages per stream and poll: bounds one poll's cost against the rate limits; a larger backlog
# of mentions or search hits is read on the following polls (see the cursor keys above).
MAX_PAGES = 5
REQUEST_TIMEOUT = (5.0, 30.0)  # connect, read: a worker must never hang on a silent socket
RATE_LIMIT_FALLBACK = timedelta(minutes=15)  # X's rate limit windows are 15 minutes
# Recent search refuses a since_id older than seven days; keep a margin for the request's trip.
SEARCH_WINDOW = timedelta(days=7) - timedelta(minutes=10)
SNOWFLAKE_EPOCH_MS = 1288834974657  # X ids carry their creation time in milliseconds from here

TWEET_FIELDS = [
    "created_at",
    "conversation_id",
    "in_reply_to_user_id",
    "referenced_tweets",
    "lang",
    "author_id",
    "note_tweet",  # the full text of posts longer than 280 characters
]
TWEET_EXPANSIONS = ["author_id", "referenced_tweets.id", "in_reply_to_user_id"]
USER_FIELDS = ["username", "name", "public_metrics", "verified", "profile_image_url"]
DM_EVENT_FIELDS = ["id", "text", "created_at", "sender_id", "dm_conversation_id", "event_type"]

_USER_TOKEN_KEYS = ("consumer_key", "consumer_secret", "access_token", "access_token_secret")
# Error codes and phrases X uses when the account's tokens no longer work; only reconnecting
# the account helps. 32 could not authenticate, 64 suspended, 89 invalid or expired token,
# 326 account locked.
_REAUTH_CODES = {32, 64, 89, 326}
_REAUTH_PHRASES = (
    "suspended",
    "revoked",
    "expired",
    "locked",
    "invalid token",
    "token is invalid",
    "token was invalid",
    "could not authenticate",
)
# Language tags X gives posts without a detectable language (undetermined, media only, ...).
_NO_LANGUAGE = {"und", "zxx", "qme", "qht", "qam", "qct", "qst"}

PageReader = Callable[[str | None, str | None, str | None], Any]


class XConnector:
    platform: ClassVar[str] = Platform.X

    def fetch(self, channel: "ChannelAccount", cursor: dict[str, Any]) -> FetchResult:
        """Mentions, then search hits if the channel has a query, then direct messages if it
        has user tokens (unless its ``direct_messages`` setting is false). Any error aborts the
        whole poll: the cursor is not advanced, so the next poll reads the same posts again and
        the pipeline stores them once."""
        own_id = _own_account_id(channel)
        client = _client(channel)
        as_user = _reads_as_user(channel)
        new_cursor = dict(cursor)
        # Keyed by id: a tweet that is both a mention and a search hit is taken once, as the
        # mentions stream read it.
        posts: dict[str, InboundPost] = {}
        rejected: list[RejectedPayload] = []

        def mentions_page(since: str | None, until: str | None, token: str | None) -> Any:
            with _x_errors("reading the account's mentions"):
                return client.get_users_mentions(
                    id=own_id,
                    since_id=since,
                    until_id=until,
                    pagination_token=token,
                    max_results=PAGE_SIZE,
                    expansions=TWEET_EXPANSIONS,
                    tweet_fields=TWEET_FIELDS,
                    user_fields=USER_FIELDS,
                    user_auth=as_user,
                )

        mention = _ItemReader("mention", own_id)
        for tweet, users in _tweet_stream(mentions_page, "mentions", cursor, new_cursor):
            _take(tweet, users, mention, posts, rejected)

        query = search_query(channel.settings)
        if query:

            def search_page(since: str | None, until: str | None, token: str | None) -> Any:
                since, until = _within_search_window(since, until)
                with _x_errors("searching recent posts"):
                    return client.search_recent_tweets(
                        query=query,
                        since_id=since,
                        until_id=until,
                        next_token=token,
                        max_results=PAGE_SIZE,
                        expansions=TWEET_EXPANSIONS,
                        tweet_fields=TWEET_FIELDS,
                        user_fields=USER_FIELDS,
                        user_auth=as_user,
                    )

            # A search hit is a post about the brand (a reply stays a reply); one that also
            # mentions the account has normally been taken from the mentions already.
            hit = _ItemReader("search", own_id)
            for tweet, users in _tweet_stream(search_page, "search", cursor, new_cursor):
                _take(tweet, users, hit, posts, rejected)

        # Reading DMs needs the account's tokens and an app allowed to read them; an admin whose
        # app is not can turn them off rather than see every poll fail.
        if _has_user_tokens(channel) and channel.settings.get("direct_messages", True):

            def dm_page(token: str | None) -> Any:
                with _x_errors("reading direct messages"):
                    return client.get_direct_message_events(
                        dm_event_fields=DM_EVENT_FIELDS,
                        event_types="MessageCreate",
                        expansions=["sender_id"],
                        user_fields=USER_FIELDS,
                        max_results=PAGE_SIZE,
                        pagination_token=token,
                        user_auth=True,
                    )

            dm = _ItemReader("dm", own_id)
            for event, users in _dm_stream(dm_page, cursor, new_cursor):
                _take(event, users, dm, posts, rejected)

        return FetchResult(posts=list(posts.values()), cursor=new_cursor, rejected=rejected)

    def parse(self, channel: "ChannelAccount", payload: Any) -> ParseResult:
        """One Account Activity API delivery. Posts and direct messages are read; every other
        event (likes, follows, deletions, typing, read receipts) is not ours to store."""
        if not isinstance(payload, dict):
            return ParseResult(
                posts=[], rejected=[_rejected(payload, "The X webhook payload is not an object.")]
            )
        own_id = channel.external_account_id or str(payload.get("for_user_id") or "")
        for_user = str(payload.get("for_user_id") or "")
        if for_user and for_user != own_id:
            reason = (
                f"The X webhook payload is for account {for_user}, "
                f"not this channel's account {own_id}."
            )
            return ParseResult(posts=[], rejected=[_rejected(payload, reason)])

        posts: dict[str, InboundPost] = {}
        rejected: list[RejectedPayload] = []
        tweet_reader = _ItemReader("webhook_tweet", own_id)
        for tweet in _list(payload.get("tweet_create_events")):
            _take(tweet, {}, tweet_reader, posts, rejected)
        users = payload.get("users")
        users = users if isinstance(users, dict) else {}
        dm_reader = _ItemReader("webhook_dm", own_id)
        for event in _list(payload.get("direct_message_events")):
            _take(event, users, dm_reader, posts, rejected)
        return ParseResult(posts=list(posts.values()), rejected=rejected)

    def read_item(
        self, channel: "ChannelAccount", context: dict[str, Any], item: Any
    ) -> ParseResult:
        """A tweet or DM event rejected from a poll page or a delivery, read again by the
        reader that rejected it, with the users of its page it referred to."""
        name = context.get("reader")
        if name not in _READERS:
            raise ConnectorError(f"No X reader is called {name!r}: the item cannot be read.")
        own_id = context.get("own_id")
        if not isinstance(own_id, str):
            own_id = channel.external_account_id
        users = context.get("users")
        posts: dict[str, InboundPost] = {}
        rejected: list[RejectedPayload] = []
        _take(
            item,
            users if isinstance(users, dict) else {},
            _ItemReader(str(name), own_id),
            posts,
            rejected,
        )
        return ParseResult(posts=list(posts.values()), rejected=rejected)

    def send(self, channel: "ChannelAccount", message: "Message") -> SendResult:
        """A direct message to the customer of a DM conversation, or a reply under the post
        the message answers."""
        if not _has_user_tokens(channel):
            raise ReauthRequired(
                "Sending on X needs the account's user tokens (consumer key and secret, access "
                "token and secret). Reconnect the X account."
            )
        client = _client(channel)
        if message.kind == "dm":
            recipient = _dm_recipient(message.conversation.thread_key)
            with _x_errors("sending a direct message"):
                response = client.create_direct_message(
                    participant_id=recipient, text=message.body, user_auth=True
                )
            return SendResult(external_id=_created_id(response, "dm_event_id", "direct message"))
        if not message.in_reply_to_external_id:
            raise ConnectorError(
                "This reply has no X post to answer: the conversation holds no post from the "
                "customer to reply under."
            )
        with _x_errors("posting a reply"):
            response = client.create_tweet(
                text=message.body,
                in_reply_to_tweet_id=message.in_reply_to_external_id,
                user_auth=True,
            )
        return SendResult(external_id=_created_id(response, "id", "reply"))


# --- Webhooks -------------------------------------------------------------------------------


def crc_response_token(consumer_secret: str, crc_token: str) -> str:
    """The answer to X's challenge-response check of a webhook URL."""
    digest = hmac.new(consumer_secret.encode(), crc_token.encode(), hashlib.sha256).digest()
    return "sha256=" + base64.b64encode(digest).decode("ascii")


def signature_is_valid(consumer_secret: str, body: bytes, header: str | None) -> bool:
    """Whether ``x-twitter-webhooks-signature`` signs this exact body with our app's secret."""
    if not consumer_secret or not header:
        # With an empty key anyone could compute the signature.
        return False
    digest = hmac.new(consumer_secret.encode(), body, hashlib.sha256).digest()
    expected = "sha256=" + base64.b64encode(digest).decode("ascii")
    # As bytes: compare_digest refuses str with non-ASCII characters, which a forged header has.
    return hmac.compare_digest(expected.encode(), header.strip().encode("utf-8", "replace"))


# --- Settings and credentials ---------------------------------------------------------------


def search_query(settings: dict[str, Any]) -> str:
    """The channel's raw ``search_query``, or one built from its ``keywords``: any of them,
    phrases quoted, retweets left out (they repeat a post we already have)."""
    raw = settings.get("search_query")
    if isinstance(raw, str) and raw.strip():
        return raw.strip()
    keywords = settings.get("keywords")
    if not isinstance(keywords, list):
        return ""
    terms = []
    for keyword in keywords:
        word = str(keyword).strip().replace('"', "")
        if word:
            terms.append(f'"{word}"' if any(c.isspace() for c in word) else word)
    return f"({' OR '.join(terms)}) -is:retweet" if terms else ""


def _own_account_id(channel: "ChannelAccount") -> str:
    own_id = channel.external_account_id.strip()
    if not own_id:
        raise ConnectorError(
            "The X channel has no account id. Enter the account's numeric X user id in the "
            "channel settings."
        )
    return own_id


def _credentials(channel: "ChannelAccount") -> dict[str, Any]:
    value = channel.credentials
    return value if isinstance(value, dict) else {}


def _has_user_tokens(channel: "ChannelAccount") -> bool:
    credentials = _credentials(channel)
    return all(credentials.get(key) for key in _USER_TOKEN_KEYS)


def _reads_as_user(channel: "ChannelAccount") -> bool:
    if _credentials(channel).get("bearer_token"):
        return False
    if _has_user_tokens(channel):
        return True
    raise ReauthRequired(
        "The X channel has no credentials: add a bearer token or the account's user tokens."
    )


class _TimeoutSession(requests.Session):
    """tweepy sends without a timeout; this session supplies one."""

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = REQUEST_TIMEOUT
        return super().request(*args, **kwargs)


def _client(channel: "ChannelAccount") -> tweepy.Client:
    credentials = _credentials(channel)
    client = tweepy.Client(
        bearer_token=credentials.get("bearer_token") or None,
        consumer_key=credentials.get("consumer_key") or None,
        consumer_secret=credentials.get("consumer_secret") or None,
        access_token=credentials.get("access_token") or None,
        access_token_secret=credentials.get("access_token_secret") or None,
        # Plain dicts: tweepy's models raise on a malformed item, which would lose the whole
        # page; we read each item ourselves and reject only the bad one.
        return_type=dict,
        wait_on_rate_limit=False,  # never sleep in a worker; the poller reschedules instead
    )
    client.session = _TimeoutSession()
    return client


# --- Errors ---------------------------------------------------------------------------------


@contextmanager
def _x_errors(action: str) -> Iterator[None]:
    """Turn what tweepy and requests raise into the connector errors, in words an admin can
    act on, with X's own message."""
    try:
        yield
    except tweepy.TooManyRequests as exc:
        reset_at = _reset_at(exc)
        raise RateLimited(
            f"X's rate limit was reached while {action} ({_detail(exc)}); "
            f"it resets at {reset_at:%Y-%m-%d %H:%M} UTC.",
            reset_at=reset_at,
        ) from exc
    except tweepy.Unauthorized as exc:
        raise ReauthRequired(
            f"X did not accept the channel's credentials while {action} ({_detail(exc)}). "
            "Reconnect the X account."
        ) from exc
    except tweepy.Forbidden as exc:
        if _says_reconnect(exc):
            raise ReauthRequired(
                f"X refused the account's tokens while {action} ({_detail(exc)}). "
                "Reconnect the X account."
            ) from exc
        raise ConnectorError(f"X refused {action}: {_detail(exc)}") from exc
    except tweepy.TwitterServerError as exc:
        raise TransientError(
            f"X had a server problem while {action} ({_detail(exc)}).", request_sent=False
        ) from exc
    except tweepy.HTTPException as exc:
        raise ConnectorError(f"X rejected the request while {action}: {_detail(exc)}") from exc
    except requests.exceptions.ConnectTimeout as exc:
        raise TransientError(f"Could not reach X while {action}.", request_sent=False) from exc
    except requests.exceptions.Timeout as exc:
        raise TransientError(f"X did not answer in time while {action}.") from exc
    except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
        raise TransientError(f"Could not reach X while {action}.") from exc
    except requests.exceptions.JSONDecodeError as exc:
        raise TransientError(f"X sent an unreadable answer while {action}.") from exc
    except requests.exceptions.RequestException as exc:
        raise ConnectorError(f"The request to X failed while {action}: {exc}") from exc


def _detail(exc: tweepy.HTTPException) -> str:
    status = exc.response.status_code
    messages = [m for m in exc.api_messages if isinstance(m, str) and m.strip()]
    if messages:
        return f"HTTP {status}: " + "; ".join(dict.fromkeys(messages))
    return f"HTTP {status} {exc.response.reason or ''}".strip()


def _says_reconnect(exc: tweepy.HTTPException) -> bool:
    if _REAUTH_CODES.intersection(exc.api_codes):
        return True
    text = " ".join(m for m in exc.api_messages if isinstance(m, str)).lower()
    return any(phrase in text for phrase in _REAUTH_PHRASES)


def _reset_at(exc: tweepy.TooManyRequests) -> datetime:
    now = timezone.now()
    epoch = exc.reset_time
    if epoch is None:
        try:
            epoch = int(exc.response.headers["x-rate-limit-reset"])
        except (KeyError, TypeError, ValueError):
            return now + RATE_LIMIT_FALLBACK
    reset_at = datetime.fromtimestamp(epoch, tz=UTC)
    # A reset already past (clocks differ) must not make the poller retry in a tight loop.
    return reset_at if reset_at > now else now + timedelta(minutes=1)


# --- Paging ---------------------------------------------------------------------------------

Item = tuple[Any, dict[str, Any]]  # one tweet or event, and the users its page included


def _tweet_stream(
    read_page: PageReader, stream: str, cursor: dict[str, Any], new_cursor: dict[str, Any]
) -> list[Item]:
    """The tweets of one stream since the cursor, newest first, and its cursor keys updated.

    A newly connected channel reads one page and starts from its newest post rather than
    filling the inbox with old history. Later polls read up to MAX_PAGES; what lies beyond is
    read on the next polls, below the oldest id read (until_id), so nothing is skipped.
    """
    since_key, until_key, pending_key = (
        f"{stream}_since_id",
        f"{stream}_until_id",
        f"{stream}_pending_since_id",
    )
    since = _id_or_none(cursor.get(since_key))
    until = _id_or_none(cursor.get(until_key))
    pending = _id_or_none(cursor.get(pending_key))
    starting = since is None and until is None

    items: list[Item] = []
    seen: list[str] = []
    token: str | None = None
    for _ in range(1 if starting else MAX_PAGES):
        page = read_page(since, until, token)
        data, users, meta = _page_parts(page)
        items.extend((item, users) for item in data)
        candidates = [meta.get("newest_id"), meta.get("oldest_id")]
        candidates += [item.get("id") for item in data if isinstance(item, dict)]
        seen.extend(i for i in map(_id_or_none, candidates) if i)
        token = meta.get("next_token") or None
        if not token:
            break

    newest = max(seen, key=int, default=None)
    oldest = min(seen, key=int, default=None)
    if token and not starting:
        # Stopped at the page bound with more to read: continue below the oldest next time.
        new_cursor[until_key] = oldest or until
        new_cursor[pending_key] = pending or newest
    else:
        new_since = pending or newest or since
        if new_since:
            new_cursor[since_key] = new_since
        new_cursor.pop(until_key, None)
        new_cursor.pop(pending_key, None)
    return items


def _dm_stream(
    read_page: Callable[[str | None], Any], cursor: dict[str, Any], new_cursor: dict[str, Any]
) -> list[Item]:
    """Direct message events newer than ``dm_newest_id``, newest first.

    The endpoint takes no since_id, so paging stops at the first event not newer than the one
    stored. It has no until_id either: a burst of more than MAX_PAGES pages between two polls
    loses its oldest events. A newly connected channel reads one page.
    """
    stop_at = _id_or_none(cursor.get("dm_newest_id"))
    items: list[Item] = []
    newest: str | None = None
    token: str | None = None
    for _ in range(1 if stop_at is None else MAX_PAGES):
        data, users, meta = _page_parts(read_page(token))
        reached = False
        for event in data:
            event_id = _id_or_none(event.get("id")) if isinstance(event, dict) else None
            if event_id and stop_at and int(event_id) <= int(stop_at):
                reached = True
                break
            if event_id and (newest is None or int(event_id) > int(newest)):
                newest = event_id
            items.append((event, users))
        token = meta.get("next_token") or None
        if reached or not token:
            break
    if newest:
        new_cursor["dm_newest_id"] = newest
    return items


def _page_parts(page: Any) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
    """A response's data, its included users by id, and its meta; absent parts are empty
    (a page with no results has only ``meta``)."""
    page = page if isinstance(page, dict) else {}
    data = _list(page.get("data"))
    includes = page.get("includes") if isinstance(page.get("includes"), dict) else {}
    users = {
        str(user["id"]): user
        for user in _list(includes.get("users"))
        if isinstance(user, dict) and user.get("id")
    }
    meta = page.get("meta") if isinstance(page.get("meta"), dict) else {}
    return data, users, meta


def _within_search_window(since: str | None, until: str | None) -> tuple[str | None, str | None]:
    """Recent search answers a since_id or until_id older than its window with an error; after
    a long pause, search from the window's start instead."""
    floor = (int((timezone.now() - SEARCH_WINDOW).timestamp() * 1000) - SNOWFLAKE_EPOCH_MS) << 22
    if since and int(since) < floor:
        since = str(floor)
    if until and int(until) <= floor:
        until = None
    return since, until


# --- Reading tweets and messages ------------------------------------------------------------


class _Unreadable(ValueError):
    """Why one tweet or event cannot become a post."""


Reader = Callable[[Any, dict[str, Any]], InboundPost | None]


class _ItemReader:
    """One of the readers below, by the name kept with the items it rejects so that their
    dead letters can be read again alone (``XConnector.read_item``)."""

    def __init__(self, name: str, own_id: str) -> None:
        make, self.what = _READERS[name]
        self.read = make(own_id)
        self.name = name
        self.own_id = own_id

    def context(self, item: Any, users: dict[str, Any]) -> dict[str, Any]:
        return {"reader": self.name, "own_id": self.own_id, "users": _users_of(item, users)}


def _take(
    item: Any,
    users: dict[str, Any],
    reader: _ItemReader,
    posts: dict[str, InboundPost],
    rejected: list[RejectedPayload],
) -> None:
    try:
        post = reader.read(item, users)
    except (_Unreadable, KeyError, TypeError, ValueError, AttributeError) as exc:
        reason = f"Unreadable X {reader.what}: {exc}"
        rejected.append(_rejected(item, reason, context=reader.context(item, users)))
        return
    if post is not None:
        posts.setdefault(post.external_id, post)


def _users_of(item: Any, users: dict[str, Any]) -> dict[str, Any]:
    """The users of its page an item refers to: its author or sender, the account it answers,
    the participants of a direct message."""
    if not isinstance(item, dict) or not users:
        return {}
    ids = [item.get("author_id"), item.get("sender_id"), item.get("in_reply_to_user_id")]
    ids += _list(item.get("participant_ids"))
    created = item.get("message_create")
    if isinstance(created, dict):
        target = created.get("target")
        ids += [
            created.get("sender_id"),
            target.get("recipient_id") if isinstance(target, dict) else None,
        ]
    found = (str(user_id) for user_id in ids if isinstance(user_id, str | int))
    return {user_id: users[user_id] for user_id in found if user_id in users}


def _tweet_reader(own_id: str, plain_kind: str) -> Reader:
    """Reads an API v2 tweet; None for the account's own tweets and for retweets."""

    def read(tweet: Any, users: dict[str, Any]) -> InboundPost | None:
        if not isinstance(tweet, dict):
            raise _Unreadable("it is not an object")
        tweet_id = _required_id(tweet, "id")
        author_id = _required_id(tweet, "author_id")
        references = {
            str(ref.get("type")): str(ref.get("id") or "")
            for ref in _list(tweet.get("referenced_tweets"))
            if isinstance(ref, dict)
        }
        if author_id == own_id or "retweeted" in references:
            return None
        user = users.get(author_id)
        if not isinstance(user, dict):
            raise _Unreadable(f"its author {author_id} is not among the users X included")
        replied_to = references.get("replied_to", "")
        return InboundPost(
            external_id=tweet_id,
            kind="reply" if replied_to else plain_kind,
            author=_author(
                author_id,
                handle=user.get("username"),
                name=user.get("name"),
                followers=_followers(user),
                verified=user.get("verified"),
            ),
            body=_tweet_text(tweet),
            created_at=_iso_time(tweet.get("created_at")),
            in_reply_to_id=replied_to,
            thread_id=_id_or_none(tweet.get("conversation_id")) or tweet_id,
            language=_language(tweet.get("lang")),
            raw={**tweet, "_author": user},
        )

    return read


def _dm_reader(own_id: str) -> Reader:
    """Reads an API v2 DM event; None for other event types and for the account's own
    messages, which the endpoint lists alongside the customers'."""

    def read(event: Any, users: dict[str, Any]) -> InboundPost | None:
        if not isinstance(event, dict):
            raise _Unreadable("it is not an object")
        if event.get("event_type") != "MessageCreate":
            return None
        event_id = _required_id(event, "id")
        sender_id = _required_id(event, "sender_id")
        if sender_id == own_id:
            return None
        user = users.get(sender_id)
        if not isinstance(user, dict):
            raise _Unreadable(f"its sender {sender_id} is not among the users X included")
        return InboundPost(
            external_id=event_id,
            kind="dm",
            author=_author(
                sender_id,
                handle=user.get("username"),
                name=user.get("name"),
                followers=_followers(user),
                verified=user.get("verified"),
            ),
            body=_text(event, "text"),
            created_at=_iso_time(event.get("created_at")),
            # One thread per customer: the reply is addressed to this user id.
            thread_id=sender_id,
            raw={**event, "_author": user},
        )

    return read


def _webhook_tweet_reader(own_id: str) -> Reader:
    """Reads a v1.1 tweet from ``tweet_create_events``. v1.1 gives no conversation id: a reply
    is threaded by the post it answers, any other post starts its own thread."""

    def read(tweet: Any, _users: dict[str, Any]) -> InboundPost | None:
        if not isinstance(tweet, dict):
            raise _Unreadable("it is not an object")
        user = tweet.get("user")
        if not isinstance(user, dict):
            raise _Unreadable("it has no user")
        tweet_id = _required_id(tweet, "id_str")
        author_id = _required_id(user, "id_str")
        if author_id == own_id or "retweeted_status" in tweet:
            return None
        replied_to = _id_or_none(tweet.get("in_reply_to_status_id_str")) or ""
        return InboundPost(
            external_id=tweet_id,
            kind="reply" if replied_to else "mention",
            author=_author(
                author_id,
                handle=user.get("screen_name"),
                name=user.get("name"),
                followers=user.get("followers_count"),
                verified=user.get("verified"),
            ),
            body=_v1_tweet_text(tweet),
            created_at=_v1_time(tweet.get("created_at")),
            in_reply_to_id=replied_to,
            thread_id="" if replied_to else tweet_id,
            language=_language(tweet.get("lang")),
            raw={**tweet, "_author": user},
        )

    return read


def _webhook_dm_reader(own_id: str) -> Reader:
    """Reads a v1.1 event from ``direct_message_events``; the sender's profile is in the
    payload's ``users``."""

    def read(event: Any, users: dict[str, Any]) -> InboundPost | None:
        if not isinstance(event, dict):
            raise _Unreadable("it is not an object")
        if event.get("type") != "message_create":
            return None
        created = event.get("message_create")
        if not isinstance(created, dict):
            raise _Unreadable("it has no message_create")
        event_id = _required_id(event, "id")
        sender_id = _required_id(created, "sender_id")
        if sender_id == own_id:
            return None
        user = users.get(sender_id)
        if not isinstance(user, dict):
            raise _Unreadable(f"its sender {sender_id} is not among the payload's users")
        message_data = created.get("message_data")
        if not isinstance(message_data, dict):
            raise _Unreadable("it has no message_data")
        return InboundPost(
            external_id=event_id,
            kind="dm",
            author=_author(
                sender_id,
                handle=user.get("screen_name"),
                name=user.get("name"),
                followers=user.get("followers_count"),
                verified=user.get("verified"),
            ),
            body=_text(message_data, "text"),
            created_at=_epoch_ms_time(event.get("created_timestamp")),
            thread_id=sender_id,
            raw={**event, "_author": user},
        )

    return read


def _author(
    user_id: str, *, handle: Any, name: Any, followers: Any, verified: Any
) -> InboundAuthor:
    handle = handle if isinstance(handle, str) else ""
    return InboundAuthor(
        platform_user_id=user_id,
        handle=handle,
        display_name=name if isinstance(name, str) else "",
        profile_url=f"https://x.com/{handle}" if handle else "",
        followers_count=followers
        if isinstance(followers, int) and not isinstance(followers, bool)
        else None,
        verified=verified is True,
    )


def _followers(user: dict[str, Any]) -> Any:
    metrics = user.get("public_metrics")
    return metrics.get("followers_count") if isinstance(metrics, dict) else None


def _tweet_text(tweet: dict[str, Any]) -> str:
    note = tweet.get("note_tweet")
    if isinstance(note, dict) and isinstance(note.get("text"), str) and note["text"]:
        return str(note["text"])
    return _text(tweet, "text")


def _v1_tweet_text(tweet: dict[str, Any]) -> str:
    extended = tweet.get("extended_tweet")
    if isinstance(extended, dict) and isinstance(extended.get("full_text"), str):
        return str(extended["full_text"])
    if isinstance(tweet.get("full_text"), str):
        return str(tweet["full_text"])
    return _text(tweet, "text")


def _text(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise _Unreadable(f"it has no {key}")
    return value


def _required_id(obj: dict[str, Any], key: str) -> str:
    value = _id_or_none(obj.get(key))
    if value is None:
        raise _Unreadable(f"it has no valid {key}")
    return value


def _id_or_none(value: Any) -> str | None:
    """X ids are decimal strings (v1.1 also sends numbers); anything else is no id."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return str(value)
    if isinstance(value, str) and value.strip().isdigit():
        return value.strip()
    return None


def _iso_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise _Unreadable("it has no created_at")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise _Unreadable(f"created_at {value!r} is not a date") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _v1_time(value: Any) -> datetime:
    """v1.1 dates look like ``Wed Oct 10 20:19:24 +0000 2018``; read without the locale."""
    parts = value.split() if isinstance(value, str) else []
    if len(parts) != 6:
        raise _Unreadable(f"created_at {value!r} is not a date")
    _weekday, month, day, clock, offset, year = parts
    try:
        return parsedate_to_datetime(f"{day} {month} {year} {clock} {offset}").astimezone(UTC)
    except (TypeError, ValueError):
        raise _Unreadable(f"created_at {value!r} is not a date") from None


def _epoch_ms_time(value: Any) -> datetime:
    try:
        return datetime.fromtimestamp(int(value) / 1000, tz=UTC)
    except (TypeError, ValueError, OverflowError):
        raise _Unreadable(f"created_timestamp {value!r} is not a time") from None


def _language(value: Any) -> str:
    return value if isinstance(value, str) and value not in _NO_LANGUAGE else ""


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _rejected(item: Any, reason: str, *, context: dict[str, Any] | None = None) -> RejectedPayload:
    return RejectedPayload(
        raw=json.dumps(item, default=str, ensure_ascii=False), error=reason, context=context
    )


# The readers by the name a rejected item's context gives, with what they read (for errors).
_READERS: dict[str, tuple[Callable[[str], Reader], str]] = {
    "mention": (lambda own_id: _tweet_reader(own_id, "mention"), "post"),
    "search": (lambda own_id: _tweet_reader(own_id, "post"), "post"),
    "dm": (_dm_reader, "direct message"),
    "webhook_tweet": (_webhook_tweet_reader, "post"),
    "webhook_dm": (_webhook_dm_reader, "direct message"),
}


# --- Sending --------------------------------------------------------------------------------


def _dm_recipient(thread_key: str) -> str:
    recipient = thread_key.removeprefix("dm:") if thread_key.startswith("dm:") else ""
    if not recipient.isdigit():
        raise ConnectorError(
            "This direct message cannot be sent: its conversation does not name the X user "
            "to write to."
        )
    return recipient


def _created_id(response: Any, key: str, what: str) -> str:
    data = response.get("data") if isinstance(response, dict) else None
    value = data.get(key) if isinstance(data, dict) else None
    if not value:
        raise ConnectorError(f"X accepted the {what} but did not return its id.")
    return str(value)


def payloads_by_account(payload: Any) -> dict[str, Any]:
    """Account Activity bodies name the subscribed account they are for."""
    if not isinstance(payload, dict):
        return {}
    return {str(payload.get("for_user_id") or ""): payload}
