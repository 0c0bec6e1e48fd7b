"""The platform-free shape of what a connector reads and sends. Nothing after a connector
knows which platform a post came from, beyond the channel it arrived on."""

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class InboundAuthor:
    platform_user_id: str
    handle: str = ""
    display_name: str = ""
    profile_url: str = ""
    followers_count: int | None = None
    verified: bool = False
    # Only some payloads carry these (a DM with a signature, a lead form); used to match contacts.
    email: str = ""
    phone: str = ""


@dataclass(frozen=True, slots=True)
class InboundPost:
    external_id: str
    kind: str  # conversations.models.MessageKind value, never "note"
    author: InboundAuthor
    body: str
    created_at: datetime
    in_reply_to_id: str = ""  # platform id of the post this answers
    thread_id: str = ""  # DM thread id, or the platform's id of the root of a public thread
    language: str = ""
    raw: dict[str, Any] = field(default_factory=dict)


def post_as_json(post: InboundPost) -> dict[str, Any]:
    """The post as read, in JSON's types: kept with a dead letter when it could not be stored,
    so that a retry stores it as it was read (``post_from_json``)."""
    data = {**asdict(post), "created_at": post.created_at.isoformat()}
    loaded: dict[str, Any] = json.loads(json.dumps(data, default=str))
    return loaded


def post_from_json(data: dict[str, Any]) -> InboundPost:
    """The post ``post_as_json`` kept. Raises KeyError, TypeError or ValueError if it is not
    one."""
    return InboundPost(
        **{
            **data,
            "author": InboundAuthor(**data["author"]),
            "created_at": datetime.fromisoformat(data["created_at"]),
        }
    )


@dataclass(frozen=True, slots=True)
class RejectedPayload:
    """A payload a connector could not read, kept whole for the dead letters; or a post that
    was read but could not be stored (``post``), which a retry stores as it was read.

    When ``raw`` is one item of a poll page or a delivery, ``context`` is what the connector
    needs to read it again without the rest (``Connector.read_item``): which of its readers
    read it and the parts of the page it referred to. JSON's types only."""

    raw: str
    error: str
    post: InboundPost | None = None
    context: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ParseResult:
    """What one webhook payload held: the posts read, and any events that could not be read."""

    posts: list[InboundPost]
    rejected: list[RejectedPayload] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class FetchResult:
    posts: list[InboundPost]
    cursor: dict[str, Any]
    rejected: list[RejectedPayload] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SendResult:
    external_id: str
