import pytest
from django.db import IntegrityError

from tests.factories import ContactFactory, IdentityFactory

pytestmark = pytest.mark.django_db


def test_a_platform_user_id_belongs_to_one_identity():
    IdentityFactory(platform="x", platform_user_id="42")
    with pytest.raises(IntegrityError):
        IdentityFactory(platform="x", platform_user_id="42")


def test_the_same_user_id_on_two_platforms_is_two_identities():
    IdentityFactory(platform="x", platform_user_id="42")
    IdentityFactory(platform="facebook", platform_user_id="42")


def test_a_contact_may_hold_identities_on_several_platforms():
    contact = ContactFactory()
    IdentityFactory(contact=contact, platform="x")
    IdentityFactory(contact=contact, platform="facebook")
    assert contact.identities.count() == 2
