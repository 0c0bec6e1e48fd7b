"""Reads of conversations, always scoped to what the user may see."""

import base64
import binascii
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.contrib.auth.models import User
from django.db.models import Count, Prefetch, Q, QuerySet
from django.utils.dateparse import parse_datetime

from contacts.models import SocialIdentity
from conversations.models import (
    ACTIVE_STATUSES,
    CannedResponse,
    Conversation,
    ConversationEvent,
    Message,
    Status,
)
from governance.models import Role, TeamMembership
from governance.selectors import visible_channel_ids
from scrm.types import AnyUser, user_id


def conversations_visible_to(*, user: AnyUser) -> QuerySet[Conversation]:
    """The one scope for conversations: those on channels the user's teams may see."""
    if not user.is_authenticated:
        return Conversation.objects.none()
    ids = visible_channel_ids(user=user)
    conversations = Conversation.objects.all()
    return conversations if ids is None else conversations.filter(channel_id__in=ids)


def messages_visible_to(*, user: AnyUser) -> QuerySet[Message]:
    if not user.is_authenticated:
        return Message.objects.none()
    ids = visible_channel_ids(user=user)
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


def _view_filter(view: str, user: AnyUser) -> Q:
    work = Q(is_monitoring=False, status__in=ACTIVE_STATUSES)
    if view == "mine":
        return work & Q(assignee_id=user.pk)
    if view == "unassigned":
        return work & Q(assignee__isnull=True)
    if view == "team":
        return work & Q(
            team_id__in=TeamMembership.objects.filter(user_id=user_id(user)).values("team_id")
        )
    if view == "escalated":
        return Q(status=Status.ESCALATED)
    if view == "monitoring":
        return Q(is_monitoring=True, status__in=ACTIVE_STATUSES)
    return work


@dataclass
class InboxFilters:
    view: str = "all"
    status: str = ""
    channel: int | None = None
    search: str = ""

    @classmethod
    def from_query(cls, params: Any) -> "InboxFilters":
        view = params.get("view", "all")
        status = params.get("status", "")
        channel = params.get("channel", "")
        return cls(
            view=view if view in INBOX_VIEWS else "all",
            status=status if status in Status.values else "",
            channel=int(channel) if channel.isdigit() else None,
            search=params.get("q", "").strip()[:200],
        )


@dataclass
class InboxPage:
    conversations: list[Conversation]
    next_cursor: str | None
    counts: dict[str, int] = field(default_factory=dict)


def _encode_cursor(conversation: Conversation) -> str:
    raw = f"{conversation.last_message_at.isoformat()}|{conversation.pk}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, int] | None:
    try:
        at, pk = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        moment = parse_datetime(at)
        return (moment, int(pk)) if moment else None
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None


def inbox_counts(*, user: AnyUser) -> dict[str, int]:
    """The live count of every inbox view, in one query."""
    # Every view counts active conversations only: the closed history is never scanned.
    return (
        conversations_visible_to(user=user)
        .filter(status__in=ACTIVE_STATUSES)
        .aggregate(**{view: Count("pk", filter=_view_filter(view, user)) for view in INBOX_VIEWS})
    )


def inbox_page(
    *,
    user: AnyUser,
    filters: InboxFilters,
    after: str = "",
    size: int = 50,
) -> InboxPage:
    """One page of the inbox, newest activity first, by keyset: deep pages cost as much as the
    first. Related rows come in a fixed number of queries whatever the page size."""
    conversations = conversations_visible_to(user=user).filter(_view_filter(filters.view, user))
    if filters.status:
        conversations = conversations.filter(status=filters.status)
    if filters.channel:
        conversations = conversations.filter(channel_id=filters.channel)
    if filters.search:
        term = filters.search
        handle = term.lstrip("@")
        conversations = conversations.filter(
            Q(contact__name__icontains=term)
            | Q(subject__icontains=term)
            | Q(last_message_preview__icontains=term)
            | Q(contact__identities__handle__icontains=handle)
        ).distinct()
    position = _decode_cursor(after) if after else None
    if position:
        at, pk = position
        conversations = conversations.filter(
            Q(last_message_at__lt=at) | Q(last_message_at=at, pk__lt=pk)
        )
    rows = list(
        conversations.select_related("contact", "channel", "assignee", "team")
        .prefetch_related(
            "tags",
            Prefetch(
                "contact__identities",
                queryset=SocialIdentity.objects.order_by("platform", "id"),
            ),
        )
        .order_by("-last_message_at", "-pk")[: size + 1]
    )
    next_cursor = _encode_cursor(rows[size - 1]) if len(rows) > size else None
    return InboxPage(conversations=rows[:size], next_cursor=next_cursor)


# --- One conversation -------------------------------------------------------------------


def conversation_for_user(*, user: AnyUser, pk: int) -> Conversation | None:
    return (
        conversations_visible_to(user=user)
        .select_related("contact", "channel", "assignee", "team")
        .prefetch_related("tags", "contact__identities")
        .filter(pk=pk)
        .first()
    )


def conversation_thread(*, conversation: Conversation) -> list[Message]:
    """Messages and notes oldest first, with their authors."""
    return list(
        conversation.messages.select_related("author_identity", "author_user").order_by(
            "created_at", "id"
        )
    )


def contact_history(*, user: AnyUser, contact_id: int, limit: int = 20) -> list[Conversation]:
    """The contact's conversations across every channel the user may see, newest first."""
    return list(
        conversations_visible_to(user=user)
        .filter(contact_id=contact_id)
        .select_related("channel")
        .order_by("-last_message_at", "-pk")[:limit]
    )


def conversation_timeline(*, conversation: Conversation) -> list[ConversationEvent]:
    """Who did what when, newest first."""
    return list(conversation.events.select_related("actor").order_by("-created_at", "-id")[:200])


def canned_responses_for(*, user: AnyUser) -> list[CannedResponse]:
    """The user's own responses, their teams', and those shared with everyone."""
    return list(
        CannedResponse.objects.filter(
            Q(owner_id=user_id(user))
            | Q(owner__isnull=True, team__isnull=True)
            | Q(owner__isnull=True, team__memberships__user_id=user_id(user))
        )
        .distinct()
        .order_by("title")
    )


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
