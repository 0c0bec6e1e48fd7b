"""Facebook Pages: the Page's feed (visitor posts, comments and replies) and its Messenger inbox.

Reads and writes go through facebook-sdk's ``GraphAPI``. Polling walks two listings that Graph
returns newest first, the Page feed and the Messenger conversations; a walk that needs more pages
than one poll allows carries on from where it stopped at the next poll, so nothing in between is
skipped. Webhook deliveries are read by ``parse``; ``signature_is_valid`` and
``handshake_challenge`` serve the webhook endpoint.

Cursor keys: ``feed_since`` and ``messenger_since`` (unix seconds: the newest item seen), and,
only while a walk is unfinished, ``feed_resume``/``messenger_resume`` (the query of the next
page) with ``feed_newest``/``messenger_newest`` (the newest item seen so far in that walk).
"""

import hashlib
import hmac
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import facebook
import requests
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

# facebook-sdk 3.1.0 refuses any version newer than 3.1. Graph serves calls to a retired version
# as the oldest version it still runs, so in practice requests get that version's behaviour.
GRAPH_API_VERSION = "3.1"
TIMEOUT_SECONDS = 20

FEED_PAGE_SIZE = 25
FEED_PAGES_PER_POLL = 4
COMMENT_PAGE_SIZE = 100
COMMENT_PAGES_PER_POST = 5
CONVERSATION_PAGE_SIZE = 25
CONVERSATION_PAGES_PER_POLL = 4
MESSAGE_PAGE_SIZE = 50
MESSAGE_PAGES_PER_CONVERSATION = 5

# Each poll reaches back this far before the newest item already seen, so an item stamped in the
# same second, or written while the previous poll was paging, is not missed; the pipeline drops
# the repeats.
OVERLAP = timedelta(seconds=60)
# A channel's first poll reads this far back rather than the Page's whole history.
FIRST_POLL_LOOKBACK = timedelta(days=7)
# When Graph rate-limits us without saying for how long.
DEFAULT_RATE_LIMIT_WAIT = timedelta(minutes=15)

# "stream" lists replies next to top-level comments, each reply naming its ``parent``.
COMMENT_FIELDS = "id,message,created_time,from,parent{id},permalink_url"
EMBEDDED_COMMENTS = (
    f"comments.filter(stream).order(reverse_chronological).limit({COMMENT_PAGE_SIZE})"
    f"{{{COMMENT_FIELDS}}}"
)
FEED_FIELDS = f"id,message,created_time,updated_time,from,permalink_url,{EMBEDDED_COMMENTS}"
MESSAGE_FIELDS = "id,message,created_time,from,to"
CONVERSATION_FIELDS = f"id,updated_time,messages.limit({MESSAGE_PAGE_SIZE}){{{MESSAGE_FIELDS}}}"

REAUTH_CODES = {102, 190}
REAUTH_SUBCODES = {458, 460, 463, 467}  # app removed, password changed, token expired, invalid
RATE_LIMIT_CODES = {4, 17, 32, 613, 80001}
TRANSIENT_CODES = {1, 2}
WEBHOOK_POST_ITEMS = {"post", "status", "photo", "video"}


def signature_is_valid(app_secret: str, body: bytes, header: str | None) -> bool:
    """Whether ``X-Hub-Signature-256`` is the app secret's HMAC-SHA256 of the raw request body."""
    if not app_secret or not header:
        return False
    scheme, _, signature = header.strip().partition("=")
    if scheme.lower() != "sha256" or not signature:
        return False
    expected = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), signature.strip().lower().encode())


def handshake_challenge(verify_token: str, params: Mapping[str, str]) -> str | None:
    """The challenge to echo when Facebook verifies the webhook with our verify token, else None."""
    token = params.get("hub.verify_token")
    challenge = params.get("hub.challenge")
    if params.get("hub.mode") != "subscribe" or not verify_token or token is None:
        return None
    if challenge is None or not hmac.compare_digest(token.encode(), verify_token.encode()):
        return None
    return challenge


class FacebookConnector:
    platform: ClassVar[str] = Platform.FACEBOOK

    def fetch(self, channel: "ChannelAccount", cursor: dict[str, Any]) -> FetchResult:
        page_id = channel.external_account_id
        batch = _Batch()
        feed = _Walk.from_cursor("feed", cursor)
        inbox = _Walk.from_cursor("messenger", cursor)
        with _graph(channel) as graph:
            feed_cursor = _read_feed(graph, page_id, feed, batch)
            inbox_cursor = _read_inbox(graph, page_id, inbox, batch)
        return FetchResult(
            posts=batch.posts, cursor={**feed_cursor, **inbox_cursor}, rejected=batch.rejected
        )

    def parse(self, channel: "ChannelAccount", payload: Any) -> ParseResult:
        """Reads a Page webhook delivery: feed changes and Messenger messages. Only additions
        are read (edits and removals are ignored); the Page's own items and the echoes of what
        it sent are skipped, and entries for another Page are left to that Page's channel."""
        page_id = channel.external_account_id
        batch = _Batch()
        if not isinstance(payload, dict) or payload.get("object") != "page":
            batch.reject(payload, "Not a Facebook Page webhook delivery")
            return ParseResult(posts=[], rejected=batch.rejected)
        for entry in payload.get("entry") or []:
            if not isinstance(entry, dict):
                # Kept as an entry: its retry reads it as one again, and says what is wrong.
                batch.reject(
                    entry, "A webhook entry that is not an object", context={"reader": ENTRY_READER}
                )
                continue
            if page_id and str(entry.get("id", page_id)) != page_id:
                # Webhook routing hands every Page its own entries; one left here belongs to a
                # Page no channel (signed by this app) serves: keep it rather than drop it. Its
                # retry delivers it again, to the channel that serves its Page by then.
                batch.reject(
                    entry,
                    f"An entry for Page {entry.get('id')}, not this channel's",
                    context={"reader": ENTRY_READER},
                )
                continue
            for change in entry.get("changes") or []:
                if not isinstance(change, dict) or change.get("field") != "feed":
                    continue
                value = change.get("value")
                if not isinstance(value, dict):
                    continue
                if value.get("verb") != "add" or _is_page(value.get("from"), page_id):
                    continue
                if value.get("item") == "comment":
                    batch.read(value, {"reader": "webhook_comment"})
                elif value.get("item") in WEBHOOK_POST_ITEMS:
                    batch.read(value, {"reader": "webhook_post"})
            for event in entry.get("messaging") or []:
                message = event.get("message") if isinstance(event, dict) else None
                if not isinstance(message, dict) or message.get("is_echo"):
                    continue
                if _is_page(event.get("sender"), page_id):
                    continue
                batch.read(event, {"reader": "webhook_message"})
        return ParseResult(posts=batch.posts, rejected=batch.rejected)

    def read_item(
        self, channel: "ChannelAccount", context: dict[str, Any], item: Any
    ) -> ParseResult:
        """A post, comment or Messenger message rejected from a Graph page or a delivery, read
        again by the reader that rejected it, with the post it was under if it is a comment
        of the feed."""
        if context.get("reader") not in _READERS:
            raise ConnectorError(
                f"No Facebook reader is called {context.get('reader')!r}: the item cannot be read."
            )
        batch = _Batch()
        batch.read(item, context)
        return ParseResult(posts=batch.posts, rejected=batch.rejected)

    def send(self, channel: "ChannelAccount", message: "Message") -> SendResult:
        """A DM goes out through the Messenger Send API to the customer of the conversation's
        thread; anything else is a comment on the post or comment it answers."""
        if message.kind == "dm":
            thread_key = message.conversation.thread_key
            if not thread_key.startswith("dm:") or thread_key == "dm:":
                raise ConnectorError(
                    "This conversation has no Messenger recipient, so the reply cannot be sent."
                )
            with _graph(channel) as graph:
                sent = graph.post(
                    channel.external_account_id or "me",
                    "messages",
                    recipient=json.dumps({"id": thread_key.removeprefix("dm:")}),
                    messaging_type="RESPONSE",
                    message=json.dumps({"text": message.body}),
                )
            return SendResult(external_id=_sent_id(sent, "message_id"))
        if not message.in_reply_to_external_id:
            raise ConnectorError(
                "A Facebook reply must answer a post or comment, and this one answers none."
            )
        with _graph(channel) as graph:
            sent = graph.post(message.in_reply_to_external_id, "comments", message=message.body)
        return SendResult(external_id=_sent_id(sent, "id"))


# Graph access ------------------------------------------------------------------------------


class _Graph:
    """facebook-sdk's client with every failure turned into one of the connector's errors.

    The SDK keeps the HTTP response to itself, so a response hook on our session keeps the last
    one: its status tells a server failure apart, and its headers carry the rate-limit usage.
    """

    def __init__(self, access_token: str) -> None:
        self._session = requests.Session()
        self._session.hooks["response"].append(self._keep)
        self._response: requests.Response | None = None
        self._api = facebook.GraphAPI(
            access_token=access_token,
            timeout=TIMEOUT_SECONDS,
            version=GRAPH_API_VERSION,
            session=self._session,
        )

    def _keep(self, response: requests.Response, **kwargs: Any) -> None:
        self._response = response

    def get(self, node: str, edge: str, args: Mapping[str, Any]) -> dict[str, Any]:
        return self._call(lambda: self._api.get_connections(node, edge, **args))

    def post(self, node: str, edge: str, **data: str) -> dict[str, Any]:
        return self._call(lambda: self._api.put_object(node, edge, **data))

    def close(self) -> None:
        self._session.close()

    def _call(self, request: Callable[[], Any]) -> dict[str, Any]:
        self._response = None
        try:
            result = request()
        except facebook.GraphAPIError as exc:
            raise _graph_error(exc, self._response) from exc
        # Never quote a requests exception: its text holds the URL, and facebook-sdk puts the
        # access token in the URL.
        except requests.ConnectTimeout as exc:
            raise TransientError("Facebook could not be reached.", request_sent=False) from exc
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise TransientError(f"Facebook did not answer ({type(exc).__name__}).") from exc
        except requests.RequestException as exc:
            raise ConnectorError(f"The request to Facebook failed ({type(exc).__name__}).") from exc
        except (ValueError, KeyError) as exc:
            # The SDK fails this way on a body it cannot decode, or one without a content type.
            status = self._response.status_code if self._response is not None else None
            if status is not None and status >= 500:
                raise TransientError(
                    f"Facebook answered with HTTP {status}.", request_sent=False
                ) from exc
            raise ConnectorError(
                f"Facebook sent a response that could not be read (HTTP {status})."
            ) from exc
        status = self._response.status_code if self._response is not None else 200
        if status >= 500:
            raise TransientError(f"Facebook answered with HTTP {status}.", request_sent=False)
        if status >= 400 or not isinstance(result, dict):
            raise ConnectorError(
                f"Facebook sent a response that could not be read (HTTP {status})."
            )
        return result


@contextmanager
def _graph(channel: "ChannelAccount") -> Iterator[_Graph]:
    credentials: dict[str, Any] = (
        channel.credentials if isinstance(channel.credentials, dict) else {}
    )
    token = credentials.get("page_access_token")
    if not token:
        raise ReauthRequired("No Page access token is stored for this Facebook channel.")
    graph = _Graph(str(token))
    try:
        yield graph
    finally:
        graph.close()


def _graph_error(exc: facebook.GraphAPIError, response: requests.Response | None) -> ConnectorError:
    body: dict[str, Any] = exc.result if isinstance(exc.result, dict) else {}
    found = body.get("error")
    error: dict[str, Any] = found if isinstance(found, dict) else {}
    code, subcode = error.get("code"), error.get("error_subcode")
    status = response.status_code if response is not None else None
    text = error.get("message") or error.get("error_user_msg") or str(exc.message)
    if code in REAUTH_CODES or (
        error.get("type") == "OAuthException" and subcode in REAUTH_SUBCODES
    ):
        return ReauthRequired(f"Facebook no longer accepts the Page access token: {text}")
    if code in RATE_LIMIT_CODES or status == 429:
        return RateLimited(
            f"Facebook is rate limiting this Page: {text}", reset_at=_rate_limit_reset(response)
        )
    if code in TRANSIENT_CODES or error.get("is_transient") or (status or 0) >= 500:
        # An error answer: Facebook did not act on the request.
        return TransientError(f"Facebook had a temporary problem: {text}", request_sent=False)
    return ConnectorError(f"Facebook refused the request: {text}")


def _rate_limit_reset(response: requests.Response | None) -> datetime:
    """When to try again. Page tokens are limited per business use case, and Graph reports the
    usage in ``X-Business-Use-Case-Usage``: ``{"<object id>": [{"type": "pages", "call_count":
    .., "estimated_time_to_regain_access": <minutes>}]}``. The longest wait listed wins; with no
    such header, or no wait in it, we wait a fixed while."""
    minutes = 0
    raw = response.headers.get("X-Business-Use-Case-Usage") if response is not None else None
    try:
        usage = json.loads(raw) if raw else {}
        for entries in usage.values():
            for entry in entries:
                minutes = max(minutes, int(entry.get("estimated_time_to_regain_access") or 0))
    except (ValueError, TypeError, AttributeError):
        minutes = 0
    wait = timedelta(minutes=minutes) if minutes > 0 else DEFAULT_RATE_LIMIT_WAIT
    return timezone.now() + wait


def _next_query(page: Mapping[str, Any]) -> dict[str, str] | None:
    """The query of the page after this one, from Graph's ``paging.next`` link."""
    paging = page.get("paging")
    link = paging.get("next") if isinstance(paging, dict) else None
    if not link:
        return None
    query = parse_qs(urlsplit(link).query)
    return {key: values[-1] for key, values in query.items() if key != "access_token"}


def _sent_id(result: Mapping[str, Any], key: str) -> str:
    if not result.get(key):
        raise ConnectorError("Facebook accepted the reply but returned no id for it.")
    return str(result[key])


# Polling -----------------------------------------------------------------------------------


@dataclass
class _Walk:
    """One walk through a newest-first listing, which may take several polls to finish."""

    name: str
    since: int
    resume: dict[str, str] | None
    newest: int

    @classmethod
    def from_cursor(cls, name: str, cursor: Mapping[str, Any]) -> "_Walk":
        since = cursor.get(f"{name}_since")
        if since is None:
            since = int((timezone.now() - FIRST_POLL_LOOKBACK).timestamp())
        resume = cursor.get(f"{name}_resume")
        return cls(
            name=name,
            since=int(since),
            resume=dict(resume) if isinstance(resume, dict) else None,
            newest=int(cursor.get(f"{name}_newest") or since),
        )

    @property
    def floor(self) -> datetime:
        """Items older than this were read by an earlier poll."""
        return datetime.fromtimestamp(self.since, tz=UTC) - OVERLAP

    def saw(self, moment: datetime) -> None:
        self.newest = max(self.newest, int(moment.timestamp()))

    def cursor(self, resume: dict[str, str] | None) -> dict[str, Any]:
        if resume is None:
            return {f"{self.name}_since": max(self.since, self.newest)}
        return {
            f"{self.name}_since": self.since,
            f"{self.name}_resume": resume,
            f"{self.name}_newest": self.newest,
        }


def _read_feed(graph: _Graph, page_id: str, walk: _Walk, batch: "_Batch") -> dict[str, Any]:
    since = str(int(walk.floor.timestamp()))
    query = walk.resume or {"fields": FEED_FIELDS, "limit": str(FEED_PAGE_SIZE)}
    for _ in range(FEED_PAGES_PER_POLL):
        # Kept on every page, should a ``next`` link leave it out and walk on into the past.
        page = graph.get(page_id, "feed", {**query, "since": query.get("since", since)})
        for post in page.get("data") or []:
            _read_feed_post(graph, page_id, post, walk, batch)
        next_query = _next_query(page)
        if next_query is None:
            return walk.cursor(None)
        query = next_query
    return walk.cursor(query)


def _read_feed_post(
    graph: _Graph, page_id: str, post: dict[str, Any], walk: _Walk, batch: "_Batch"
) -> None:
    post_id = str(post.get("id", ""))
    _see(walk, post)
    if not _is_page(post.get("from"), page_id):
        batch.read({k: v for k, v in post.items() if k != "comments"}, {"reader": "feed_post"})
    comments = post.get("comments")
    for _ in range(COMMENT_PAGES_PER_POST):
        if not isinstance(comments, dict):
            return
        reached_older = False
        for comment in comments.get("data") or []:
            created = _see(walk, comment)
            if created is not None and created < walk.floor:
                reached_older = True
                continue
            if not _is_page(comment.get("from"), page_id):
                batch.read(comment, {"reader": "feed_comment", "post_id": post_id})
        next_query = _next_query(comments)
        if reached_older or next_query is None or not post_id:
            return
        comments = graph.get(post_id, "comments", {**next_query, "filter": "stream"})


def _read_inbox(graph: _Graph, page_id: str, walk: _Walk, batch: "_Batch") -> dict[str, Any]:
    """Conversations come most recently updated first, and Graph has no ``since`` for them: the
    walk ends at the first one not updated since the last poll."""
    query = walk.resume or {
        "platform": "messenger",
        "fields": CONVERSATION_FIELDS,
        "limit": str(CONVERSATION_PAGE_SIZE),
    }
    for _ in range(CONVERSATION_PAGES_PER_POLL):
        page = graph.get(page_id, "conversations", query)
        for conversation in page.get("data") or []:
            updated = _time_or_none(conversation.get("updated_time"))
            if updated is not None and updated < walk.floor:
                return walk.cursor(None)
            if updated is not None:
                walk.saw(updated)
            _read_conversation(graph, page_id, conversation, walk, batch)
        next_query = _next_query(page)
        if next_query is None:
            return walk.cursor(None)
        query = next_query
    return walk.cursor(query)


def _read_conversation(
    graph: _Graph, page_id: str, conversation: dict[str, Any], walk: _Walk, batch: "_Batch"
) -> None:
    messages = conversation.get("messages")
    for _ in range(MESSAGE_PAGES_PER_CONVERSATION):
        if not isinstance(messages, dict):
            return
        for message in messages.get("data") or []:  # newest first
            created = _see(walk, message)
            if created is not None and created < walk.floor:
                return
            if not _is_page(message.get("from"), page_id):
                batch.read(
                    message,
                    {"reader": "messenger_message", "conversation_id": conversation.get("id")},
                )
        next_query = _next_query(messages)
        if next_query is None or not conversation.get("id"):
            return
        messages = graph.get(str(conversation["id"]), "messages", next_query)


def _see(walk: _Walk, item: Mapping[str, Any]) -> datetime | None:
    created = _time_or_none(item.get("created_time"))
    if created is not None:
        walk.saw(created)
    return created


# Mapping -----------------------------------------------------------------------------------


class _Unreadable(Exception):
    pass


# The context of a delivery's entry kept whole: read again as a delivery of its own.
ENTRY_READER = "webhook_entry"


@dataclass
class _Batch:
    posts: list[InboundPost] = field(default_factory=list)
    rejected: list[RejectedPayload] = field(default_factory=list)

    def read(self, item: Any, context: dict[str, Any]) -> None:
        """Read one item with the reader its context names; an item that cannot be read is
        rejected with that context, which is all a retry needs to read it again alone."""
        try:
            self.posts.append(_READERS[context["reader"]](item, context))
        except (_Unreadable, KeyError, TypeError, ValueError, AttributeError) as exc:
            self.reject(item, f"Unreadable Facebook item: {exc}", context=context)

    def reject(self, item: Any, error: str, *, context: dict[str, Any] | None = None) -> None:
        self.rejected.append(
            RejectedPayload(
                raw=json.dumps(item, default=str, ensure_ascii=False),
                error=error,
                context=context,
            )
        )


def _is_page(sender: Any, page_id: str) -> bool:
    return bool(page_id) and isinstance(sender, dict) and str(sender.get("id")) == page_id


def _author(sender: Any) -> InboundAuthor:
    # Graph gives no handle, and the ids it gives people are scoped to our app (feed) or to the
    # Page (Messenger), so no profile address can be made from them.
    if not isinstance(sender, dict) or not sender.get("id"):
        raise _Unreadable(
            "no author (Facebook leaves it out for people who have not authorised the app)"
        )
    return InboundAuthor(
        platform_user_id=str(sender["id"]), display_name=str(sender.get("name") or "")
    )


def _text(value: Any, item: Mapping[str, Any]) -> str:
    """The text, or for a photo, sticker or file sent alone a placeholder naming it: the
    customer still said something an agent should see."""
    if isinstance(value, str) and value.strip():
        return value
    return f"[{_attachment_kind(item)}]"


def _attachment_kind(item: Mapping[str, Any]) -> str:
    found = item.get("attachments") or item.get("attachment")
    if isinstance(found, dict):  # the Graph edge form: {"data": [...]}, or a single one
        found = found.get("data", [found])
    if isinstance(found, list) and found and isinstance(found[0], dict):
        kind = str(found[0].get("type") or "").replace("_", " ").strip()
        if kind:
            return kind
    return "attachment without text"


def _graph_time(value: Any) -> datetime:
    """Graph writes times as ``2024-05-01T10:00:00+0000``."""
    if not isinstance(value, str):
        raise _Unreadable(f"no readable time in {value!r}")
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S%z")


def _time_or_none(value: Any) -> datetime | None:
    try:
        return _graph_time(value)
    except (_Unreadable, ValueError):
        return None


def _unix_time(value: Any, *, per_second: int = 1) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _Unreadable(f"no readable time in {value!r}")
    return datetime.fromtimestamp(float(value) / per_second, tz=UTC)


def _post_from_feed(post: dict[str, Any]) -> InboundPost:
    return InboundPost(
        external_id=str(post["id"]),
        kind="post",
        author=_author(post.get("from")),
        body=_text(post.get("message"), post),
        created_at=_graph_time(post.get("created_time")),
        thread_id=str(post["id"]),
        raw=post,
    )


def _comment_from_feed(comment: dict[str, Any], post_id: str) -> InboundPost:
    parent = comment.get("parent")
    parent_id = str(parent["id"]) if isinstance(parent, dict) and parent.get("id") else ""
    return InboundPost(
        external_id=str(comment["id"]),
        kind="reply" if parent_id else "comment",
        author=_author(comment.get("from")),
        body=_text(comment.get("message"), comment),
        created_at=_graph_time(comment.get("created_time")),
        in_reply_to_id=parent_id or post_id,
        thread_id=post_id,
        raw=comment,
    )


def _dm_from_graph(message: dict[str, Any]) -> InboundPost:
    author = _author(message.get("from"))
    return InboundPost(
        external_id=str(message["id"]),
        kind="dm",
        author=author,
        body=_text(message.get("message"), message),
        created_at=_graph_time(message.get("created_time")),
        # One thread per customer, keyed by their Page-scoped id, which is where replies go.
        thread_id=author.platform_user_id,
        raw=message,
    )


def _post_from_webhook(value: dict[str, Any]) -> InboundPost:
    return InboundPost(
        external_id=str(value["post_id"]),
        kind="post",
        author=_author(value.get("from")),
        body=_text(value.get("message"), value),
        created_at=_unix_time(value.get("created_time")),
        thread_id=str(value["post_id"]),
        raw=value,
    )


def _comment_from_webhook(value: dict[str, Any]) -> InboundPost:
    post_id = str(value["post_id"])
    # ``parent_id`` is the post for a comment, and the comment answered for a reply.
    parent_id = str(value.get("parent_id") or post_id)
    return InboundPost(
        external_id=str(value["comment_id"]),
        kind="comment" if parent_id == post_id else "reply",
        author=_author(value.get("from")),
        body=_text(value.get("message"), value),
        created_at=_unix_time(value.get("created_time")),
        in_reply_to_id=parent_id,
        thread_id=post_id,
        raw=value,
    )


def _dm_from_webhook(event: dict[str, Any]) -> InboundPost:
    author = _author(event.get("sender"))
    message = event["message"]
    return InboundPost(
        external_id=str(message["mid"]),
        kind="dm",
        author=author,
        body=_text(message.get("text"), message),
        created_at=_unix_time(event.get("timestamp"), per_second=1000),
        thread_id=author.platform_user_id,
        raw=event,
    )


# The readers by the name an item's context gives; a comment of the feed also needs the id of
# the post it was read under, which the comment itself does not carry.
_READERS: dict[str, Callable[[Any, dict[str, Any]], InboundPost]] = {
    "feed_post": lambda post, _context: _post_from_feed(post),
    "feed_comment": lambda comment, context: _comment_from_feed(comment, str(context["post_id"])),
    "messenger_message": lambda message, _context: _dm_from_graph(message),
    "webhook_post": lambda value, _context: _post_from_webhook(value),
    "webhook_comment": lambda value, _context: _comment_from_webhook(value),
    "webhook_message": lambda event, _context: _dm_from_webhook(event),
}


def payloads_by_account(payload: Any) -> dict[str, Any]:
    """Split a Page webhook body by Page id: one app delivers every Page's events to the same
    callback, so a body may hold entries of several Pages."""
    if not isinstance(payload, dict) or not isinstance(payload.get("entry"), list):
        return {}
    pages: dict[str, list[Any]] = {}
    for entry in payload["entry"]:
        page_id = str(entry.get("id", "")) if isinstance(entry, dict) else ""
        pages.setdefault(page_id, []).append(entry)
    return {page_id: {**payload, "entry": entries} for page_id, entries in pages.items()}
