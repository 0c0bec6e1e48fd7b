"""Reads of contacts, scoped to what the user may see."""

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

from django.db.models import Exists, OuterRef, Prefetch, Q, QuerySet

from contacts.models import (
    SHARED_CONTACT_SOURCES,
    Contact,
    ContactImport,
    ContactMerge,
    MergeSuggestion,
    MergeSuggestionStatus,
    SocialIdentity,
)
from conversations.models import Conversation
from governance.roles import is_admin
from governance.selectors import seen_channel_ids, visible_channel_ids
from scrm.types import AnyUser


def contacts_visible_to(*, user: AnyUser) -> QuerySet[Contact]:
    """Contacts with at least one conversation on a channel the user may see, and contacts
    that came through no channel (added by hand or imported), which belong to no team."""
    if not user.is_authenticated:
        return Contact.objects.none()
    # A contact merged into another lives on in that one.
    contacts = Contact.objects.filter(merged_into__isnull=True)
    ids = seen_channel_ids(user=user)
    if ids is None:
        return contacts
    seen_on_visible_channel = Conversation.objects.filter(
        contact_id=OuterRef("pk"), channel_id__in=ids
    )
    return contacts.filter(Exists(seen_on_visible_channel) | Q(source__in=SHARED_CONTACT_SOURCES))


def _contacts_matching(contacts: QuerySet[Contact], search: str) -> QuerySet[Contact]:
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
    return contacts


def contact_list(*, user: AnyUser, search: str = "") -> QuerySet[Contact]:
    contacts = _contacts_matching(contacts_visible_to(user=user), search)
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
    if not suggestions:
        return []
    others = {s.other_id if s.contact_id == contact_id else s.contact_id: s for s in suggestions}
    visible = contacts_visible_to(user=user).filter(pk__in=others).prefetch_related("identities")
    return [MergeCandidate(suggestion=others[c.pk], contact=c) for c in visible]


def contact_for_user(*, user: AnyUser, pk: int) -> Contact | None:
    return (
        contacts_visible_to(user=user)
        .select_related("created_by")
        .prefetch_related("identities")
        .filter(pk=pk)
        .first()
    )


def contact_crm_id_taken(*, external_crm_id: str, exclude_pk: int | None = None) -> bool:
    """Whether another contact holds this CRM id: imports match contacts by it."""
    if not external_crm_id:
        return False
    holders = Contact.objects.filter(external_crm_id=external_crm_id)
    if exclude_pk is not None:
        holders = holders.exclude(pk=exclude_pk)
    return holders.exists()


# --- CSV ---------------------------------------------------------------------------------
# The columns of an export, which an import reads back; the last four are export-only.
CSV_COLUMNS = (
    "id",
    "name",
    "email",
    "phone",
    "company",
    "vip",
    "external_crm_id",
    "external_crm_url",
    "first_seen_at",
    "last_seen_at",
    "identities",
    "attributes",
)
EXPORT_CHUNK_SIZE = 2000

# Spreadsheets run a cell that starts with one of these as a formula. Names and handles come
# from strangers on social media, so such cells are exported behind a quote mark, which an
# import removes again. Plain numbers such as "+1 555 0100" are harmless and left alone.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?[0-9 ().-]*")


def csv_cell_escape(value: str) -> str:
    if value.startswith(FORMULA_TRIGGERS) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def _identity_label(identity: SocialIdentity) -> str:
    who = f"@{identity.handle}" if identity.handle else identity.display_name
    return f"{identity.platform}:{who or identity.platform_user_id}"


def _export_row(contact: Contact) -> list[str]:
    return [
        str(contact.pk),
        contact.name,
        contact.email,
        contact.phone,
        contact.company,
        "yes" if contact.is_vip else "no",
        contact.external_crm_id,
        contact.external_crm_url,
        contact.first_seen_at.isoformat(),
        contact.last_seen_at.isoformat(),
        "; ".join(_identity_label(i) for i in contact.identities.all()),
        json.dumps(contact.attributes, ensure_ascii=False, sort_keys=True)
        if contact.attributes
        else "",
    ]


def contacts_export_rows(*, user: AnyUser, search: str = "") -> Iterator[list[str]]:
    """The header, then one row per contact the user may see, read a chunk at a time: each
    chunk costs one query for its contacts and one for their identities, so memory and
    queries stay flat however many contacts there are."""
    yield list(CSV_COLUMNS)
    contacts = (
        _contacts_matching(contacts_visible_to(user=user), search)
        .order_by("pk")
        .prefetch_related(
            Prefetch(
                "identities",
                queryset=SocialIdentity.objects.order_by("platform", "handle", "pk").only(
                    "contact_id", "platform", "platform_user_id", "handle", "display_name"
                ),
            )
        )
    )
    for contact in contacts.iterator(chunk_size=EXPORT_CHUNK_SIZE):
        yield [csv_cell_escape(value) for value in _export_row(contact)]


def contact_imports_for(*, user: AnyUser) -> QuerySet[ContactImport]:
    """Imports the user may follow: their own; admins see everyone's."""
    imports = ContactImport.objects.defer("content").select_related("created_by")
    if not user.is_authenticated:
        return imports.none()
    if not is_admin(user):
        imports = imports.filter(created_by_id=user.pk)
    return imports.order_by("-created_at", "-pk")


def contact_import_for(*, user: AnyUser, pk: int) -> ContactImport | None:
    return contact_imports_for(user=user).filter(pk=pk).first()


def merges_into(*, contact_id: int) -> list[ContactMerge]:
    """The merges that brought other contacts into this one and were not undone."""
    return list(
        ContactMerge.objects.filter(kept_id=contact_id, undone_at__isnull=True)
        .select_related("merged", "merged_by")
        .order_by("-created_at")
    )


def merged_contact_destination(*, user: AnyUser, contact_id: int) -> Contact | None:
    """Where a merged contact's page should lead: the contact it joined, if the user may see
    it."""
    target = Contact.objects.filter(pk=contact_id).values_list("merged_into", flat=True).first()
    if not target:
        return None
    # Only if the merged contact was one the user could see: its conversations moved with the
    # merge, so the merge record says where they were.
    from conversations.selectors import conversations_visible_to  # conversations imports us

    merge = ContactMerge.objects.filter(merged_id=contact_id, undone_at__isnull=True).first()
    moved = merge.conversation_ids if merge else []
    was_visible = (
        visible_channel_ids(user=user) is None
        or Contact.objects.filter(pk=contact_id, source__in=SHARED_CONTACT_SOURCES).exists()
        or conversations_visible_to(user=user).filter(pk__in=moved).exists()
    )
    return contacts_visible_to(user=user).filter(pk=target).first() if was_visible else None


def identities_visible_to(*, user: AnyUser) -> QuerySet[SocialIdentity]:
    """Identities of the contacts the user may see."""
    return SocialIdentity.objects.filter(contact__in=contacts_visible_to(user=user).values("pk"))


def contact_merges_visible_to(*, user: AnyUser) -> QuerySet[ContactMerge]:
    """Merges into contacts the user may see: those whose page lists them and can undo them."""
    return ContactMerge.objects.filter(kept__in=contacts_visible_to(user=user).values("pk"))


def merge_suggestions_visible_to(*, user: AnyUser) -> QuerySet[MergeSuggestion]:
    """Suggestions about two contacts the user may both see."""
    visible = contacts_visible_to(user=user).values("pk")
    return MergeSuggestion.objects.filter(contact__in=visible, other__in=visible)
