import pytest

from channels_ingest.pipeline import ingest
from contacts.models import Contact, MergeSuggestion
from tests.factories import (
    ChannelFactory,
    ConversationFactory,
    IdentityFactory,
    post,
)

pytestmark = pytest.mark.django_db


def test_the_same_handle_on_another_platform_is_suggested_never_merged():
    facebook = IdentityFactory(platform="facebook", handle="DanaRossi")
    x = ChannelFactory(platform="x")
    ingest(channel=x, posts=[post("1", author="77", handle="danarossi")])
    new_contact = Contact.objects.exclude(pk=facebook.contact_id).get()
    suggestion = MergeSuggestion.objects.get()
    assert {suggestion.contact_id, suggestion.other_id} == {facebook.contact_id, new_contact.pk}
    assert suggestion.contact_id < suggestion.other_id
    assert "@DanaRossi" in suggestion.reason
    assert Contact.objects.count() == 2


def test_short_handles_and_same_platform_handles_are_not_suggested():
    IdentityFactory(platform="x", handle="bob")
    IdentityFactory(platform="demo", handle="samename")
    ingest(channel=ChannelFactory(platform="x"), posts=[post("1", author="9", handle="bob")])
    ingest(channel=ChannelFactory(), posts=[post("2", author="8", handle="samename")])
    assert not MergeSuggestion.objects.exists()


def test_a_pair_is_suggested_once():
    IdentityFactory(platform="facebook", handle="danarossi")
    channel = ChannelFactory(platform="x")
    ingest(channel=channel, posts=[post("1", author="77", handle="danarossi")])
    ingest(channel=channel, posts=[post("2", author="77", handle="danarossi")])
    assert MergeSuggestion.objects.count() == 1


def test_suggestions_show_only_contacts_the_user_may_see(login, world):
    mine = world.conversation_a.contact
    hidden = world.conversation_b.contact
    visible_other = ConversationFactory(channel=world.channel_a).contact
    for other in (hidden, visible_other):
        low, high = sorted((mine.pk, other.pk))
        MergeSuggestion.objects.create(contact_id=low, other_id=high, reason="Same handle")
    page = login(world.agent_a).get(f"/contacts/{mine.pk}/")
    shown = [c.contact.pk for c in page.context["merge_candidates"]]
    assert shown == [visible_other.pk]
    assert "Possibly the same customer" in page.content.decode()


def test_the_same_name_at_the_same_company_is_suggested_when_a_contact_is_saved(world):
    from contacts.services import ContactData, contact_create, contact_update

    met_on_x = Contact.objects.create(name="Maria  Lopez", company="ACME Corp")
    by_hand = contact_create(
        data=ContactData(name="maria lopez", company="Acme corp"), actor=world.agent_a
    )
    [suggestion] = MergeSuggestion.objects.all()
    assert {suggestion.contact_id, suggestion.other_id} == {met_on_x.pk, by_hand.pk}
    assert suggestion.reason.startswith("Same name and company")
    assert Contact.objects.filter(merged_into__isnull=False).count() == 0

    # Another person of that name elsewhere, or a short name, suggests nothing.
    other = contact_create(
        data=ContactData(name="Maria Lopez", company="Globex"), actor=world.agent_a
    )
    contact_update(
        contact=other, data=ContactData(name="Jo", company="ACME Corp"), actor=world.agent_a
    )
    assert MergeSuggestion.objects.count() == 1


def test_an_import_that_adds_the_company_suggests_the_match():
    from contacts.services import merge_suggestions_by_name_and_company

    first = Contact.objects.create(name="Sam Okafor", company="Initech")
    second = Contact.objects.create(name="Sam Okafor", company="")
    assert merge_suggestions_by_name_and_company(contacts=[second]) == 0
    second.company = "initech"
    second.save()
    assert merge_suggestions_by_name_and_company(contacts=[second]) == 1
    assert merge_suggestions_by_name_and_company(contacts=[first, second]) == 1
    assert MergeSuggestion.objects.count() == 1
