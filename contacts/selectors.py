"""Reads of contacts, scoped to what the user may see."""

from dataclasses import dataclass

from django.db.models import Exists, OuterRef, Prefetch, Q, QuerySet

from contacts.models import Contact, MergeSuggestion, MergeSuggestionStatus, SocialIdentity
from conversations.models import Conversation
from governance.selectors import visible_channel_ids
from scrm.types import AnyUser


def contacts_visible_to(*, user: AnyUser) -> QuerySet[Contact]:
    """Contacts with at least one conversation on a channel the user may see."""
    if not user.is_authenticated:
        return Contact.objects.none()
    ids = visible_channel_ids(user=user)
    if ids is None:
        return Contact.objects.all()
    seen_on_visible_channel = Conversation.objects.filter(
        contact_id=OuterRef("pk"), channel_id__in=ids
    )
    return Contact.objects.filter(Exists(seen_on_visible_channel))


def contact_list(*, user: AnyUser, search: str = "") -> QuerySet[Contact]:
    contacts = contacts_visible_to(user=user)
    if search:
        handle = search.lstrip("@")
        matching_identity = SocialIdentity.objects.filter(
            Q(handle__icontains=handle) | Q(display_name__icontains=search),
            contact_id=OuterRef("pk"),
        )
        contacts = contacts.filter(
            Q(name__icontains=search)
            | Q(email__icontains=search)
            | Q(company__icontains=search)
            | Exists(matching_identity)
        )
    return contacts.prefetch_related(
        Prefetch("identities", queryset=SocialIdentity.objects.order_by("platform", "handle"))
    ).order_by("-last_seen_at", "-id")


@dataclass(frozen=True)
class MergeCandidate:
    suggestion: MergeSuggestion
    contact: Contact


def merge_candidates(*, user: AnyUser, contact_id: int) -> list[MergeCandidate]:
    """Open suggestions that this contact may be someone the user can also see."""
    suggestions = list(
        MergeSuggestion.objects.filter(
            Q(contact_id=contact_id) | Q(other_id=contact_id),
            status=MergeSuggestionStatus.OPEN,
        )
    )
    others = {s.other_id if s.contact_id == contact_id else s.contact_id: s for s in suggestions}
    visible = contacts_visible_to(user=user).filter(pk__in=others).prefetch_related("identities")
    return [MergeCandidate(suggestion=others[c.pk], contact=c) for c in visible]
