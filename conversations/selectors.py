"""Reads of conversations, always scoped to what the user may see."""

import base64
import binascii
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypedDict
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.contrib.postgres.search import SearchQuery
from django.core.cache import cache
from django.db import connection
from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from channels_ingest.platforms import Platform
from contacts.models import MergeSuggestion, MergeSuggestionStatus, SocialIdentity
from conversations import nav_counts
from conversations.escalations import escalated_conversation_ids
from conversations.models import (
    ACTIVE_STATUSES,
    MESSAGE_SEARCH_VECTOR,
    CannedResponse,
    Conversation,
    DeliveryStatus,
    Department,
    Direction,
    Escalation,
    EscalationLevel,
    EscalationPath,
    EventKind,
    Message,
    MessageKind,
    Notification,
    Priority,
    SlaPolicy,
    SlaState,
    Status,
    Tag,
    sentiment_label,
    sla_state,
)
from governance.access import access_of
from governance.models import ChannelAccess, Role, Team, TeamMembership
from governance.selectors import replyable_channel_ids, seen_channel_ids
from scrm.types import AnyUser, user_id


def conversations_visible_to(*, user: AnyUser) -> QuerySet[Conversation]:
    """The one scope for conversations: those on channels the user's teams may see."""
    if not user.is_authenticated:
        return Conversation.objects.none()
    access = access_of(user)
    ids = access.visible_channel_ids
    conversations = Conversation.objects.all()
    if ids is None:
        return conversations
    on_channels = Q(channel_id__in=sorted(ids))
    if not access.receives_escalations:
        return conversations.filter(on_channels)
    # A department's team sees what was escalated to it, whatever channels it watches.
    return conversations.filter(on_channels | Q(pk__in=escalated_conversation_ids(user=user)))


def conversation_takeable_by(*, conversation: Conversation, user: AnyUser) -> bool:
    """Taking a conversation means answering it: only for those whose teams may reply on its
    channel."""
    replyable = replyable_channel_ids(user=user)
    return replyable is None or conversation.channel_id in replyable


def messages_visible_to(*, user: AnyUser) -> QuerySet[Message]:
    if not user.is_authenticated:
        return Message.objects.none()
    ids = seen_channel_ids(user=user)
    return Message.objects.all() if ids is None else Message.objects.filter(channel_id__in=ids)


# --- The inbox --------------------------------------------------------------------------

INBOX_VIEWS = {
    "mine": "Mine",
    "unassigned": "Unassigned",
    "team": "My team",
    "all": "All",
    "escalated": "Escalated",
    "monitoring": "Monitoring",
}


def _view_filter(view: str, user: AnyUser, status: str = "") -> Q:
    """The conversations of a view. Views hold active work; a status the agent picks
    (resolved or closed included) stands in for that default."""
    current = Q(status=status) if status else Q(status__in=ACTIVE_STATUSES)
    work = Q(is_monitoring=False) & current
    if view == "mine":
        return work & Q(assignee_id=user.pk)
    if view == "unassigned":
        return work & Q(assignee__isnull=True)
    if view == "team":
        return work & Q(team_id__in=access_of(user).team_ids)
    if view == "escalated":
        return Q(status=Status.ESCALATED) & current
    if view == "monitoring":
        return Q(is_monitoring=True) & current
    return work


SORTS = {
    "newest": "Newest activity",
    "waiting": "Waiting longest",
    "priority": "Priority",
    "sla": "SLA due soonest",
}

# Keyset order of each sort: (field, descending). The last field is unique, so every row has
# one place and a cursor can say where a page ended.
_SORT_KEYS: dict[str, list[tuple[str, bool]]] = {
    "newest": [("last_message_at", True), ("pk", True)],
    "waiting": [("wait_key", False), ("pk", False)],
    "priority": [("priority", True), ("last_message_at", True), ("pk", True)],
    "sla": [("sla_key", False), ("pk", False)],
}
# Keys that hold a time (for reading cursors back), and what stands in for "no due time".
_TIME_KEYS = ("last_message_at", "wait_key", "sla_key")
# Conversations nobody waits on sort after all that do.
_NOT_WAITING = datetime(9999, 12, 31, tzinfo=UTC)
_SENTIMENT = {
    "positive": Q(sentiment__gte=0.05),
    "neutral": Q(sentiment__gt=-0.05, sentiment__lt=0.05),
    "negative": Q(sentiment__lte=-0.05),
}


def _int(value: str) -> int | None:
    return int(value) if value.isdigit() else None


def _day(value: str) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


@dataclass
class InboxFilters:
    view: str = "all"
    status: str = ""
    channel: int | None = None
    platform: str = ""
    team: int | None = None
    assignee: str = ""  # a user id, or "none"
    priority: int | None = None
    sentiment: str = ""
    tag: str = ""
    sla: str = ""
    since: date | None = None
    until: date | None = None
    search: str = ""
    sort: str = "newest"

    @classmethod
    def from_query(cls, params: Any) -> "InboxFilters":
        """Read from a query string; anything unknown or malformed is ignored."""
        view = params.get("view", "all")
        status = params.get("status", "")
        assignee = params.get("assignee", "")
        priority = _int(params.get("priority", ""))
        return cls(
            view=view if view in INBOX_VIEWS else "all",
            status=status if status in Status.values else "",
            channel=_int(params.get("channel", "")),
            platform=params.get("platform", "")
            if params.get("platform") in Platform.values
            else "",
            team=_int(params.get("team", "")),
            assignee=assignee if assignee == "none" or assignee.isdigit() else "",
            priority=priority if priority in Priority.values else None,
            sentiment=params.get("sentiment", "") if params.get("sentiment") in _SENTIMENT else "",
            tag=params.get("tag", "").strip()[:50],
            sla=params.get("sla", "") if params.get("sla") in SlaState.values else "",
            since=_day(params.get("since", "")),
            until=_day(params.get("until", "")),
            search=params.get("q", "").strip()[:200],
            sort=params.get("sort", "newest") if params.get("sort") in SORTS else "newest",
        )

    @property
    def narrowed(self) -> bool:
        """Whether anything beyond the view narrows the list."""
        return any(
            (
                self.status,
                self.channel,
                self.platform,
                self.team,
                self.assignee,
                self.priority,
                self.sentiment,
                self.tag,
                self.sla,
                self.since,
                self.until,
                self.search,
            )
        )

    def query_string(self) -> str:
        """These filters as a query string, for links that keep the agent's place."""
        pairs = {
            "view": self.view,
            "status": self.status,
            "channel": self.channel,
            "platform": self.platform,
            "team": self.team,
            "assignee": self.assignee,
            "priority": self.priority,
            "sentiment": self.sentiment,
            "tag": self.tag,
            "sla": self.sla,
            "since": self.since.isoformat() if self.since else "",
            "until": self.until.isoformat() if self.until else "",
            "q": self.search,
            "sort": "" if self.sort == "newest" else self.sort,
        }
        return urlencode({k: v for k, v in pairs.items() if v not in ("", None)})


class InboxRow(TypedDict):
    """One conversation of the inbox list, ready to show: read as plain columns (no model
    objects, no decrypted channel credentials), so a page of 50 costs a few milliseconds."""

    pk: int
    contact: str
    handle: str
    is_vip: bool
    status: str
    status_label: str
    priority: int
    priority_label: str
    tags: list[tuple[str, str]]  # (name, colour)
    preview: str
    outbound: bool
    platform: str
    channel: str
    team: str
    message_count: int
    last_message_at: datetime
    waiting_since: datetime | None
    sentiment: str
    assignee: str
    sla_state: str
    sla_due_at: datetime | None


@dataclass
class InboxPage:
    rows: list[InboxRow]
    next_cursor: str | None
    counts: dict[str, int] = field(default_factory=dict)


def _encode_cursor(sort: str, row: Any) -> str:
    """A row's place in the sort: ``row`` is a conversation or a mapping of the sort's keys."""
    if isinstance(row, Conversation):
        values = [getattr(row, name) for name, _ in _SORT_KEYS[sort]]
    else:
        values = [row[name] for name, _ in _SORT_KEYS[sort]]
    raw = json.dumps([sort, *(v.isoformat() if isinstance(v, datetime) else v for v in values)])
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_cursor(sort: str, cursor: str) -> list[Any] | None:
    """The key values a page ended at, or None for a cursor of another sort or a garbled one."""
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if not isinstance(raw, list) or raw[0] != sort or len(raw) != len(_SORT_KEYS[sort]) + 1:
            return None
        values: list[Any] = []
        for (name, _), value in zip(_SORT_KEYS[sort], raw[1:], strict=True):
            if name in _TIME_KEYS:
                moment = parse_datetime(str(value))
                if moment is None:
                    return None
                values.append(moment)
            else:
                values.append(int(value))
        return values
    except (ValueError, TypeError, IndexError, binascii.Error, UnicodeDecodeError):
        return None


def _after(sort: str, values: list[Any], *, backwards: bool = False) -> Q:
    """Rows that come after the given key values in the sort's order (before, backwards)."""
    keys = [(name, descending != backwards) for name, descending in _SORT_KEYS[sort]]
    condition = Q(pk__in=[])
    for i, (name, descending) in enumerate(keys):
        equal = Q(**{f"{n}": v for (n, _), v in zip(keys[:i], values[:i], strict=True)})
        beyond = Q(**{f"{name}__{'lt' if descending else 'gt'}": values[i]})
        condition |= equal & beyond
    # The same rows, plus a plain bound on the leading key that an index range can use
    # (the OR alone is applied as a filter after the index, so deep pages scanned on).
    first, descending = keys[0]
    return Q(Q(**{f"{first}__{'lte' if descending else 'gte'}": values[0]}), condition)


def _search(term: str) -> Q:
    """Message bodies, contact names and handles. PostgreSQL matches words with its full-text
    search (an index on the message bodies); SQLite falls back to substring matching."""
    handle = term.lstrip("@")
    people = Q(contact__name__icontains=term)
    if handle:
        by_handle = SocialIdentity.objects.filter(
            contact_id=OuterRef("contact_id"), handle__icontains=handle
        )
        people = Q(people, Exists(by_handle), _connector=Q.OR)
    messages = Message.objects.filter(conversation_id=OuterRef("pk"))
    if connection.vendor == "postgresql":
        messages = messages.annotate(document=MESSAGE_SEARCH_VECTOR).filter(
            document=SearchQuery(term, config="simple", search_type="websearch")
        )
    else:
        # Every word somewhere in the message, as full-text search would match them.
        for word in term.split()[:8]:
            messages = messages.filter(body__icontains=word)
    return Q(people, Exists(messages), _connector=Q.OR)


def inbox_queryset(*, user: AnyUser, filters: InboxFilters) -> QuerySet[Conversation]:
    """The conversations of the inbox with every filter applied, in no particular order."""
    conversations = conversations_visible_to(user=user).filter(
        _view_filter(filters.view, user, filters.status)
    )
    exact = {
        "channel_id": filters.channel,
        "channel__platform": filters.platform,
        "team_id": filters.team,
        "priority": filters.priority,
    }
    conversations = conversations.filter(**{k: v for k, v in exact.items() if v})
    if filters.assignee == "none":
        conversations = conversations.filter(assignee__isnull=True)
    elif filters.assignee:
        conversations = conversations.filter(assignee_id=int(filters.assignee))
    if filters.sentiment:
        conversations = conversations.filter(_SENTIMENT[filters.sentiment])
    if filters.tag:
        conversations = conversations.filter(
            Exists(
                Conversation.tags.through.objects.filter(
                    conversation_id=OuterRef("pk"), tag__name=filters.tag
                )
            )
        )
    if filters.sla:
        conversations = conversations.filter(_sla_filter(filters.sla, timezone.now()))
    zone = timezone.get_current_timezone()
    if filters.since:
        start = datetime.combine(filters.since, datetime.min.time(), tzinfo=zone)
        conversations = conversations.filter(last_message_at__gte=start)
    if filters.until:
        end = datetime.combine(filters.until + timedelta(days=1), datetime.min.time(), tzinfo=zone)
        conversations = conversations.filter(last_message_at__lt=end)
    if filters.search:
        conversations = conversations.filter(_search(filters.search))
    return conversations


def _sla_filter(state: str, now: datetime) -> Q:
    """Conversations in an SLA state now; the partial index on the due time serves it."""
    if state == SlaState.BREACHED:
        return Q(sla_due_at__lte=now)
    if state == SlaState.AT_RISK:
        return Q(sla_due_at__gt=now, sla_warn_at__lte=now)
    return Q(sla_due_at__gt=now, sla_warn_at__gt=now)


def inbox_counts(*, user: AnyUser) -> dict[str, int]:
    """The live count of every inbox view, in one query."""
    # Every view counts active conversations only: the closed history is never scanned.
    return (
        conversations_visible_to(user=user)
        .filter(status__in=ACTIVE_STATUSES)
        .aggregate(**{view: Count("pk", filter=_view_filter(view, user)) for view in INBOX_VIEWS})
    )


# Counts stay stored this long, to be shown (marked for recounting) when the user comes back.
_COUNTS_KEPT_SECONDS = 3600


def inbox_view_counts(*, user: AnyUser, recount: bool = True) -> dict[str, int] | None:
    """``inbox_counts``, counted at most every ``SCRM_INBOX_COUNTS_SECONDS`` per user, and
    again after the user's own changes (``InboxCountsMiddleware``). At 10^6 conversations,
    50,000 of them active, counting takes longer than the rest of the inbox page; so the page
    shows the counts last counted, whatever their age (``recount=False``: None if there are
    none), and its poll, which also runs as soon as the page has loaded, counts them again
    when they are due. ``SCRM_INBOX_COUNTS_SECONDS = 0`` counts on every request."""
    seconds = settings.SCRM_INBOX_COUNTS_SECONDS
    if seconds <= 0 or not user.is_authenticated:
        return inbox_counts(user=user)
    key = _counts_key(user_id(user))
    # Counted for what the user may see: not shown once they lose or gain a channel or team.
    scope = access_of(user).scope
    found = cache.get(key)
    if isinstance(found, tuple) and len(found) == 3 and found[0] == scope:
        _, counts, counted_at = found
        if not recount or time.time() - counted_at < seconds:
            return dict(counts)
    if not recount:
        return None
    counts = inbox_counts(user=user)
    cache.set(key, (scope, counts, time.time()), _COUNTS_KEPT_SECONDS)
    return counts


def inbox_counts_forget(*, user_id: int) -> None:
    """The user's counts are due again: the inbox's views (still shown until counted again)
    and unread mentions (dropped)."""
    key = _counts_key(user_id)
    found = cache.get(key)
    if isinstance(found, tuple) and len(found) == 3:
        cache.set(key, (found[0], found[1], 0.0), _COUNTS_KEPT_SECONDS)
    cache.delete_many(nav_counts.forget_all(user_id))


def _counts_key(pk: int) -> str:
    return f"inbox-counts:{pk}"


def inbox_sorted(conversations: QuerySet[Conversation], *, sort: str) -> QuerySet[Conversation]:
    """The conversations in one of the inbox's sorts (``SORTS``), with the keys its cursors
    name."""
    if sort == "waiting":
        conversations = conversations.annotate(
            wait_key=Coalesce("waiting_since", Value(_NOT_WAITING))
        )
    elif sort == "sla":
        conversations = conversations.annotate(sla_key=Coalesce("sla_due_at", Value(_NOT_WAITING)))
    return conversations.order_by(
        *(f"{'-' if descending else ''}{name}" for name, descending in _SORT_KEYS[sort])
    )


def inbox_cursor(*, sort: str, row: Conversation) -> str:
    """Where a page ended, for ``inbox_beyond``: a row of ``inbox_sorted`` in that sort."""
    return _encode_cursor(sort, row)


def inbox_beyond(
    conversations: QuerySet[Conversation], *, sort: str, cursor: str, backwards: bool = False
) -> QuerySet[Conversation] | None:
    """The sorted conversations after the cursor's row (before it, backwards), still in the
    sort's order; None for a garbled cursor or one of another sort."""
    position = _decode_cursor(sort, cursor)
    if position is None:
        return None
    return conversations.filter(_after(sort, position, backwards=backwards))


# The columns an inbox row shows, read with the conversation in one query.
_ROW_COLUMNS = (
    "pk",
    "contact_id",
    "status",
    "priority",
    "last_message_preview",
    "last_message_direction",
    "message_count",
    "last_message_at",
    "waiting_since",
    "sentiment",
    "sla_due_at",
    "sla_warn_at",
    "sla_paused_at",
    "contact__name",
    "contact__is_vip",
    "channel__name",
    "channel__platform",
    "team__name",
    "assignee__username",
    "assignee__first_name",
    "assignee__last_name",
)
_STATUS_LABELS = dict(Status.choices)
_PRIORITY_LABELS = dict(Priority.choices)


def _person_name(username: str | None, first_name: str | None, last_name: str | None) -> str:
    """A user as ``get_full_name()|default:username`` shows them, from plain columns (all
    None when a row has no such user)."""
    return f"{first_name or ''} {last_name or ''}".strip() or username or ""


def inbox_page(
    *,
    user: AnyUser,
    filters: InboxFilters,
    after: str = "",
    size: int = 50,
) -> InboxPage:
    """One page of the inbox in the chosen order, by keyset: deep pages cost as much as the
    first. Three queries whatever the page size: the conversations with what they show of
    their contact, channel, team and assignee; their tags; their contacts' first handles."""
    conversations = inbox_sorted(inbox_queryset(user=user, filters=filters), sort=filters.sort)
    if after:
        # A cursor of another sort (or a garbled one) starts from the top.
        beyond = inbox_beyond(conversations, sort=filters.sort, cursor=after)
        conversations = conversations if beyond is None else beyond
    keys = [name for name, _ in _SORT_KEYS[filters.sort] if name not in _ROW_COLUMNS]
    found = list(conversations.values(*_ROW_COLUMNS, *keys)[: size + 1])
    next_cursor = _encode_cursor(filters.sort, found[size - 1]) if len(found) > size else None
    found = found[:size]
    return InboxPage(rows=_inbox_rows(found), next_cursor=next_cursor)


def _inbox_rows(found: list[dict[str, Any]]) -> list[InboxRow]:
    tags: dict[int, list[tuple[str, str]]] = {}
    handles: dict[int, str] = {}
    if found:
        tagged = (
            Conversation.tags.through.objects.filter(conversation_id__in=[r["pk"] for r in found])
            .order_by("tag__name")
            .values_list("conversation_id", "tag__name", "tag__color")
        )
        for conversation_id, name, color in tagged:
            tags.setdefault(conversation_id, []).append((name, color))
        # The handle shown is that of the contact's first identity, as on the contact page.
        identities = (
            SocialIdentity.objects.filter(contact_id__in={r["contact_id"] for r in found})
            .order_by("contact_id", "platform", "id")
            .values_list("contact_id", "handle")
        )
        for contact_id, handle in identities:
            handles.setdefault(contact_id, handle)
    now = timezone.now()
    rows: list[InboxRow] = []
    for r in found:
        state = sla_state(r["sla_due_at"], r["sla_warn_at"], r["sla_paused_at"], now)
        rows.append(
            {
                "pk": r["pk"],
                "contact": r["contact__name"] or f"Contact #{r['contact_id']}",
                "handle": handles.get(r["contact_id"], ""),
                "is_vip": r["contact__is_vip"],
                "status": r["status"],
                "status_label": _STATUS_LABELS.get(r["status"], r["status"]),
                "priority": r["priority"],
                "priority_label": _PRIORITY_LABELS.get(r["priority"], str(r["priority"])),
                "tags": tags.get(r["pk"], []),
                "preview": r["last_message_preview"],
                "outbound": r["last_message_direction"] == "out",
                "platform": r["channel__platform"],
                "channel": r["channel__name"],
                "team": r["team__name"] or "",
                "message_count": r["message_count"],
                "last_message_at": r["last_message_at"],
                "waiting_since": r["waiting_since"],
                "sentiment": sentiment_label(r["sentiment"]),
                "assignee": _person_name(
                    r["assignee__username"], r["assignee__first_name"], r["assignee__last_name"]
                ),
                "sla_state": state,
                "sla_due_at": r["sla_due_at"],
            }
        )
    return rows


def inbox_new_since(*, user: AnyUser, filters: InboxFilters, since: datetime) -> int:
    """How many conversations in this list had activity after the page was drawn."""
    return inbox_queryset(user=user, filters=filters).filter(last_message_at__gt=since).count()


# --- One conversation -------------------------------------------------------------------


def conversation_for_user(*, user: AnyUser, pk: int) -> Conversation | None:
    return (
        conversations_visible_to(user=user)
        .select_related("contact", "channel", "assignee", "team", "sla_policy")
        .filter(pk=pk)
        .first()
    )


class TagShown(TypedDict):
    name: str
    color: str


class IdentityShown(TypedDict):
    platform: str
    handle: str
    platform_user_id: str
    verified: bool
    followers_count: int | None


@dataclass
class Workspace:
    """A conversation as its workspace shows it: the conversation with its contact and
    channel, and of the rest only what the page shows."""

    conversation: Conversation
    team_name: str
    assignee_name: str
    sla_policy_name: str
    tags: list[TagShown]
    identities: list[IdentityShown]
    # Most conversations have neither: the page then does not look for them.
    has_escalation: bool  # escalated at some time
    has_merge_suggestions: bool  # open, for the conversation's contact
    agents: list["AgentShown"]  # who it may be assigned to (``assignable_agents``)
    canned_responses: list["CannedShown"]  # the user's to insert (``canned_responses_for``)
    # Paths (with levels) and departments it may be escalated to: {"pk", "name", "kind"}.
    escalation_targets: list[dict[str, Any]]


class AgentShown(TypedDict):
    pk: int
    name: str


class CannedShown(TypedDict):
    pk: int
    title: str
    mine: bool  # personal, not shared


def conversation_workspace(*, user: AnyUser, pk: int) -> Workspace | None:
    """The conversation, if the user may see it, with what its workspace shows around it: in
    two queries. The small tables (team, assignee, SLA policy, tags, the agents to assign to
    and the canned responses to insert) are read by a plain second query rather than joined
    to the first: joined, they made PostgreSQL spend 2 ms planning a query that takes 0.3 ms
    to run, and each as a queryset of its own cost more to build than to run."""
    conversation = (
        conversations_visible_to(user=user)
        .select_related("contact", "channel")
        .filter(pk=pk)
        .first()
    )
    if conversation is None:
        return None
    meta = {
        name: connection.ops.quote_name(model._meta.db_table)
        for name, model in (
            ("team", Team),
            ("policy", SlaPolicy),
            ("people", User),
            ("escalation", Escalation),
            ("suggestion", MergeSuggestion),
            ("tag", Tag),
            ("tagged", Conversation.tags.through),
            ("identity", SocialIdentity),
            ("member", TeamMembership),
            ("access", ChannelAccess),
            ("in_group", User.groups.through),
            ("group", Group),
            ("canned", CannedResponse),
            ("path", EscalationPath),
            ("level", EscalationLevel),
            ("department", Department),
        )
    }
    team_ids = sorted(access_of(user).team_ids)
    team_canned = f"c.team_id IN ({', '.join(['%s'] * len(team_ids))})" if team_ids else "1 = 0"
    # kind, then per kind: names (t1..t3), flags (f1, f2), a number; sorted by kind, then s.
    sql = f"""
        SELECT 'conversation' AS kind,
            (SELECT name FROM {meta["team"]} WHERE id = %s) AS t1,
            (SELECT name FROM {meta["policy"]} WHERE id = %s) AS t2,
            (SELECT username FROM {meta["people"]} WHERE id = %s) AS t3,
            (SELECT first_name FROM {meta["people"]} WHERE id = %s) AS t4,
            (SELECT last_name FROM {meta["people"]} WHERE id = %s) AS t5,
            EXISTS (SELECT 1 FROM {meta["escalation"]} WHERE conversation_id = %s) AS f1,
            EXISTS (SELECT 1 FROM {meta["suggestion"]}
                WHERE (contact_id = %s OR other_id = %s) AND status = %s) AS f2,
            CAST(NULL AS integer) AS n, '' AS s, 0 AS i
        UNION ALL
        SELECT 'tag', t.name, t.color, NULL, NULL, NULL, NULL, NULL, NULL, t.name, t.id
            FROM {meta["tag"]} t JOIN {meta["tagged"]} ct ON ct.tag_id = t.id
            WHERE ct.conversation_id = %s
        UNION ALL
        SELECT 'identity', platform, handle, platform_user_id, NULL, NULL, verified, NULL,
            followers_count, platform, id
            FROM {meta["identity"]} WHERE contact_id = %s
        UNION ALL
        SELECT 'agent', u.username, u.first_name, u.last_name, NULL, NULL, NULL, NULL, NULL,
            u.first_name, u.id
            FROM {meta["people"]} u
            WHERE u.is_active AND (
                u.is_superuser
                OR EXISTS (SELECT 1 FROM {meta["member"]} m
                    JOIN {meta["access"]} a ON a.team_id = m.team_id
                    WHERE m.user_id = u.id AND a.channel_id = %s AND a.can_reply)
                OR EXISTS (SELECT 1 FROM {meta["in_group"]} ug
                    JOIN {meta["group"]} g ON g.id = ug.group_id
                    WHERE ug.user_id = u.id AND g.name = %s))
        UNION ALL
        SELECT 'canned', c.title, NULL, NULL, NULL, NULL, c.owner_id IS NOT NULL, NULL, NULL,
            c.title, c.id
            FROM {meta["canned"]} c
            WHERE c.owner_id = %s OR (c.owner_id IS NULL AND (c.team_id IS NULL OR {team_canned}))
        UNION ALL
        SELECT 'target', 'path', NULL, NULL, NULL, NULL, NULL, NULL, NULL, p.name, p.id
            FROM {meta["path"]} p
            WHERE EXISTS (SELECT 1 FROM {meta["level"]} l WHERE l.path_id = p.id)
        UNION ALL
        SELECT 'target', 'department', NULL, NULL, NULL, NULL, NULL, NULL, NULL, d.name, d.id
            FROM {meta["department"]} d
        ORDER BY 1, 10, 11
    """
    params = [
        conversation.team_id,
        conversation.sla_policy_id,
        *[conversation.assignee_id] * 3,
        conversation.pk,
        conversation.contact_id,
        conversation.contact_id,
        MergeSuggestionStatus.OPEN.value,
        conversation.pk,
        conversation.contact_id,
        conversation.channel_id,
        Role.ADMIN.value,
        user_id(user),
        *team_ids,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    head = next(row for row in rows if row[0] == "conversation")
    return Workspace(
        conversation=conversation,
        team_name=head[1] or "",
        sla_policy_name=head[2] or "",
        assignee_name=_person_name(head[3], head[4], head[5]),
        has_escalation=bool(head[6]),
        has_merge_suggestions=bool(head[7]),
        tags=[{"name": r[1], "color": r[2]} for r in rows if r[0] == "tag"],
        identities=[
            {
                "platform": r[1],
                "handle": r[2],
                "platform_user_id": r[3],
                "verified": bool(r[6]),
                "followers_count": r[8],
            }
            for r in rows
            if r[0] == "identity"
        ],
        # As ``assignable_agents`` orders them: by first name, then user name.
        agents=[
            {"pk": r[10], "name": _person_name(r[1], r[2], r[3])}
            for r in sorted((r for r in rows if r[0] == "agent"), key=lambda r: (r[2], r[1]))
        ],
        canned_responses=[
            {"pk": r[10], "title": r[1], "mine": bool(r[6])} for r in rows if r[0] == "canned"
        ],
        escalation_targets=[
            {"pk": r[10], "name": r[9], "kind": r[1]} for r in rows if r[0] == "target"
        ],
    )


class ThreadMessage(TypedDict):
    """One message or note of a conversation's thread, ready to show (plain columns)."""

    pk: int
    side: str  # in, out or note
    author: str
    handle: str
    kind_label: str
    created_at: datetime
    sentiment: str
    delivery_status: str
    delivery_label: str
    body: str
    error: str
    approval_reasons: list[str]
    approval_note: str


@dataclass
class ThreadPage:
    """The newest messages of a thread (or those before ``before``), oldest first; ``earlier``
    is the message to page back from when older ones exist."""

    messages: list[ThreadMessage]
    earlier: int | None


_THREAD_COLUMNS = (
    "pk",
    "direction",
    "kind",
    "body",
    "created_at",
    "sentiment",
    "delivery_status",
    "error",
    "author_identity__display_name",
    "author_identity__handle",
    "author_user__username",
    "author_user__first_name",
    "author_user__last_name",
    "approval__reasons",
    "approval__note",
)
_KIND_LABELS = dict(MessageKind.choices)
_DELIVERY_LABELS = dict(DeliveryStatus.choices)


def conversation_thread(
    *, conversation: Conversation, before: int | None = None, size: int = 100
) -> ThreadPage:
    """The latest ``size`` messages and notes (those before message ``before``), with their
    authors and, for held or rejected replies, their approval's reasons and note: one query,
    no model objects, whatever the thread's length."""
    messages = conversation.messages.all()
    if before is not None:
        anchor = Subquery(conversation.messages.filter(pk=before).values("created_at"))
        messages = messages.filter(Q(created_at__lt=anchor) | Q(created_at=anchor, pk__lt=before))
    found = list(messages.order_by("-created_at", "-id").values(*_THREAD_COLUMNS)[: size + 1])
    earlier = found[size - 1]["pk"] if len(found) > size else None
    contact = str(conversation.contact)
    thread: list[ThreadMessage] = []
    for m in reversed(found[:size]):
        kind = m["kind"]
        note = kind == MessageKind.NOTE
        user_name = _person_name(
            m["author_user__username"], m["author_user__first_name"], m["author_user__last_name"]
        )
        if note:
            side, author = "note", user_name
        elif m["direction"] == Direction.OUT:
            side, author = "out", user_name or "Team"
        else:
            side, author = "in", m["author_identity__display_name"] or contact
        delivery = m["delivery_status"]
        thread.append(
            {
                "pk": m["pk"],
                "side": side,
                "author": author,
                "handle": (m["author_identity__handle"] or "") if side == "in" else "",
                "kind_label": _KIND_LABELS.get(kind, kind),
                "created_at": m["created_at"],
                "sentiment": sentiment_label(m["sentiment"]) if side == "in" else "",
                "delivery_status": delivery if side == "out" else "",
                "delivery_label": _DELIVERY_LABELS.get(delivery, delivery),
                "body": m["body"],
                "error": m["error"],
                "approval_reasons": m["approval__reasons"] or [],
                "approval_note": m["approval__note"] or "",
            }
        )
    return ThreadPage(messages=thread, earlier=earlier)


def contact_history(*, user: AnyUser, contact_id: int, limit: int = 20) -> list[Conversation]:
    """The contact's conversations across every channel the user may see, newest first."""
    return list(
        conversations_visible_to(user=user)
        .filter(contact_id=contact_id)
        .select_related("channel")
        # What a history line shows; not the channel's credentials, decrypted on load.
        .only(
            "subject",
            "status",
            "created_at",
            "last_message_at",
            "contact_id",
            "channel__name",
            "channel__platform",
        )
        .order_by("-last_message_at", "-pk")[:limit]
    )


class TimelineEntry(TypedDict):
    """One event of a conversation's timeline, ready to show (plain columns)."""

    kind_label: str
    actor: str
    created_at: datetime
    tag: str
    status: str  # the status it moved to, as people read it
    name: str  # of the rule applied
    target: str  # the SLA target it is about
    escalated_to: str | None
    auto: bool
    detail: str  # why a rule's action did not happen: refused, held for approval


# What a rule's entry says of an action that did not go through, and the key that holds why.
_NOT_DONE = (
    ("acknowledgement_refused", "acknowledgement refused"),
    ("acknowledgement_held", "acknowledgement held for approval"),
    ("escalation_refused", "escalation refused"),
)


_EVENT_LABELS = dict(EventKind.choices)


@dataclass
class TimelinePage:
    """The latest events of a conversation (or those before ``before``), newest first;
    ``older`` is the event to page on from when older ones exist."""

    entries: list[TimelineEntry]
    older: int | None


def conversation_timeline(
    *, conversation: Conversation, before: int | None = None, size: int = 50
) -> TimelinePage:
    """Who did what when, newest first: the latest ``size`` events (those before event
    ``before``), in one query whatever the timeline's length."""
    events = conversation.events.all()
    if before is not None:
        anchor = Subquery(conversation.events.filter(pk=before).values("created_at"))
        events = events.filter(Q(created_at__lt=anchor) | Q(created_at=anchor, pk__lt=before))
    found = list(
        events.order_by("-created_at", "-id").values_list(
            "pk",
            "kind",
            "created_at",
            "data",
            "actor__username",
            "actor__first_name",
            "actor__last_name",
        )[: size + 1]
    )
    older = found[size - 1][0] if len(found) > size else None
    timeline: list[TimelineEntry] = []
    for _, kind, created_at, data, username, first_name, last_name in found[:size]:
        data = data if isinstance(data, dict) else {}
        if kind == EventKind.CREATED and data.get("rules"):
            # The rules applied as the conversation was created share its event: shown as
            # an entry of their own, above the creation.
            timeline.append(_timeline_entry(EventKind.RULE_APPLIED, created_at, data, ""))
            data = {}
        timeline.append(
            _timeline_entry(kind, created_at, data, _person_name(username, first_name, last_name))
        )
    return TimelinePage(entries=timeline, older=older)


def _timeline_entry(
    kind: str, created_at: datetime, data: dict[str, Any], actor: str
) -> TimelineEntry:
    target = str(data.get("target") or "")
    escalated = kind == EventKind.ESCALATED
    status = str(data.get("status") or "")
    failed = kind == EventKind.RULE_APPLIED and bool(data.get("rules_failed"))
    refused = kind == EventKind.ASSIGNED and bool(data.get("refused"))
    if failed:
        label = "Routing rules failed"
    elif refused:
        label = "Assignment refused"
    else:
        label = _EVENT_LABELS.get(kind, kind)
    return {
        "kind_label": label,
        "actor": actor,
        "created_at": created_at,
        "tag": str(data.get("tag") or ""),
        "status": _STATUS_LABELS.get(status, status),
        "name": str(data.get("name") or _rule_names(data)),
        # first_response -> first: the SLA targets, briefly.
        "target": "" if escalated else target.replace("_response", "").replace("_", ""),
        "escalated_to": target if escalated else None,
        "auto": bool(data.get("auto")),
        "detail": (
            _not_done(data)
            if kind == EventKind.RULE_APPLIED
            else f"not assigned: {data['refused']}"
            if refused
            else _waited(data, created_at)
            if kind == EventKind.ASSIGNED and data.get("queued_at")
            else ""
        ),
    }


def _rule_names(data: dict[str, Any]) -> str:
    """The rules of a RULE_APPLIED entry, each once, in the order they applied."""
    rules = data.get("rules")
    if not isinstance(rules, list):
        return ""
    names = (str(r.get("name") or "") for r in rules if isinstance(r, dict))
    return ", ".join(dict.fromkeys(n for n in names if n))


def _waited(data: dict[str, Any], assigned_at: datetime) -> str:
    """An automatic assignment from the team's queue, and how long the conversation waited."""
    from conversations.templatetags.scrm import duration

    since = parse_datetime(str(data["queued_at"]))
    if since is None:
        return "from the team's queue"
    return f"from the team's queue, after {duration(assigned_at - since)}"


# The event whose rules failed, for "Routing rules failed" entries.
_FAILED_ON = {"conversation_reopened": "on the reopening", "sla_breached": "on the SLA breach"}


def _not_done(data: dict[str, Any]) -> str:
    if failed := data.get("rules_failed"):
        return f"{_FAILED_ON.get(str(data.get('event')), 'on the SLA breach')}: {failed}"
    for key, label in _NOT_DONE:
        reasons = data.get(key)
        if reasons:
            why = "; ".join(map(str, reasons)) if isinstance(reasons, list) else str(reasons)
            return f"{label}: {why}"
    return ""


TAG_SUGGESTIONS = 200
_TAG_SUGGESTIONS_KEY, _TAG_SUGGESTIONS_SECONDS = "tag-suggestions", 60


def tag_suggestions() -> list[str]:
    """The tag names the workspace's tag box suggests, by name: kept a minute, since a list
    of suggestions may well miss a tag that new."""
    names: list[str] | None = cache.get(_TAG_SUGGESTIONS_KEY)
    if names is None:
        names = list(Tag.objects.order_by("name").values_list("name", flat=True)[:TAG_SUGGESTIONS])
        cache.set(_TAG_SUGGESTIONS_KEY, names, _TAG_SUGGESTIONS_SECONDS)
    return names


def canned_responses_usable_by(*, user: AnyUser) -> QuerySet[CannedResponse]:
    """The user's own responses, their teams', and those shared with everyone."""
    if not user.is_authenticated:
        return CannedResponse.objects.none()
    return CannedResponse.objects.filter(
        Q(owner_id=user_id(user))
        | Q(owner__isnull=True, team__isnull=True)
        | Q(
            owner__isnull=True,
            team_id__in=access_of(user).team_ids,
        )
    )


def canned_responses_for(*, user: AnyUser) -> list[CannedResponse]:
    """The responses the user may use, by title."""
    return list(canned_responses_usable_by(user=user).order_by("title"))


def assignable_agents(*, conversation: Conversation) -> list[User]:
    """Active users whose teams may reply on the conversation's channel, and admins."""
    return list(
        User.objects.filter(is_active=True)
        .filter(
            Q(
                team_memberships__team__channel_access__channel_id=conversation.channel_id,
                team_memberships__team__channel_access__can_reply=True,
            )
            | Q(is_superuser=True)
            | Q(groups__name=Role.ADMIN)
        )
        .distinct()
        .order_by("first_name", "username")
    )


def notifications_for(*, user: AnyUser) -> QuerySet[Notification]:
    """The user's notifications about conversations they may still see."""
    if not user.is_authenticated:
        return Notification.objects.none()
    return Notification.objects.filter(
        recipient_id=user.pk, conversation__in=conversations_visible_to(user=user)
    )
