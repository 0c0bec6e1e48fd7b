"""Writes to conversations: threading inbound posts, and what agents do to a conversation.

Every change that matters records a ConversationEvent, the timeline that KPIs are built from.
"""

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.contrib.auth.models import User
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.db.models.functions import Lower
from django.utils import timezone

from channels_ingest.models import ChannelAccount
from channels_ingest.types import InboundPost
from contacts.models import Contact, SocialIdentity
from conversations import nav_counts, setup_cache
from conversations.models import (
    ACTIVE_STATUSES,
    CannedResponse,
    Conversation,
    ConversationEvent,
    DeliveryStatus,
    Direction,
    Escalation,
    EscalationStatus,
    EventKind,
    Message,
    MessageKind,
    Notification,
    Priority,
    QueuedAssignment,
    Status,
    Tag,
)
from conversations.presence import queue_may_wait
from conversations.routing import (
    Decisions,
    RuleBook,
    acknowledgements_prepare,
    auto_assign,
    decisions_take,
    decisions_write,
    rules_run,
)
from conversations.rules import Facts, events_raised
from conversations.sla import (
    SLA_FIELDS,
    SlaSetup,
    sla_clear,
    sla_on_inbound,
    sla_on_reply,
    sla_on_status,
    sla_policy_change,
    sla_start,
)
from governance.selectors import replyable_channel_ids, visible_channel_ids
from scrm.bulk import (
    id_rows_copy,
    id_rows_insert,
    instances_insert,
    rows_copy,
    rows_update,
    where_in,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ClassifiedPost:
    post: InboundPost
    sentiment: float | None
    language: str
    keywords: list[str] = field(default_factory=list)
    actionable: bool = True


@dataclass(frozen=True, slots=True)
class StoreResult:
    messages: int
    conversations_created: int
    conversation_ids: list[int]


_MESSAGE_COLUMNS = (
    "conversation",
    "channel",
    "direction",
    "kind",
    "external_id",
    "in_reply_to_external_id",
    "author_identity",
    "body",
    "language",
    "sentiment",
    "keywords",
    "created_at",
    "received_at",
    "delivery_status",
    "error",
    "raw",
)

# What an inbound message changes on its conversation.
_ROLLUP_FIELDS = (
    "status",
    "is_monitoring",
    "sentiment",
    "inbound_count",
    "message_count",
    "last_message_preview",
    "last_message_direction",
    "last_message_at",
    "last_inbound_at",
    "waiting_since",
    "resolved_at",
    "snoozed_until",
    # Moved by a reopening, like the status: a rollup here, though the SLA code keeps it.
    "sla_started_at",
)


# What routing rules may change on a conversation, and the SLA timers.
_ROUTED_FIELDS = ("priority", "team_id", "assignee_id")
_SLA_COLUMNS = tuple(
    f"{name}_id" if name == "sla_policy" else name
    for name in SLA_FIELDS
    if name not in _ROLLUP_FIELDS
)
_TRACKED = (*_ROUTED_FIELDS, *_SLA_COLUMNS)
# Every column the pipeline may change on a conversation that exists, rollups first.
_STORED = (*_ROLLUP_FIELDS, *_TRACKED)
# The rollups and what routing rules may change: the first columns of ``_STORED``.
_ROUTED_STORED = (*_ROLLUP_FIELDS, *_ROUTED_FIELDS)


# The events a post raises for the rules, in the order they are evaluated.
_CREATED = events_raised("conversation_created")
_REOPENED = events_raised("conversation_reopened")
_RECEIVED = events_raised("message_received")
_NO_TAGS: frozenset[int] = frozenset()


@dataclass
class _BatchFacts:
    """What the rules and SLA policies of a batch need to know beyond the posts: loaded only
    when some rule or policy asks for it. The VIPs among the batch's contacts and the tags of
    its conversations come in one statement."""

    vip_contacts: set[int] = field(default_factory=set)
    escalated_contacts: set[int] = field(default_factory=set)
    tags: dict[int, set[int]] = field(default_factory=dict)

    @classmethod
    def load(
        cls, *, book: RuleBook, setup: SlaSetup, contact_ids: set[int], conversation_ids: set[int]
    ) -> "_BatchFacts":
        facts = cls()
        vip = bool(("vip" in book.needed or setup.needs_vip) and contact_ids)
        # Read for the conditions on tags, and so that adding a tag the conversation has
        # already is not recorded as a change.
        tags = bool(("tags" in book.needed or book.adds_tags) and conversation_ids)
        if vip or tags:
            parts, params = [], []
            if vip:
                condition, values = where_in(_facts_sql("contact"), contact_ids)
                parts.append(f"{_facts_sql('vip')} AND {condition}")
                params += values
            if tags:
                condition, values = where_in(_facts_sql("conversation"), conversation_ids)
                parts.append(f"{_facts_sql('tags')} WHERE {condition}")
                params += values
            # A VIP's row has no conversation; a tag's row names its conversation.
            for conversation_id, pk in setup_cache.rows(" UNION ALL ".join(parts), params):
                if conversation_id is None:
                    facts.vip_contacts.add(pk)
                else:
                    facts.tags.setdefault(conversation_id, set()).add(pk)
        if "open_escalation" in book.needed:
            facts.escalated_contacts = set(
                Escalation.objects.filter(
                    status=EscalationStatus.OPEN, conversation__contact_id__in=contact_ids
                ).values_list("conversation__contact_id", flat=True)
            )
        return facts


def _facts_sql(part: str) -> str:
    """A part of the batch's facts statement, written once per kind of database (quoting
    names costs more than running the statement)."""
    return setup_cache.statement(("batch-facts", part), lambda: _FACTS_SQL[part]())


_FACTS_SQL: dict[str, Callable[[], str]] = {
    "vip": lambda: (
        f"SELECT NULL, {setup_cache.columns(Contact, ['id'])} FROM {setup_cache.table(Contact)}"
        f" WHERE {setup_cache.columns(Contact, ['is_vip'])}"
    ),
    "contact": lambda: setup_cache.columns(Contact, ["id"]),
    "tags": lambda: (
        f"SELECT {setup_cache.columns(Conversation.tags.through, ['conversation', 'tag'])}"
        f" FROM {setup_cache.table(Conversation.tags.through)}"
    ),
    "conversation": lambda: setup_cache.columns(Conversation.tags.through, ["conversation"]),
}


def _indexed_columns() -> frozenset[str]:
    """The conversation's columns (attribute names) that some index holds or filters on."""
    meta = Conversation._meta
    names = {f.name for f in meta.concrete_fields if getattr(f, "db_index", False) or f.unique}
    for index in meta.indexes:
        names.update(name.lstrip("-") for name in index.fields)
        conditions = [index.condition] if index.condition is not None else []
        while conditions:
            for child in conditions.pop().children:
                if isinstance(child, Q):
                    conditions.append(child)
                else:
                    names.add(child[0].split("__")[0])
    return frozenset(meta.get_field(name).attname for name in names)  # type: ignore[union-attr]


# Columns SQLite must rewrite index entries for when an UPDATE sets them, changed or not.
_INDEXED = _indexed_columns()


def _changed_rows(
    conversations: dict[int, Conversation],
    before: dict[int, tuple[Any, ...]],
    now: datetime,
) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    """The UPDATEs of the batch's existing conversations, each row once, grouped by the
    columns they set. Most follow-ups move neither routing nor SLA columns, so those are
    only set where they moved. On SQLite, which rewrites the index entries of every indexed
    column an UPDATE sets, each row sets the indexed columns that changed (a follow-up: the
    last message's time, and its status or wait when they moved), and its group the other
    columns any of its rows changed: writing a value unchanged there costs next to nothing,
    and one statement per combination of changed indexed columns far fewer statements than
    one per combination of all changed columns. PostgreSQL writes a new row version whatever
    is set, so there rows go in at most two groups, which keep the statements per batch
    few: the rollups, with the routing columns too when a rule moved them on any row; every
    column when an SLA column moved (each value sent is a parameter its driver quotes)."""
    narrow = connection.vendor == "sqlite"
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    if narrow:
        # Rows by the indexed columns they change, with the other columns they change.
        by_indexed: dict[frozenset[str], list[tuple[int, tuple[Any, ...], set[str]]]] = {}
        for pk, c in sorted(conversations.items()):
            values = tuple(getattr(c, name) for name in _STORED)
            old = before.get(pk)
            changed = (
                {n for n, a, b in zip(_STORED, old, values, strict=True) if a != b}
                if old is not None
                else set(_STORED)
            )
            by_indexed.setdefault(frozenset(changed & _INDEXED), []).append((pk, values, changed))
        for indexed, members in by_indexed.items():
            wanted = indexed.union(*(changed for _, _, changed in members))
            columns = tuple(n for n in _STORED if n in wanted)
            rows = groups.setdefault((*columns, "updated_at"), [])
            for pk, values, _ in members:
                row = {"pk": pk, "updated_at": now}
                row.update((n, v) for n, v in zip(_STORED, values, strict=True) if n in wanted)
                rows.append(row)
        return groups
    # Each row's columns are the first of ``_STORED``: those it must set.
    planned: list[tuple[int, tuple[Any, ...], tuple[str, ...]]] = []
    for pk, c in sorted(conversations.items()):
        values = tuple(getattr(c, name) for name in _STORED)
        old = before.get(pk)
        if old is None:
            columns = _STORED
        elif values[len(_ROLLUP_FIELDS) :] == old[len(_ROLLUP_FIELDS) :]:
            columns = _ROLLUP_FIELDS
        elif values[len(_ROUTED_STORED) :] == old[len(_ROUTED_STORED) :]:
            columns = _ROUTED_STORED
        else:
            columns = _STORED
        planned.append((pk, values, columns))
    # Every UPDATE statement of conversations runs the KPI marks' statement trigger once: rows
    # with only their rollups moved go with those a rule routed, when there are any, their
    # routing columns set as they are (the rows are locked since they were read).
    routed = any(columns is _ROUTED_STORED for _, _, columns in planned)
    for pk, values, columns in planned:
        if routed and columns is _ROLLUP_FIELDS:
            columns = _ROUTED_STORED
        row = {"pk": pk, "updated_at": now}
        row.update(zip(columns, values, strict=False))  # the values of those columns
        groups.setdefault((*columns, "updated_at"), []).append(row)
    return groups


def _is_dm(thread_key: str) -> bool:
    """Private threads never take in public posts: a reply there would go out as a DM."""
    return thread_key.startswith("dm:")


def _thread_of(thread_key: str, contact_id: int) -> tuple[str, int | None]:
    """What makes a conversation the open one of a thread: the thread itself if private, the
    thread and the customer if public."""
    return (thread_key, None) if _is_dm(thread_key) else (thread_key, contact_id)


def _thread_key(post: InboundPost) -> str:
    if post.kind == MessageKind.DM:
        return f"dm:{post.thread_id or post.author.platform_user_id}"
    return f"thread:{post.thread_id or post.in_reply_to_id or post.external_id}"


def inbound_posts_store(
    *,
    channel: ChannelAccount,
    posts: Sequence[ClassifiedPost],
    identities: dict[str, SocialIdentity],
    keyword_tags: dict[str, int] | None = None,
) -> StoreResult:
    """Thread new inbound posts into conversations and store them, in a fixed number of queries.

    ``posts`` must be new to the channel and sorted oldest first. A reply joins the conversation
    of the post it answers; a DM joins the open conversation of its thread; any other post by a
    contact with an open conversation on this channel joins that; otherwise a new conversation.
    """
    if not posts:
        return StoreResult(messages=0, conversations_created=0, conversation_ids=[])

    in_batch = {item.post.external_id for item in posts}
    parent_ids = {
        item.post.in_reply_to_id
        for item in posts
        if item.post.in_reply_to_id and item.post.in_reply_to_id not in in_batch
    }
    conversation_of_parent: dict[str, int] = {
        external_id: conversation_id
        for external_id, conversation_id in Message.objects.filter(
            channel=channel, external_id__in=parent_ids
        ).values_list("external_id", "conversation_id")
        if external_id is not None
    }

    contact_ids = {identities[item.post.author.platform_user_id].contact_id for item in posts}
    thread_keys = {_thread_key(item.post) for item in posts}
    # Active conversations of these contacts or threads on this channel, plus parents' ones.
    candidates = (
        Conversation.objects.filter(channel=channel).filter(
            id__in=set(conversation_of_parent.values())
        )
        | Conversation.objects.filter(
            channel=channel, status__in=ACTIVE_STATUSES, contact_id__in=contact_ids
        )
        | Conversation.objects.filter(
            channel=channel, status__in=ACTIVE_STATUSES, thread_key__in=thread_keys
        )
    )
    # Locked so an agent's change to one of them waits for this batch instead of being lost.
    by_id: dict[int, Conversation] = {
        c.pk: c for c in candidates.select_for_update().order_by("last_message_at")
    }
    # A public thread is shared by everyone who answers the same post (the brand's own, often,
    # which is not stored): each customer in it has a conversation of their own. A private
    # thread is one customer's.
    open_by_thread: dict[tuple[str, int | None], Conversation] = {}
    open_by_contact: dict[int, Conversation] = {}
    for candidate in by_id.values():  # oldest first, so the newest wins each key
        if candidate.status in ACTIVE_STATUSES:
            open_by_thread[_thread_of(candidate.thread_key, candidate.contact_id)] = candidate
            if not _is_dm(candidate.thread_key):
                open_by_contact[candidate.contact_id] = candidate

    conversation_of_post: dict[str, Conversation] = {
        ext: by_id[cid] for ext, cid in conversation_of_parent.items() if cid in by_id
    }
    new_conversations: list[Conversation] = []
    placed: list[tuple[ClassifiedPost, Conversation]] = []
    # Listen-only and monitoring-only channels keep everything out of the work views; others may
    # keep posts that ask nothing of us (brand mentions) there until one does.
    always_monitor = bool(channel.settings.get("monitor_only", channel.is_listen_only))
    monitor_unactionable = bool(channel.settings.get("monitor_unactionable", False))

    for item in posts:
        post = item.post
        identity = identities[post.author.platform_user_id]
        key = _thread_key(post)
        conversation: Conversation | None = (
            conversation_of_post.get(post.in_reply_to_id) if post.in_reply_to_id else None
        )
        if conversation is not None and conversation.status == Status.CLOSED:
            conversation = None
        if conversation is None:
            conversation = open_by_thread.get(_thread_of(key, identity.contact_id))
        if conversation is None and post.kind != MessageKind.DM:
            conversation = open_by_contact.get(identity.contact_id)
        if conversation is None:
            conversation = Conversation(
                contact_id=identity.contact_id,
                channel=channel,
                team_id=channel.default_team_id,
                subject=post.body.splitlines()[0][:200] if post.body else "",
                thread_key=key,
                is_monitoring=always_monitor or (monitor_unactionable and not item.actionable),
                created_at=post.created_at,
                last_message_at=post.created_at,
            )
            new_conversations.append(conversation)
            open_by_thread[_thread_of(key, identity.contact_id)] = conversation
            if not _is_dm(key):
                open_by_contact[identity.contact_id] = conversation
        conversation_of_post[post.external_id] = conversation
        placed.append((item, conversation))

    # Roll each message into its conversation in memory first, so new conversations are
    # inserted complete and only those that existed already need an UPDATE. Routing and SLA
    # clocks run here too, on the rows in memory.
    book = RuleBook.load()
    setup = SlaSetup.load(calendars=book.calendars.calendar_set)
    facts = _BatchFacts.load(
        book=book, setup=setup, contact_ids=contact_ids, conversation_ids=set(by_id)
    )
    stored_before = {pk: tuple(getattr(c, name) for name in _STORED) for pk, c in by_id.items()}
    decisions = Decisions()
    keyword_tags = keyword_tags or {}
    created = {id(c) for c in new_conversations}
    started: set[int] = set()
    reopened: list[tuple[Conversation, datetime]] = []
    # id(conversation): the keyword lists' tags of the batch's posts so far, which the rules of
    # its later posts see as the conversation's tags (stored after the loop).
    keyword_tagged: dict[int, set[int]] = {}
    # Read once: ``pk`` and a foreign key's id are descriptors, costly for every post.
    platform, channel_id = channel.platform, channel.pk
    for item, conversation in placed:
        post = item.post
        identity = identities[post.author.platform_user_id]
        contact_id = identity.contact_id
        is_vip = contact_id in facts.vip_contacts
        previous_status = conversation.status
        was_waiting = conversation.waiting_since is not None
        was_monitoring = conversation.is_monitoring
        reopened_before = len(reopened)
        _apply_inbound(conversation, item, reopened)
        if conversation.is_monitoring and item.actionable and not always_monitor:
            conversation.is_monitoring = False
        is_first = id(conversation) in created and id(conversation) not in started
        if is_first:
            rule_events = _CREATED
        elif len(reopened) > reopened_before:
            rule_events = _REOPENED
        else:
            rule_events = _RECEIVED
        priority_before = conversation.priority
        if book.rules:
            # The tags it has: stored, added by this batch's rules, and the keyword lists' of
            # this post and the batch's earlier ones.
            stored_tags = facts.tags.get(conversation.id)  # none for a new conversation
            added_tags = decisions.tags.get(id(conversation))
            keyword_tag_ids: set[int] | tuple[()] = ()
            if keyword_tags:
                keyword_tag_ids = keyword_tagged.setdefault(id(conversation), set())
                keyword_tag_ids.update(keyword_tags[k] for k in item.keywords if k in keyword_tags)
            tag_ids = (
                frozenset().union(stored_tags or (), added_tags or (), keyword_tag_ids)
                if stored_tags or added_tags or keyword_tag_ids
                else _NO_TAGS
            )
            escalations_before = len(decisions.escalations)
            matches = book.evaluate(
                Facts(
                    event=rule_events[0],
                    platform=platform,
                    channel_id=channel_id,
                    kind=post.kind,
                    text=post.body,
                    sentiment=item.sentiment,
                    language=item.language,
                    is_vip=is_vip,
                    followers=identity.followers_count,
                    has_open_escalation=contact_id in facts.escalated_contacts,
                    tag_ids=tag_ids,
                    priority=conversation.priority,
                    at=post.created_at,
                ),
                rule_events,
            )
            if matches:
                decisions_take(
                    conversation,
                    matches,
                    decisions,
                    at=post.created_at,
                    key=post.external_id,
                    name=identity.display_name or identity.handle,
                    tags=tag_ids,
                )
                if len(decisions.escalations) > escalations_before:
                    # Opened once the batch's rows are written; its later posts see it open.
                    facts.escalated_contacts.add(contact_id)
        if is_first:
            started.add(id(conversation))
        if conversation.is_monitoring:
            # Only listened to: no reply is expected, so no clock runs.
            if conversation.sla_due_at is not None or conversation.sla_paused_at is not None:
                sla_clear(conversation)
        elif is_first or was_monitoring:
            # New, or the customer now asks something of us: the clocks start here.
            sla_start(conversation, setup=setup, is_vip=is_vip, at=post.created_at)
        else:
            sla_on_inbound(
                conversation,
                setup=setup,
                at=post.created_at,
                was_waiting=was_waiting,
                previous_status=previous_status,
            )
            if conversation.priority != priority_before:
                sla_policy_change(conversation, setup=setup, is_vip=is_vip, at=post.created_at)
    now = timezone.now()

    def held() -> list[tuple[Conversation, int | None]]:
        """Each conversation of the batch, and who held it active before the batch."""
        status_at, assignee_at = _STORED.index("status"), _STORED.index("assignee_id")
        pairs = []
        for conversation in {id(c): c for _, c in placed}.values():
            stored = None if id(conversation) in created else stored_before[conversation.pk]
            before = None
            if stored is not None and stored[status_at] in ACTIVE_STATUSES:
                before = stored[assignee_at]
            pairs.append((conversation, before))
        return pairs

    auto_assign(decisions, now=now, batch=held)
    acknowledgements = acknowledgements_prepare(decisions, channel=channel, now=now)
    instances_insert(Conversation, new_conversations)
    # By COPY on PostgreSQL: the batch's messages are new (checked under the channel's lock).
    rows_copy(
        Message,
        _MESSAGE_COLUMNS,
        [
            (
                conversation.pk,
                channel.pk,
                Direction.IN,
                item.post.kind,
                item.post.external_id,
                item.post.in_reply_to_id,
                identities[item.post.author.platform_user_id].pk,
                item.post.body,
                item.language,
                item.sentiment,
                item.keywords,
                item.post.created_at,
                now,
                DeliveryStatus.RECEIVED,
                "",
                item.post.raw,
            )
            for item, conversation in placed
        ],
    )

    existing = {c.pk: c for _, c in placed if id(c) not in created}
    for columns, rows in _changed_rows(existing, stored_before, now).items():
        rows_update(Conversation, rows, columns)
    # Inbound messages are facts in their own table; the timeline records changes of state.
    decisions.events[:0] = [
        *((c, EventKind.CREATED, decisions.created(c), c.created_at) for c in new_conversations),
        *((c, EventKind.REOPENED, {}, at) for c, at in reopened),
    ]
    tag_pairs = decisions.tag_pairs(c for _, c in placed)
    if keyword_tags:
        tag_pairs |= {
            (c.pk, keyword_tags[name])
            for item, c in placed
            for name in item.keywords
            if name in keyword_tags
        }
    _tags_insert(tag_pairs, new_ids={c.pk for c in new_conversations})
    decisions_write(decisions, channel=channel, acknowledgements=acknowledgements, now=now)
    _publish_inbound(channel_id=channel.pk, new_conversations=new_conversations, placed=placed)
    return StoreResult(
        messages=len(placed),
        conversations_created=len(new_conversations),
        conversation_ids=list({c.pk: None for _, c in placed}),
    )


def _tags_insert(pairs: set[tuple[int, int]], *, new_ids: set[int]) -> None:
    """The batch's (conversation, tag) rows. An existing conversation's may have been added
    meanwhile, by an agent: those already there are skipped. On PostgreSQL a new
    conversation's, which cannot be there yet, go in apart by COPY, without looking for
    conflicts; on SQLite, where that costs the same, one statement takes all. Sorted, so that
    two transactions take the rows' locks in the same order."""
    through, fields = Conversation.tags.through, ("conversation", "tag")
    if connection.vendor == "postgresql":
        id_rows_copy(through, fields, sorted(p for p in pairs if p[0] in new_ids))
        pairs = {p for p in pairs if p[0] not in new_ids}
    id_rows_insert(through, fields, sorted(pairs), ignore_conflicts=True)


def _publish_inbound(
    *,
    channel_id: int,
    new_conversations: list[Conversation],
    placed: list[tuple[ClassifiedPost, Conversation]],
) -> None:
    """Webhook events of a batch (nothing, not even a query, when nobody subscribes)."""
    from conversations.webhook_events import (
        contacts_attach,
        conversation_payload,
        webhook_event_publish,
        webhook_subscribed,
    )

    created = bool(new_conversations) and webhook_subscribed("conversation.created")
    received = bool(placed) and webhook_subscribed("message.received")
    if received:
        contacts_attach(c for _, c in placed)
    elif created:
        contacts_attach(new_conversations)
    if created:
        webhook_event_publish(
            event="conversation.created",
            items=[
                (str(c.pk), {"conversation": conversation_payload(c)}) for c in new_conversations
            ],
        )
    if received:
        webhook_event_publish(
            event="message.received",
            items=[
                (
                    f"{channel_id}:{item.post.external_id}",
                    {
                        "conversation": conversation_payload(c),
                        "message": {
                            "external_id": item.post.external_id,
                            "kind": item.post.kind,
                            "body": item.post.body,
                            "created_at": item.post.created_at.isoformat(),
                        },
                    },
                )
                for item, c in placed
            ],
        )


def _apply_inbound(
    conversation: Conversation,
    item: ClassifiedPost,
    reopened: list[tuple[Conversation, datetime]],
) -> None:
    post = item.post
    if item.sentiment is not None:
        n = conversation.inbound_count
        previous = conversation.sentiment if conversation.sentiment is not None else 0.0
        conversation.sentiment = (previous * n + item.sentiment) / (n + 1)
    conversation.inbound_count += 1
    conversation.message_count += 1
    if post.created_at >= conversation.last_message_at or conversation.message_count == 1:
        conversation.last_message_at = post.created_at
        conversation.last_message_preview = post.body[:280]
        conversation.last_message_direction = Direction.IN
    if conversation.last_inbound_at is None or post.created_at > conversation.last_inbound_at:
        conversation.last_inbound_at = post.created_at
    if conversation.waiting_since is None:
        conversation.waiting_since = post.created_at
    conversation.snoozed_until = None
    if conversation.status in (Status.RESOLVED, Status.PENDING):
        if conversation.status == Status.RESOLVED:
            reopened.append((conversation, post.created_at))
            conversation.resolved_at = None
        conversation.status = Status.OPEN


# --- What agents do ---------------------------------------------------------------------


def _record(
    conversation: Conversation,
    kind: str,
    *,
    actor: User | None,
    at: datetime | None = None,
    **data: Any,
) -> ConversationEvent:
    event = ConversationEvent.objects.create(
        conversation=conversation,
        kind=kind,
        actor=actor,
        data=data,
        created_at=at or timezone.now(),
    )
    from conversations.webhook_events import conversation_event_publish

    conversation_event_publish(
        conversation=conversation, kind=kind, event_id=event.pk, data=event.data
    )
    return event


def _locked(conversation: Conversation) -> Conversation:
    """The conversation as stored now, locked until the transaction ends: the ingest pipeline
    may have changed it since the caller loaded it."""
    return Conversation.objects.select_for_update().get(pk=conversation.pk)


@transaction.atomic
def conversation_reply_create(
    *,
    conversation: Conversation,
    author: User,
    body: str,
    at: datetime | None = None,
    delivery_status: str = DeliveryStatus.QUEUED,
) -> Message:
    """An agent's reply: stored as an outbound message queued for sending through the channel.
    Governance gates it first (``governance.approvals.reply_submit`` checks and stores).

    The first reply sets the first response time; any reply stops the customer's wait. A reply
    held for approval is only stored: it counts once let out (``conversation_reply_released``).
    """
    conversation = _locked(conversation)
    at = at or timezone.now()
    kind = MessageKind.DM if _is_dm(conversation.thread_key) else MessageKind.REPLY
    parent = (
        conversation.messages.filter(direction=Direction.IN, external_id__isnull=False)
        .order_by("-created_at", "-id")
        .values_list("external_id", flat=True)
        .first()
    )
    message = Message.objects.create(
        conversation=conversation,
        channel_id=conversation.channel_id,
        direction=Direction.OUT,
        kind=kind,
        in_reply_to_external_id=parent or "",
        author_user=author,
        body=body,
        created_at=at,
        received_at=at,
        delivery_status=delivery_status,
    )
    if delivery_status != DeliveryStatus.PENDING_APPROVAL:
        _reply_count(conversation, message, at=at)
    return message


@transaction.atomic
def conversation_reply_released(*, message: Message, at: datetime | None = None) -> None:
    """A message held for approval was let out: it counts from now, as a reply by its author
    (an automatic one is no response by a person: the customer still waits)."""
    conversation = Conversation.objects.select_for_update().get(pk=message.conversation_id)
    _reply_count(conversation, message, at=at or timezone.now())


def _reply_count(conversation: Conversation, message: Message, *, at: datetime) -> None:
    conversation.message_count += 1
    if at >= conversation.last_message_at:
        conversation.last_message_at = at
        conversation.last_message_preview = message.body[:280]
        conversation.last_message_direction = Direction.OUT
    if message.author_user_id is None:
        conversation.save(
            update_fields=[
                "message_count",
                "last_message_at",
                "last_message_preview",
                "last_message_direction",
                "updated_at",
            ]
        )
        return
    first = conversation.first_response_at is None
    # How long the customer had waited for this reply: the first response time for the first
    # reply, a next response time for the later ones (none if nobody was waiting).
    waited = (
        max(0.0, (at - conversation.waiting_since).total_seconds())
        if conversation.waiting_since
        else None
    )
    conversation.waiting_since = None
    if first:
        conversation.first_response_at = at
    if conversation.status == Status.NEW:
        conversation.status = Status.OPEN
    sla = sla_on_reply(conversation, at=at)
    conversation.save(
        update_fields=[
            "message_count",
            "last_message_at",
            "last_message_preview",
            "last_message_direction",
            "waiting_since",
            "first_response_at",
            "status",
            *SLA_FIELDS,
            "updated_at",
        ]
    )
    _record(
        conversation,
        EventKind.REPLY_SENT,
        actor=message.author_user,
        at=at,
        message_id=message.pk,
        first_response=first,
        response_seconds=waited,
        **sla,
    )


@transaction.atomic
def conversation_note_add(*, conversation: Conversation, author: User, body: str) -> Message:
    """An internal note: visible to colleagues only, never sent anywhere."""
    now = timezone.now()
    message = Message.objects.create(
        conversation=conversation,
        channel_id=conversation.channel_id,
        direction=Direction.OUT,
        kind=MessageKind.NOTE,
        author_user=author,
        body=body,
        created_at=now,
        received_at=now,
        delivery_status=DeliveryStatus.SENT,
    )
    mentioned = _mentioned_colleagues(conversation, body, author)
    Notification.objects.bulk_create(
        Notification(
            recipient=user,
            conversation=conversation,
            actor=author,
            text=f"{author.get_full_name() or author.get_username()} mentioned you: {body[:200]}",
        )
        for user in mentioned
    )
    _record(
        conversation,
        EventKind.NOTE_ADDED,
        actor=author,
        message_id=message.pk,
        mentioned=[u.get_username() for u in mentioned],
    )
    return message


# "@" then a username (which may itself hold "@", like an email); not inside a word or address.
_MENTION = re.compile(r"(?<![\w@])@([\w.@+-]{1,150})")
_TRAILING = ".,;:!?-"


def _mentioned_colleagues(conversation: Conversation, body: str, author: User) -> list[User]:
    """Users named as @username in a note who may see the conversation, the author aside.
    An exact username wins; otherwise a case-insensitive match counts only if it is the only
    one."""
    tokens = {t.rstrip(_TRAILING) for t in _MENTION.findall(body)} - {""}
    if not tokens:
        return []
    users = list(
        User.objects.filter(is_active=True)
        .annotate(lower_name=Lower("username"))
        .filter(lower_name__in={t.lower() for t in tokens})
    )
    chosen: dict[int, User] = {}
    for token in tokens:
        exact = [u for u in users if u.username == token]
        loose = [u for u in users if u.username.lower() == token.lower()]
        match = exact or (loose if len(loose) == 1 else [])
        for user in match:
            chosen[user.pk] = user
    chosen.pop(author.pk, None)
    return [
        user
        for user in chosen.values()
        if (visible := visible_channel_ids(user=user)) is None
        or visible.filter(channel_id=conversation.channel_id).exists()
    ]


def _queue_leave(conversation: Conversation) -> None:
    """The conversation no longer waits for auto-assignment."""
    QueuedAssignment.objects.filter(pk=conversation.pk).delete()


def _hand_out_soon() -> None:
    """An agent has room again: hand out what waits, if anything does, after the commit."""
    if queue_may_wait():
        from conversations.tasks import assign_queued_conversations

        transaction.on_commit(assign_queued_conversations.delay)


@transaction.atomic
def conversation_assign(
    *,
    conversation: Conversation,
    assignee: User | None,
    actor: User,
    at: datetime | None = None,
) -> Conversation:
    conversation = _locked(conversation)
    previous = conversation.assignee_id
    if previous == (assignee.pk if assignee else None):
        return conversation
    conversation.assignee = assignee
    if conversation.status == Status.NEW and assignee is not None:
        conversation.status = Status.OPEN
    conversation.save(update_fields=["assignee", "status", "updated_at"])
    # Someone took it or let it go: it no longer waits for auto-assignment, and one let go
    # is theirs to hand on, not the queue's.
    _queue_leave(conversation)
    if previous is not None and conversation.status in ACTIVE_STATUSES:
        _hand_out_soon()  # a place freed
    _record(
        conversation,
        EventKind.ASSIGNED,
        actor=actor,
        at=at,
        previous=previous,
        assignee=assignee.pk if assignee else None,
    )
    return conversation


@transaction.atomic
def conversation_status_set(
    *,
    conversation: Conversation,
    status: str,
    actor: User | None,
    at: datetime | None = None,
    book: RuleBook | None = None,
) -> Conversation:
    """``book``: the rules, for a caller setting many conversations' status at once."""
    if status not in Status.values:
        raise ValueError(f"Unknown status {status!r}.")
    conversation = _locked(conversation)
    previous = conversation.status
    if previous == status:
        return conversation
    at = at or timezone.now()
    conversation.status = status
    if status in (Status.RESOLVED, Status.CLOSED):
        conversation.resolved_at = conversation.resolved_at or at
        conversation.waiting_since = None
    elif previous in (Status.RESOLVED, Status.CLOSED):
        conversation.resolved_at = None
    conversation.snoozed_until = None
    sla = sla_on_status(conversation, setup=SlaSetup.load(), previous=previous, at=at)
    conversation.save(
        update_fields=[
            "status",
            "resolved_at",
            "waiting_since",
            "snoozed_until",
            *SLA_FIELDS,
            "updated_at",
        ]
    )
    _record(
        conversation,
        EventKind.STATUS_CHANGED,
        actor=actor,
        at=at,
        previous=previous,
        status=status,
        **sla,
    )
    if status in (Status.RESOLVED, Status.CLOSED):
        from conversations.escalations import escalations_settle

        escalations_settle(conversation_id=conversation.pk, status=status, at=at, actor=actor)
        _queue_leave(conversation)
        if conversation.assignee_id is not None:
            _hand_out_soon()  # a place freed: some conversation may wait for it
    elif previous in (Status.RESOLVED, Status.CLOSED) and status in ACTIVE_STATUSES:
        # Reopened by hand: the rules for "conversation reopened" run as they do when the
        # customer's message reopens it, and what they change is read back for the caller.
        # A rule that fails is logged and said on the timeline; the agent's change stands.
        try:
            with transaction.atomic():
                matched = rules_run(
                    conversation_id=conversation.pk, event="conversation_reopened", book=book
                )
        except Exception as exc:
            logger.exception("Rules on the reopening of conversation %s failed", conversation.pk)
            ConversationEvent.objects.create(
                conversation=conversation,
                kind=EventKind.RULE_APPLIED,
                created_at=at,
                data={
                    "event": "conversation_reopened",
                    "rules_failed": f"{type(exc).__name__}: {exc}"[:300],
                },
            )
            matched = 0
        if matched:
            conversation.refresh_from_db()
    return conversation


@transaction.atomic
def conversation_priority_set(
    *, conversation: Conversation, priority: int, actor: User
) -> Conversation:
    if priority not in Priority.values:
        raise ValueError(f"Unknown priority {priority!r}.")
    conversation = _locked(conversation)
    previous = conversation.priority
    if previous == priority:
        return conversation
    conversation.priority = priority
    if conversation.is_monitoring:
        # Only listened to: no reply is expected, so no clock runs, whatever its priority.
        sla_clear(conversation)
    else:
        sla_policy_change(
            conversation,
            setup=SlaSetup.load(),
            is_vip=Contact.objects.filter(pk=conversation.contact_id, is_vip=True).exists(),
            at=timezone.now(),
        )
    conversation.save(update_fields=["priority", *SLA_FIELDS, "updated_at"])
    _record(
        conversation, EventKind.PRIORITY_CHANGED, actor=actor, previous=previous, priority=priority
    )
    return conversation


@transaction.atomic
def conversation_tag(
    *, conversation: Conversation, tag: Tag, actor: User, add: bool = True
) -> Conversation:
    """Add or remove one tag; recorded only when it changes something."""
    present = conversation.tags.filter(pk=tag.pk).exists()
    if add and not present:
        conversation.tags.add(tag)
        _record(conversation, EventKind.TAGGED, actor=actor, tag=tag.name)
    elif not add and present:
        conversation.tags.remove(tag)
        _record(conversation, EventKind.UNTAGGED, actor=actor, tag=tag.name)
    return conversation


@transaction.atomic
def conversation_snooze(
    *, conversation: Conversation, until: datetime, actor: User
) -> Conversation:
    """Put a conversation aside until a time: it waits as pending and comes back as open then,
    or as soon as the customer writes."""
    if until <= timezone.now():
        raise ValueError("Snooze until a time in the future.")
    conversation = _locked(conversation)
    if conversation.status not in SNOOZABLE_STATUSES:
        raise ValueError(
            f"A conversation that is {conversation.get_status_display().lower()} cannot be snoozed."
        )
    previous = conversation.status
    conversation.status = Status.PENDING
    conversation.snoozed_until = until
    sla_on_status(conversation, setup=SlaSetup.load(), previous=previous, at=timezone.now())
    conversation.save(update_fields=["status", "snoozed_until", *SLA_FIELDS, "updated_at"])
    _record(conversation, EventKind.SNOOZED, actor=actor, until=until.isoformat())
    if previous != Status.PENDING:
        _record(
            conversation,
            EventKind.STATUS_CHANGED,
            actor=actor,
            previous=previous,
            status=Status.PENDING,
        )
    return conversation


# Escalated conversations wait on a department, resolved ones on nobody: neither is snoozed.
SNOOZABLE_STATUSES = (Status.NEW, Status.OPEN, Status.PENDING)


def snoozes_wake(*, now: datetime | None = None) -> int:
    """Reopen conversations whose snooze has ended. One indexed query finds them; each is
    claimed by a conditional update, so two beats never wake one twice."""
    now = now or timezone.now()
    woken = 0
    setup: SlaSetup | None = None
    for pk in Conversation.objects.filter(snoozed_until__lte=now).values_list("pk", flat=True):
        with transaction.atomic():
            changed = Conversation.objects.filter(pk=pk, snoozed_until__lte=now).update(
                snoozed_until=None, status=Status.OPEN, updated_at=now
            )
            if changed:
                # The clocks that stood still while snoozed run again.
                setup = setup or SlaSetup.load()
                conversation = Conversation.objects.select_related("sla_policy").get(pk=pk)
                sla_on_status(conversation, setup=setup, previous=Status.PENDING, at=now)
                conversation.save(update_fields=list(SLA_FIELDS))
                ConversationEvent.objects.bulk_create(
                    [
                        ConversationEvent(conversation_id=pk, kind=EventKind.WOKE, created_at=now),
                        ConversationEvent(
                            conversation_id=pk,
                            kind=EventKind.STATUS_CHANGED,
                            created_at=now,
                            data={"previous": Status.PENDING, "status": Status.OPEN},
                        ),
                    ]
                )
                woken += 1
    return woken


_PLACEHOLDER = re.compile(r"\{(first_name|name|agent_name|agent_first_name|channel)\}")


def canned_render(*, canned: CannedResponse, conversation: Conversation, agent: User) -> str:
    """A canned response with its placeholders filled in for this conversation."""
    contact_name = conversation.contact.name.strip() or "there"
    values = {
        "name": contact_name,
        "first_name": contact_name.split()[0],
        "agent_name": agent.get_full_name() or agent.get_username(),
        "agent_first_name": agent.first_name or agent.get_username(),
        "channel": conversation.channel.name,
    }
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], canned.body)


def notifications_mark_read(
    *, notifications: QuerySet[Notification], at: datetime | None = None
) -> int:
    """Mark the unread ones among these notifications read (those read before keep their
    time). Returns how many changed."""
    unread = notifications.filter(read_at__isnull=True)
    nav_counts.unread_forget(unread.values_list("recipient_id", flat=True).distinct())
    return unread.update(read_at=at or timezone.now())


# --- The inbox's bulk actions -----------------------------------------------------------

BULK_LIMIT = 500
BULK_ACTIONS = {
    "assign_me": "Assign to me",
    "unassign": "Unassign",
    "status": "Set the status",
    "tag": "Add a tag",
}
# New is where conversations start and escalating names a target: neither is set in bulk.
BULK_STATUSES = [s for s in Status if s not in (Status.NEW, Status.ESCALATED)]


@dataclass(frozen=True)
class BulkOutcome:
    conversation_id: int
    done: bool
    problem: str = ""  # "not_found" or "forbidden" when not done
    detail: str = ""


def conversations_bulk_apply(
    *, user: User, ids: Sequence[int], action: str, status: str = "", tag: str = ""
) -> list[BulkOutcome]:
    """One inbox action on each chosen conversation, each through the service a single change
    uses: conversations the user may not see are not found, and taking one needs reply rights
    on its channel. At most ``BULK_LIMIT``; an unknown action, a status that cannot be set in
    bulk or an empty tag raises ValueError before anything changes."""
    from conversations.selectors import conversations_visible_to

    if action not in BULK_ACTIONS:
        raise ValueError("Choose an action for the selected conversations.")
    if action == "status" and status not in BULK_STATUSES:
        raise ValueError(f"Choose a status: {', '.join(BULK_STATUSES)}.")
    name = tag.strip().lower()[:50]
    if action == "tag" and not name:
        raise ValueError("Name the tag to add.")
    wanted = list(dict.fromkeys(ids))[:BULK_LIMIT]
    found = {c.pk: c for c in conversations_visible_to(user=user).filter(pk__in=wanted)}
    replyable = replyable_channel_ids(user=user) if action == "assign_me" else None
    chosen_tag = Tag.objects.get_or_create(name=name)[0] if action == "tag" else None
    book: RuleBook | None = None
    outcomes = []
    for pk in wanted:
        conversation = found.get(pk)
        if conversation is None:
            outcomes.append(BulkOutcome(pk, False, "not_found", "No such conversation."))
            continue
        if action == "assign_me":
            if replyable is not None and conversation.channel_id not in replyable:
                outcomes.append(
                    BulkOutcome(
                        pk,
                        False,
                        "forbidden",
                        "Your teams may only view this channel, not take conversations.",
                    )
                )
                continue
            conversation_assign(conversation=conversation, assignee=user, actor=user)
        elif action == "unassign":
            conversation_assign(conversation=conversation, assignee=None, actor=user)
        elif action == "status":
            # The rules for reopened conversations, read once for all of them.
            if book is None and status in ACTIVE_STATUSES:
                book = RuleBook.load()
            conversation_status_set(conversation=conversation, status=status, actor=user, book=book)
        elif chosen_tag is not None:
            conversation_tag(conversation=conversation, tag=chosen_tag, actor=user)
        outcomes.append(BulkOutcome(pk, True))
    return outcomes
