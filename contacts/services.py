"""Writes to contacts and their social identities."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Q
from django.db.models.functions import Lower

from channels_ingest.types import InboundAuthor
from contacts.models import Contact, MergeSuggestion, SocialIdentity
from scrm.bulk import rows_update

_PROFILE_FIELDS = ("handle", "display_name", "profile_url", "followers_count", "verified")


@dataclass(frozen=True, slots=True)
class SeenAuthor:
    """An author as seen in one batch: their latest profile and the span of their posts."""

    author: InboundAuthor
    first_seen_at: datetime
    last_seen_at: datetime


def identities_resolve(
    *, platform: str, authors: Sequence[SeenAuthor]
) -> dict[str, SocialIdentity]:
    """Find or create the identity (and contact) of every author, in a fixed number of queries.

    A new identity joins an existing contact only on a reliable match (same email or phone);
    otherwise it gets a contact of its own. Profile fields are refreshed when they changed, and
    each contact's last-seen time moves forward. Returns identities by platform user id.
    """
    if not authors:
        return {}
    by_user_id = {seen.author.platform_user_id: seen for seen in authors}
    identities = {
        identity.platform_user_id: identity
        for identity in SocialIdentity.objects.filter(
            platform=platform, platform_user_id__in=by_user_id
        )
    }

    _refresh_profiles(identities, by_user_id)

    # Sorted, so two batches writing the same rows take their locks in the same order.
    new = [by_user_id[u] for u in sorted(by_user_id) if u not in identities]
    created_contacts: set[int] = set()
    if new:
        created, created_contacts = _create_identities(platform, new)
        identities.update(created)
        merge_suggestions_find(identities=list(created.values()))

    # Contacts made in this batch were inserted with their last-seen time already.
    _touch_contacts(
        {u: i for u, i in identities.items() if i.contact_id not in created_contacts}, by_user_id
    )
    return identities


def _refresh_profiles(
    identities: dict[str, SocialIdentity], by_user_id: dict[str, SeenAuthor]
) -> None:
    changed = []
    for user_id, identity in identities.items():
        author = by_user_id[user_id].author
        dirty = False
        for name in _PROFILE_FIELDS:
            value = getattr(author, name)
            # An empty value in one payload does not erase what another payload told us.
            if value not in ("", None) and getattr(identity, name) != value:
                setattr(identity, name, value)
                dirty = True
        if dirty:
            changed.append(identity)
    if changed:
        SocialIdentity.objects.bulk_update(changed, [*_PROFILE_FIELDS, "updated_at"])


def _create_identities(
    platform: str, new: list[SeenAuthor]
) -> tuple[dict[str, SocialIdentity], set[int]]:
    """Identities for new authors, and the ids of the contacts created for them."""
    emails = {seen.author.email.lower() for seen in new if seen.author.email}
    phones = {seen.author.phone for seen in new if seen.author.phone}
    known: dict[str, int] = {}
    if emails or phones:
        for contact_id, email, phone in (
            Contact.objects.annotate(email_lower=Lower("email"))
            .filter(Q(email_lower__in=emails) | Q(phone__in=phones))
            .values_list("id", "email", "phone")
        ):
            if email:
                known[email.lower()] = contact_id
            if phone:
                known[phone] = contact_id

    contacts_to_create: list[Contact] = []
    owner: dict[str, Contact | int] = {}
    for seen in new:
        author = seen.author
        match = known.get(author.email.lower()) or known.get(author.phone)
        if match:
            owner[author.platform_user_id] = match
            continue
        contact = Contact(
            name=author.display_name or author.handle,
            email=author.email,
            phone=author.phone,
            first_seen_at=seen.first_seen_at,
            last_seen_at=seen.last_seen_at,
        )
        contacts_to_create.append(contact)
        owner[author.platform_user_id] = contact
    Contact.objects.bulk_create(contacts_to_create)

    SocialIdentity.objects.bulk_create(
        [
            SocialIdentity(
                contact_id=_pk(owner[seen.author.platform_user_id]),
                platform=platform,
                platform_user_id=seen.author.platform_user_id,
                **_profile(seen.author),
            )
            for seen in new
        ],
        # Another batch of another channel of this platform may have created one meanwhile.
        ignore_conflicts=True,
    )
    created = {
        identity.platform_user_id: identity
        for identity in SocialIdentity.objects.filter(
            platform=platform, platform_user_id__in=[seen.author.platform_user_id for seen in new]
        )
    }
    # Contacts made for identities that lost such a race hold nothing: remove them.
    orphans = [
        contact.pk
        for user_id, contact in owner.items()
        if isinstance(contact, Contact) and created[user_id].contact_id != contact.pk
    ]
    if orphans:
        Contact.objects.filter(pk__in=orphans).delete()
    return created, {c.pk for c in contacts_to_create if c.pk not in orphans}


def _pk(contact: Contact | int) -> int:
    return contact if isinstance(contact, int) else contact.pk


def _profile(author: InboundAuthor) -> dict[str, object]:
    return {
        name: getattr(author, name) for name in _PROFILE_FIELDS if getattr(author, name) is not None
    }


def _touch_contacts(
    identities: dict[str, SocialIdentity], by_user_id: dict[str, SeenAuthor]
) -> None:
    latest: dict[int, datetime] = {}
    for user_id, identity in identities.items():
        seen_at = by_user_id[user_id].last_seen_at
        if identity.contact_id not in latest or latest[identity.contact_id] < seen_at:
            latest[identity.contact_id] = seen_at
    rows_update(
        Contact,
        [{"pk": pk, "last_seen_at": at} for pk, at in sorted(latest.items())],
        ["last_seen_at"],
        combine={"last_seen_at": "greatest"},
    )


# Handles shorter than this are too common to say anything about who is behind them.
_MIN_HANDLE_FOR_MATCH = 4


def merge_suggestions_find(*, identities: list[SocialIdentity]) -> int:
    """Suggest merging contacts whose identities share a handle across platforms. One query
    to find them and one to store the pairs, whatever the number of identities."""
    by_handle: dict[str, list[SocialIdentity]] = {}
    for identity in identities:
        handle = identity.handle.strip().lstrip("@").lower()
        if len(handle) >= _MIN_HANDLE_FOR_MATCH:
            by_handle.setdefault(handle, []).append(identity)
    if not by_handle:
        return 0
    pairs: dict[tuple[int, int], str] = {}
    for other in SocialIdentity.objects.annotate(lower_handle=Lower("handle")).filter(
        lower_handle__in=by_handle
    ):
        for identity in by_handle[other.lower_handle]:
            if other.platform == identity.platform or other.contact_id == identity.contact_id:
                continue
            low, high = sorted((identity.contact_id, other.contact_id))
            pairs[(low, high)] = (
                f"Same handle @{other.handle} on {other.get_platform_display()} "
                f"and {identity.get_platform_display()}"
            )
    MergeSuggestion.objects.bulk_create(
        [MergeSuggestion(contact_id=a, other_id=b, reason=r) for (a, b), r in pairs.items()],
        ignore_conflicts=True,
    )
    return len(pairs)
