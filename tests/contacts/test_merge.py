"""Merging two contacts (from a suggestion or by hand), undoing it, dismissing suggestions."""

import pytest

from contacts.models import Contact, ContactMerge, MergeSuggestion, MergeSuggestionStatus
from conversations.models import Conversation
from tests.factories import ContactFactory, ConversationFactory, IdentityFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def pair(world):
    """Two contacts on channel A that are one customer: one from X, one from Facebook."""
    kept = world.conversation_a.contact
    kept.email, kept.company = "", "Globex"
    kept.attributes = {"plan": "gold"}
    kept.save()
    other = ContactFactory(
        name="Dana R.",
        email="dana@example.com",
        company="Other Co",
        is_vip=True,
        attributes={"plan": "silver", "city": "Dublin"},
    )
    identity = IdentityFactory(contact=other, platform="facebook", handle="danarossi")
    conversation = ConversationFactory(channel=world.channel_a, contact=other)
    low, high = sorted((kept.pk, other.pk))
    suggestion = MergeSuggestion.objects.create(contact_id=low, other_id=high, reason="Same handle")
    return kept, other, identity, conversation, suggestion


def test_merging_moves_identities_and_conversations_and_fills_only_empty_details(
    login, world, pair
):
    kept, other, identity, conversation, suggestion = pair
    client = login(world.agent_a)
    client.post(f"/contacts/{kept.pk}/merge/", {"other": other.pk})
    kept.refresh_from_db()
    identity.refresh_from_db()
    conversation.refresh_from_db()
    assert identity.contact_id == kept.pk and conversation.contact_id == kept.pk
    assert kept.email == "dana@example.com"  # was empty
    assert kept.company == "Globex"  # kept its own
    assert kept.is_vip
    assert kept.attributes == {"plan": "gold", "city": "Dublin"}
    assert Contact.objects.get(pk=other.pk).merged_into_id == kept.pk
    assert MergeSuggestion.objects.get(pk=suggestion.pk).status == MergeSuggestionStatus.ACCEPTED
    merge = ContactMerge.objects.get()
    assert merge.merged_by == world.agent_a


def test_a_merged_contact_is_hidden_and_its_page_leads_to_the_kept_one(login, world, pair):
    kept, other, *_ = pair
    client = login(world.agent_a)
    client.post(f"/contacts/{kept.pk}/merge/", {"other": other.pk})
    listed = [c.pk for c in client.get("/contacts/").context["page"]]
    assert other.pk not in listed and kept.pk in listed
    response = client.get(f"/contacts/{other.pk}/")
    assert response.status_code == 302 and response["Location"] == f"/contacts/{kept.pk}/"


def test_undoing_a_merge_puts_everything_back(login, world, pair):
    kept, other, identity, conversation, suggestion = pair
    before = Contact.objects.get(pk=kept.pk)
    client = login(world.agent_a)
    client.post(f"/contacts/{kept.pk}/merge/", {"other": other.pk})
    merge = ContactMerge.objects.get()
    assert "Undo merge" in client.get(f"/contacts/{kept.pk}/").content.decode()
    client.post(f"/contacts/merges/{merge.pk}/undo/")
    kept.refresh_from_db()
    assert (kept.email, kept.company, kept.is_vip, kept.attributes) == (
        before.email,
        before.company,
        before.is_vip,
        before.attributes,
    )
    assert kept.first_seen_at == before.first_seen_at
    assert Contact.objects.get(pk=other.pk).merged_into_id is None
    identity.refresh_from_db()
    conversation.refresh_from_db()
    assert identity.contact_id == other.pk and conversation.contact_id == other.pk
    assert MergeSuggestion.objects.get(pk=suggestion.pk).status == MergeSuggestionStatus.OPEN
    response = client.post(f"/contacts/merges/{merge.pk}/undo/", follow=True)
    assert "already undone" in response.content.decode()


def test_a_contact_the_user_cannot_see_cannot_be_merged(login, world, pair):
    kept, *_ = pair
    hidden = world.conversation_b.contact
    response = login(world.agent_a).post(f"/contacts/{kept.pk}/merge/", {"other": hidden.pk})
    assert response.status_code == 404
    assert Conversation.objects.get(pk=world.conversation_b.pk).contact_id == hidden.pk
    response = login(world.agent_b).post(f"/contacts/{kept.pk}/merge/", {"other": hidden.pk})
    assert response.status_code == 404


def test_a_contact_cannot_be_merged_into_itself(login, world, pair):
    kept, *_ = pair
    response = login(world.agent_a).post(
        f"/contacts/{kept.pk}/merge/", {"other": kept.pk}, follow=True
    )
    assert "into itself" in response.content.decode()
    assert not ContactMerge.objects.exists()


def test_a_dismissed_suggestion_is_not_offered_again(login, world, pair):
    kept, other, _, _, suggestion = pair
    client = login(world.agent_a)
    offered = client.get(f"/contacts/{kept.pk}/").context["merge_candidates"]
    assert [c.contact.pk for c in offered] == [other.pk]
    client.post(f"/contacts/suggestions/{suggestion.pk}/dismiss/")
    assert client.get(f"/contacts/{kept.pk}/").context["merge_candidates"] == []
    assert MergeSuggestion.objects.get(pk=suggestion.pk).status == MergeSuggestionStatus.DISMISSED


def test_merge_and_dismiss_never_redirect_to_another_site(login, world, pair):
    kept, other, _, _, suggestion = pair
    client = login(world.agent_a)
    response = client.post(
        f"/contacts/suggestions/{suggestion.pk}/dismiss/", {"next": "https://evil.example/"}
    )
    assert response["Location"] == f"/contacts/{suggestion.contact_id}/"
    response = client.post(
        f"/contacts/{kept.pk}/merge/",
        {"other": other.pk, "next": f"/inbox/{world.conversation_a.pk}/"},
    )
    assert response["Location"] == f"/inbox/{world.conversation_a.pk}/"


def test_the_conversation_panel_offers_the_merge(login, world, pair):
    page = login(world.agent_a).get(f"/inbox/{world.conversation_a.pk}/").content.decode()
    assert "Merge into" in page and "Not the same" in page


def test_an_identity_moves_to_another_contact_with_its_own_conversations(login, world):
    from contacts.models import IdentityMove, SocialIdentity
    from tests.factories import MessageFactory

    wrong = ContactFactory(name="Wrong Person")
    identity = IdentityFactory(contact=wrong, platform="x", handle="dana")
    other_identity = IdentityFactory(contact=wrong, platform="facebook")
    own = ConversationFactory(channel=world.channel_a, contact=wrong)
    MessageFactory(conversation=own, author_identity=identity)
    shared = ConversationFactory(channel=world.channel_a, contact=wrong)
    MessageFactory(conversation=shared, author_identity=identity)
    MessageFactory(conversation=shared, author_identity=other_identity)
    right = ContactFactory(name="Dana Rossi", email="dana@example.com")
    ConversationFactory(channel=world.channel_a, contact=right)

    response = login(world.agent_a).post(
        f"/contacts/identities/{identity.pk}/move/", {"to": "DANA@example.com"}
    )
    assert response["Location"] == f"/contacts/{right.pk}/"
    assert SocialIdentity.objects.get(pk=identity.pk).contact_id == right.pk
    assert Conversation.objects.get(pk=own.pk).contact_id == right.pk
    assert Conversation.objects.get(pk=shared.pk).contact_id == wrong.pk
    move = IdentityMove.objects.get()
    assert (move.from_contact_id, move.moved_by) == (wrong.pk, world.agent_a)


def test_an_identity_cannot_move_to_a_contact_the_agent_cannot_see(login, world):
    from contacts.models import SocialIdentity

    identity = world.conversation_a.contact.identities.get()
    hidden = world.conversation_b.contact
    response = login(world.agent_a).post(
        f"/contacts/identities/{identity.pk}/move/", {"to": hidden.pk}, follow=True
    )
    assert "that you can see" in response.content.decode()
    assert SocialIdentity.objects.get(pk=identity.pk).contact_id == world.conversation_a.contact_id
    assert (
        login(world.agent_b)
        .post(f"/contacts/identities/{identity.pk}/move/", {"to": hidden.pk})
        .status_code
        == 404
    )


def test_editing_from_the_conversation_returns_to_it(login, world):
    contact = world.conversation_a.contact
    back = f"/inbox/{world.conversation_a.pk}/"
    client = login(world.agent_a)
    page = client.get(back).content.decode()
    assert f"/contacts/{contact.pk}/edit/?next=" in page
    form = client.get(f"/contacts/{contact.pk}/edit/?next={back}").content.decode()
    assert f'name="next" value="{back}"' in form
    response = client.post(
        f"/contacts/{contact.pk}/edit/", {"name": "Dana Rossi", "email": "", "next": back}
    )
    assert response.status_code == 302 and response["Location"] == back
    response = client.post(
        f"/contacts/{contact.pk}/edit/",
        {"name": "Dana Rossi", "next": "https://elsewhere.example/"},
    )
    assert response["Location"] == f"/contacts/{contact.pk}/"


def test_undo_keeps_what_was_changed_after_the_merge(login, world, pair):
    from tests.factories import MessageFactory

    kept, other, identity, _, _ = pair
    client = login(world.agent_a)
    client.post(f"/contacts/{kept.pk}/merge/", {"other": other.pk})
    Contact.objects.filter(pk=kept.pk).update(email="new@example.com")
    later = ConversationFactory(channel=world.channel_a, contact=kept)
    MessageFactory(conversation=later, author_identity=identity)
    client.post(f"/contacts/merges/{ContactMerge.objects.get().pk}/undo/")
    kept.refresh_from_db()
    assert kept.email == "new@example.com"
    assert Conversation.objects.get(pk=later.pk).contact_id == other.pk


def test_a_merge_cannot_be_undone_once_the_kept_contact_was_merged_onward(login, world, pair):
    kept, other, *_ = pair
    client = login(world.agent_a)
    client.post(f"/contacts/{kept.pk}/merge/", {"other": other.pk})
    third = ConversationFactory(channel=world.channel_a).contact
    first_merge = ContactMerge.objects.get()
    from contacts.services import MergeRefused, contact_merge, contact_merge_undo

    contact_merge(merged=kept, kept=third, actor=world.agent_a)
    with pytest.raises(MergeRefused, match="undo that first"):
        contact_merge_undo(merge=first_merge, actor=world.agent_a)
