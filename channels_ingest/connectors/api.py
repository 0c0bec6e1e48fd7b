"""The inbound API channel: the company's own systems (a community site, a blog, an in-app
feedback form) post messages to ``/api/v1/inbound/<channel id>/messages/``.

A body is one message object or ``{"messages": [...]}``::

    {"external_id": "comment-991",              required, unique within the channel
     "body": "The export button does nothing",  required
     "author": {"id": "user-17", "handle": "jo", "name": "Jo Park",
                "email": "jo@example.com", "phone": "", "profile_url": ""},
     "created_at": "2026-05-01T10:00:00Z",      optional, ISO 8601 (now if left out)
     "kind": "comment",                         post, comment, mention or dm (default post)
     "in_reply_to": "comment-990",              optional: the message it answers
     "thread": "topic-12",                      optional: groups messages into one conversation
     "language": "en"}

Nothing is polled. Replies are "sent" by storing them: the posting system reads them from the
API or receives them as ``message.sent`` webhook events.
"""

import hmac
import json
from datetime import UTC
from typing import TYPE_CHECKING, Any, ClassVar

from django.utils import timezone
from django.utils.dateparse import parse_datetime

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

KINDS = ("post", "comment", "mention", "dm")
MAX_MESSAGES = 500
_MAX_ID = 100


def inbound_key_is_valid(channel: "ChannelAccount", presented: str) -> bool:
    """Whether ``presented`` is the channel's inbound key (compared in constant time)."""
    key = str((channel.credentials or {}).get("inbound_key", ""))
    return bool(key) and hmac.compare_digest(key.encode(), presented.encode())


def _text(item: dict[str, Any], name: str, limit: int) -> str:
    value = item.get(name, "")
    if value is None:
        return ""
    if not isinstance(value, str | int):
        raise ValueError(f"{name} must be a string.")
    text = str(value).strip()
    if len(text) > limit:
        raise ValueError(f"{name} is longer than {limit} characters.")
    return text


def _post(item: Any) -> InboundPost:
    if not isinstance(item, dict):
        raise ValueError("A message must be a JSON object.")
    external_id = _text(item, "external_id", _MAX_ID)
    if not external_id:
        raise ValueError("external_id is required.")
    body = item.get("body")
    if not isinstance(body, str) or not body.strip():
        raise ValueError("body is required and must be text.")
    author = item.get("author") or {}
    if not isinstance(author, dict):
        raise ValueError("author must be an object.")
    author_id = _text(author, "id", _MAX_ID)
    if not author_id:
        raise ValueError("author.id is required.")
    kind = item.get("kind") or "post"
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}.")
    created_at = timezone.now()
    if item.get("created_at"):
        parsed = parse_datetime(str(item["created_at"]))
        if parsed is None:
            raise ValueError("created_at must be an ISO 8601 date and time.")
        created_at = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return InboundPost(
        external_id=external_id,
        kind=kind,
        author=InboundAuthor(
            platform_user_id=author_id,
            handle=_text(author, "handle", 100).lstrip("@"),
            display_name=_text(author, "name", 200),
            profile_url=_text(author, "profile_url", 500),
            email=_text(author, "email", 254),
            phone=_text(author, "phone", 50),
        ),
        body=body.strip()[:20000],
        created_at=created_at,
        in_reply_to_id=_text(item, "in_reply_to", _MAX_ID),
        thread_id=_text(item, "thread", 200),
        language=_text(item, "language", 16),
        raw=item,
    )


def inbound_messages_parse(payload: Any) -> ParseResult:
    """Posts from a body; each item that cannot be read is rejected with its reason, the
    others go through."""
    items = (
        payload.get("messages")
        if isinstance(payload, dict) and "messages" in payload
        else [payload]
    )
    if not isinstance(items, list):
        return ParseResult(
            posts=[],
            rejected=[RejectedPayload(raw=json.dumps(payload), error="messages must be a list.")],
        )
    posts: list[InboundPost] = []
    rejected: list[RejectedPayload] = []
    for index, item in enumerate(items):
        try:
            if index >= MAX_MESSAGES:
                raise ValueError(f"At most {MAX_MESSAGES} messages per request.")
            posts.append(_post(item))
        except ValueError as error:
            rejected.append(
                RejectedPayload(
                    raw=json.dumps(item, default=str),
                    error=f"#{index}: {error}",
                    context={"reader": "message"},
                )
            )
    return ParseResult(posts=posts, rejected=rejected)


def inbound_message_read(item: Any) -> ParseResult:
    """One message of a body read again alone: the retry of its dead letter."""
    try:
        return ParseResult(posts=[_post(item)])
    except ValueError as error:
        return ParseResult(
            posts=[],
            rejected=[
                RejectedPayload(
                    raw=json.dumps(item, default=str),
                    error=str(error),
                    context={"reader": "message"},
                )
            ],
        )


class ApiConnector:
    platform: ClassVar[str] = Platform.API

    def fetch(self, channel: "ChannelAccount", cursor: dict[str, Any]) -> FetchResult:
        return FetchResult(posts=[], cursor=cursor)

    def parse(self, channel: "ChannelAccount", payload: Any) -> ParseResult:
        return inbound_messages_parse(payload)

    def read_item(
        self, channel: "ChannelAccount", context: dict[str, Any], item: Any
    ) -> ParseResult:
        return inbound_message_read(item)

    def send(self, channel: "ChannelAccount", message: "Message") -> SendResult:
        return SendResult(external_id=f"api-out-{message.pk}")


__all__ = ["ApiConnector", "inbound_key_is_valid", "inbound_messages_parse"]
