import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from channels_ingest.models import ChannelAccount
from tests.factories import ChannelFactory

pytestmark = pytest.mark.django_db


def _raw_credentials(channel_id: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT credentials FROM channels_ingest_channelaccount WHERE id = %s", [channel_id]
        )
        return cursor.fetchone()[0]


def test_credentials_are_not_readable_in_the_database():
    channel = ChannelFactory(credentials={"access_token": "EAAB-very-secret"})
    raw = _raw_credentials(channel.pk)
    assert "EAAB-very-secret" not in raw
    assert "access_token" not in raw
    assert ChannelAccount.objects.get(pk=channel.pk).credentials == {
        "access_token": "EAAB-very-secret"
    }


def test_credentials_written_with_an_old_key_still_read_after_a_new_key_is_added(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.ENCRYPTION_KEYS = [old]
    channel = ChannelFactory(credentials={"token": "t1"})
    settings.ENCRYPTION_KEYS = [new, old]
    assert ChannelAccount.objects.get(pk=channel.pk).credentials == {"token": "t1"}


def test_credentials_under_an_unknown_key_fail_with_a_clear_error(settings):
    settings.ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    channel = ChannelFactory(credentials={"token": "t1"})
    settings.ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(ImproperlyConfigured, match="SCRM_ENCRYPTION_KEYS"):
        ChannelAccount.objects.get(pk=channel.pk)
