"""The ingest pipeline: from a connector's InboundPosts to stored, threaded conversations.

One transaction per batch and a fixed number of queries whatever the batch size. Batches of one
channel are serialised by a row lock on the channel, so a post that arrives twice (poll and
webhook, or a retried task) is stored once; the unique (channel, external id) constraint is the
last guard. The cursor is saved in the same transaction, so it only moves if the batch commits.
"""

import json
import logging
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from django.db import InterfaceError, OperationalError, transaction

from channels_ingest.classify import KeywordMatcher, asks_for_action, language_of, sentiment_score
from channels_ingest.models import ChannelAccount, DeadLetter, KeywordList
from channels_ingest.types import InboundPost, RejectedPayload, post_as_json
from contacts.services import SeenAuthor, identities_resolve
from conversations.models import Message
from conversations.services import ClassifiedPost, inbound_posts_store

logger = logging.getLogger(__name__)


class LeaseLost(Exception):
    """Another worker took over the channel's poll: this batch must not move its cursor."""


@dataclass(frozen=True, slots=True)
class IngestResult:
    received: int
    stored: int
    duplicates: int
    conversations_created: int
    conversation_ids: list[int]


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def ingest(
    *,
    channel: ChannelAccount,
    posts: Sequence[InboundPost],
    cursor: dict[str, Any] | None = None,
    rejected: Sequence[RejectedPayload] = (),
    source: str = "poll",
    lease: str = "",
) -> IngestResult:
    """Store the posts of one batch that are new, keep rejected payloads as dead letters, and
    advance the cursor if one is given (only while ``lease`` still holds the channel's poll,
    when given: else LeaseLost and nothing is stored).

    If the batch fails for any reason but the database being unavailable, one bad post must
    not hold the channel: the posts are stored one by one and those that fail become dead
    letters, with their payload and the error.
    """
    try:
        return _ingest_batch(channel, posts, cursor, rejected, source, lease)
    except (OperationalError, InterfaceError, LeaseLost):
        raise  # the database is unavailable, or the poll is another worker's: not a bad post
    except Exception:
        if len(posts) <= 1 and not cursor:
            raise
        logger.exception("Batch of %d posts on %s failed; storing one by one", len(posts), channel)
    results, failed = [], list(rejected)
    for post in posts:
        try:
            results.append(_ingest_batch(channel, [post], None, (), source, ""))
        except (OperationalError, InterfaceError):
            raise
        except Exception as exc:  # noqa: BLE001 - isolate any fault; it is recorded
            failed.append(
                RejectedPayload(
                    raw=json.dumps(post.raw, default=str),
                    error=f"Could not be stored: {type(exc).__name__}: {exc}"[:2000],
                    post=post,
                )
            )
    _ingest_batch(channel, [], cursor, failed, source, lease)
    return IngestResult(
        received=len(posts),
        stored=sum(r.stored for r in results),
        duplicates=sum(r.duplicates for r in results),
        conversations_created=sum(r.conversations_created for r in results),
        conversation_ids=[pk for r in results for pk in r.conversation_ids],
    )


def _ingest_batch(
    channel: ChannelAccount,
    posts: Sequence[InboundPost],
    cursor: dict[str, Any] | None,
    rejected: Sequence[RejectedPayload],
    source: str,
    lease: str,
) -> IngestResult:
    with transaction.atomic():
        # Row lock (PostgreSQL; SQLite's IMMEDIATE transactions already serialise writers).
        ChannelAccount.objects.select_for_update().filter(pk=channel.pk).values_list("pk").get()
        if rejected:
            DeadLetter.objects.bulk_create(
                DeadLetter(
                    channel=channel,
                    source=source,
                    raw=r.raw,
                    error=r.error,
                    post=post_as_json(r.post) if r.post is not None else None,
                    context=r.context,
                )
                for r in rejected
            )

        unique: dict[str, InboundPost] = {}
        for post in posts:
            unique.setdefault(post.external_id, post)
        stored = set(
            Message.objects.filter(channel=channel, external_id__in=unique).values_list(
                "external_id", flat=True
            )
        )
        new_posts = sorted(
            (_normalised(p) for ext, p in unique.items() if ext not in stored),
            key=lambda p: p.created_at,
        )

        result = IngestResult(
            received=len(posts),
            stored=0,
            duplicates=len(posts) - len(new_posts),
            conversations_created=0,
            conversation_ids=[],
        )
        if new_posts:
            keyword_lists = list(
                KeywordList.objects.filter(is_active=True).values_list("name", "terms", "tag_id")
            )
            matcher = KeywordMatcher.build([(name, terms) for name, terms, _ in keyword_lists])
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="classify") as pool:
                classifying = _classify_all(pool, new_posts, matcher)
                identities = identities_resolve(
                    platform=channel.platform, authors=_seen_authors(new_posts)
                )
                classified = classifying.result()
            stored_result = inbound_posts_store(
                channel=channel,
                posts=classified,
                identities=identities,
                keyword_tags={name: tag for name, _, tag in keyword_lists if tag},
            )
            result = IngestResult(
                received=len(posts),
                stored=stored_result.messages,
                duplicates=len(posts) - stored_result.messages,
                conversations_created=stored_result.conversations_created,
                conversation_ids=stored_result.conversation_ids,
            )
        if cursor is not None:
            holder = ChannelAccount.objects.filter(pk=channel.pk)
            if lease:
                holder = holder.filter(poll_lease_token=lease)
            if not holder.update(cursor=cursor):
                raise LeaseLost(f"The poll of {channel} was taken over; its batch is dropped.")
            channel.cursor = cursor
    return result


# From this many posts the classification runs in a thread while the identities are resolved:
# it is pure Python, and the database does its share of the work meanwhile (the driver lets go
# of the interpreter while it waits). For fewer posts a thread costs more than it saves.
OVERLAP_FROM = 32


def _classify_all(
    pool: ThreadPoolExecutor, posts: Sequence[InboundPost], matcher: KeywordMatcher
) -> "Future[list[ClassifiedPost]]":
    """The posts' classification, under way in ``pool`` or, for a few posts, done already."""
    if len(posts) >= OVERLAP_FROM:
        return pool.submit(lambda: [_classify(post, matcher) for post in posts])
    done: Future[list[ClassifiedPost]] = Future()
    done.set_result([_classify(post, matcher) for post in posts])
    return done


def _classify(post: InboundPost, matcher: KeywordMatcher) -> ClassifiedPost:
    sentiment = sentiment_score(post.body)
    keywords = matcher.match(post.body)
    return ClassifiedPost(
        post=post,
        sentiment=sentiment,
        language=language_of(post.body, stated=post.language),
        keywords=keywords,
        actionable=asks_for_action(post.body, sentiment=sentiment, keywords=keywords),
    )


def _normalised(post: InboundPost) -> InboundPost:
    """Naive times are taken as UTC; emails are compared lower-cased; NUL characters, which
    no database text column takes, are dropped from the text."""
    author = post.author
    if author.email and author.email != author.email.strip().lower():
        author = replace(author, email=author.email.strip().lower())
    body = post.body.replace("\x00", "") if "\x00" in post.body else post.body
    if post.created_at.tzinfo is None or author is not post.author or body is not post.body:
        return replace(post, created_at=_aware(post.created_at), author=author, body=body)
    return post


def _seen_authors(posts: Sequence[InboundPost]) -> list[SeenAuthor]:
    """Each author once, with the profile from their latest post and the span of their posts."""
    seen: dict[str, SeenAuthor] = {}
    for post in posts:  # oldest first
        earlier = seen.get(post.author.platform_user_id)
        seen[post.author.platform_user_id] = SeenAuthor(
            author=post.author,
            first_seen_at=earlier.first_seen_at if earlier else post.created_at,
            last_seen_at=post.created_at,
        )
    return list(seen.values())
