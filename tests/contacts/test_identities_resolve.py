"""Resolving the authors of an ingested batch to identities and contacts."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

import contacts.services as services
from channels_ingest.types import InboundAuthor
from contacts.models import Contact, ContactSource, MergeSuggestion, SocialIdentity
from contacts.services import SeenAuthor, identities_resolve
from tests.factories import ContactFactory, IdentityFactory

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
_COMPARED = (
    "pk",
    "contact_id",
    "platform",
    "platform_user_id",
    "handle",
    "display_name",
    "profile_url",
    "followers_count",
    "verified",
    "created_at",
    "updated_at",
)


def seen(user_id: str, *, minutes: int = 0, first: int | None = None, **profile) -> SeenAuthor:
    profile.setdefault("handle", f"h_{user_id}")
    profile.setdefault("display_name", f"Name {user_id}")
    return SeenAuthor(
        author=InboundAuthor(platform_user_id=user_id, **profile),
        first_seen_at=T0 + timedelta(minutes=minutes if first is None else first),
        last_seen_at=T0 + timedelta(minutes=minutes),
    )


def stored(identity: SocialIdentity) -> tuple:
    return tuple(getattr(identity, name) for name in _COMPARED)


def test_returned_identities_are_the_stored_rows_for_new_and_known_authors():
    known = IdentityFactory(platform="demo", platform_user_id="k1", followers_count=7)
    found = identities_resolve(
        platform="demo",
        authors=[
            seen("k1", handle=""),
            seen("n1", profile_url="https://example.com/n1", followers_count=3, verified=True),
            seen("n2", followers_count=None),
        ],
    )
    assert set(found) == {"k1", "n1", "n2"}
    for identity in found.values():
        assert stored(identity) == stored(SocialIdentity.objects.get(pk=identity.pk))
        assert not identity._state.adding
    assert found["k1"].pk == known.pk and found["k1"].handle == known.handle
    assert (found["n1"].followers_count, found["n1"].verified) == (3, True)
    assert found["n2"].followers_count is None


def test_new_contacts_hold_the_authors_name_contact_details_and_span():
    found = identities_resolve(
        platform="demo",
        authors=[seen("n1", minutes=9, first=2, email="dana@example.com", phone="+3912345")],
    )
    contact = Contact.objects.get(pk=found["n1"].contact_id)
    assert (contact.name, contact.email, contact.phone) == (
        "Name n1",
        "dana@example.com",
        "+3912345",
    )
    assert (contact.first_seen_at, contact.last_seen_at) == (
        T0 + timedelta(minutes=2),
        T0 + timedelta(minutes=9),
    )
    assert contact.source == ContactSource.SOCIAL
    assert (contact.company, contact.is_vip, contact.attributes) == ("", False, {})
    assert contact.created_at is not None and contact.merged_into_id is None


def test_a_new_contact_is_named_by_the_handle_when_the_author_has_no_display_name():
    found = identities_resolve(platform="demo", authors=[seen("n1", display_name="")])
    assert Contact.objects.get(pk=found["n1"].contact_id).name == "h_n1"


def test_a_new_identity_joins_the_contact_with_the_same_phone():
    existing = ContactFactory(phone="+3912345")
    found = identities_resolve(platform="demo", authors=[seen("n1", phone="+3912345")])
    assert found["n1"].contact_id == existing.pk
    assert Contact.objects.count() == 1


def test_a_new_identity_joins_the_contact_kept_by_a_merge_not_the_one_merged_away():
    kept = ContactFactory(email="Dana@example.com")
    # Newer than the kept one (the usual merge) and still holding the same address.
    merged = ContactFactory(email="dana@example.com", merged_into=kept)
    found = identities_resolve(platform="demo", authors=[seen("n1", email="dana@example.com")])
    assert found["n1"].contact_id == kept.pk != merged.pk
    assert Contact.objects.count() == 2


def test_a_new_identity_with_only_a_merged_contacts_details_gets_a_contact_of_its_own():
    kept = ContactFactory(email="old@example.com")
    merged = ContactFactory(phone="+3912345", merged_into=kept)
    found = identities_resolve(platform="demo", authors=[seen("n1", phone="+3912345")])
    assert found["n1"].contact_id not in (kept.pk, merged.pk)
    assert Contact.objects.get(pk=found["n1"].contact_id).merged_into_id is None


def test_of_two_contacts_with_the_same_email_the_oldest_gets_the_new_identity():
    oldest = ContactFactory(email="sam@example.com")
    ContactFactory(email="SAM@example.com")
    found = identities_resolve(platform="demo", authors=[seen("n1", email="sam@example.com")])
    assert found["n1"].contact_id == oldest.pk


def test_profile_changes_are_stored_and_returned_and_blanks_erase_nothing():
    identity = IdentityFactory(
        platform="demo", platform_user_id="k1", handle="old", display_name="Dana", followers_count=5
    )
    before = SocialIdentity.objects.get(pk=identity.pk).updated_at
    found = identities_resolve(
        platform="demo", authors=[seen("k1", handle="new", display_name="", followers_count=9)]
    )
    identity.refresh_from_db()
    assert (identity.handle, identity.display_name, identity.followers_count) == ("new", "Dana", 9)
    assert stored(found["k1"]) == stored(identity)
    assert identity.updated_at > before


def test_an_unchanged_profile_and_an_older_sighting_write_nothing():
    contact = ContactFactory(last_seen_at=T0 + timedelta(hours=1))
    IdentityFactory(contact=contact, platform="demo", platform_user_id="k1", handle="same")
    with CaptureQueriesContext(connection) as captured:
        identities_resolve(
            platform="demo", authors=[seen("k1", handle="same", display_name="", minutes=5)]
        )
    assert not any(
        "socialidentity" in q["sql"].split(" SET ")[0] for q in captured if "UPDATE" in q["sql"]
    )
    contact.refresh_from_db()
    assert contact.last_seen_at == T0 + timedelta(hours=1)


def test_contacts_of_known_authors_are_seen_at_their_latest_post():
    contact = ContactFactory(last_seen_at=T0)
    IdentityFactory(contact=contact, platform="demo", platform_user_id="k1")
    IdentityFactory(contact=contact, platform="demo", platform_user_id="k2")
    identities_resolve(platform="demo", authors=[seen("k1", minutes=30), seen("k2", minutes=20)])
    contact.refresh_from_db()
    assert contact.last_seen_at == T0 + timedelta(minutes=30)


def test_an_identity_another_batch_created_meanwhile_is_used_and_the_spare_contact_removed(
    monkeypatch,
):
    """Two channels of one platform may meet the same new author at once: the identity that
    was stored first wins, and the contact made for the other attempt must not linger."""
    winner = ContactFactory(name="Winner")
    insert = services.rows_insert_returning

    def another_batch_first(model, fields, rows, **kwargs):
        if model is SocialIdentity:
            SocialIdentity.objects.create(
                contact=winner, platform="demo", platform_user_id="n1", handle="h_n1"
            )
        return insert(model, fields, rows, **kwargs)

    monkeypatch.setattr(services, "rows_insert_returning", another_batch_first)
    found = identities_resolve(platform="demo", authors=[seen("n1"), seen("n2")])
    assert found["n1"].contact_id == winner.pk
    assert stored(found["n1"]) == stored(SocialIdentity.objects.get(platform_user_id="n1"))
    assert found["n2"].contact_id != winner.pk
    assert set(Contact.objects.values_list("pk", flat=True)) == {winner.pk, found["n2"].contact_id}


def test_resolution_costs_the_same_queries_for_three_authors_or_three_hundred():
    IdentityFactory(platform="facebook", handle="h_s0")  # a suggestion in both batches
    IdentityFactory(platform="facebook", handle="h_l0")

    def batch(prefix: str, size: int) -> list[SeenAuthor]:
        known = [seen(f"{prefix}k{n}", minutes=5, handle=f"new_{prefix}{n}") for n in range(size)]
        fresh = [
            seen(f"{prefix}{n}", minutes=5, email=f"{prefix}{n}@example.com") for n in range(size)
        ]
        return known + fresh

    for prefix, size in (("s", 3), ("l", 300)):
        for n in range(size):
            IdentityFactory(platform="demo", platform_user_id=f"{prefix}k{n}")
    identities_resolve(platform="demo", authors=[seen("warm-up")])  # webhook subscriptions read
    with CaptureQueriesContext(connection) as small:
        identities_resolve(platform="demo", authors=batch("s", 3))
    with CaptureQueriesContext(connection) as large:
        identities_resolve(platform="demo", authors=batch("l", 300))
    # Lookup, profile update, email match, contacts, identities, handles, suggestions, touch;
    # on PostgreSQL the new contacts' keys are taken first, and the contacts go in by COPY.
    expected = 9 if connection.vendor == "postgresql" else 8
    assert len(small.captured_queries) == len(large.captured_queries) == expected
    assert MergeSuggestion.objects.count() == 2
