"""Setting up a channel from the command line."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from channels_ingest.models import ChannelAccount
from governance.models import ChannelAccess
from tests.factories import ChannelFactory, TeamFactory

pytestmark = pytest.mark.django_db

BEARER = "AAAAcli-bearer-token-value-Hq42"
CONSUMER_SECRET = "cli-consumer-secret-value-Lp09"


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("add_channel", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def care():
    return TeamFactory(name="Customer Care", slug="care")


def x_args(*extra: str) -> list[str]:
    return [
        "--platform",
        "x",
        "--name",
        "Acme on X",
        "--handle",
        "@acme",
        "--account-id",
        "2244994945",
        *extra,
    ]


def test_the_command_adds_an_x_channel_with_credentials_keywords_and_a_team(care):
    out, _ = run(
        *x_args(
            "--credential",
            f"bearer_token={BEARER}",
            "--credential",
            f"consumer_secret={CONSUMER_SECRET}",
            "--keyword",
            "acme",
            "--keyword",
            "acme support",
            "--team",
            "care",
            "--poll-interval",
            "30",
        )
    )

    channel = ChannelAccount.objects.get(name="Acme on X")
    assert channel.platform == "x"
    assert channel.handle == "@acme"
    assert channel.external_account_id == "2244994945"
    assert channel.poll_interval_seconds == 30
    assert channel.credentials == {"bearer_token": BEARER, "consumer_secret": CONSUMER_SECRET}
    assert channel.settings["keywords"] == ["acme", "acme support"]
    assert channel.default_team == care
    access = ChannelAccess.objects.get(channel=channel)
    assert access.team == care
    assert access.can_reply is True
    assert channel.next_poll_at is not None
    assert out.strip() == f"Added channel #{channel.pk} Acme on X (x)."


def test_running_the_command_again_updates_the_channel_of_that_name(care):
    run(*x_args("--credential", f"bearer_token={BEARER}", "--team", "care"))
    first = ChannelAccount.objects.get(name="Acme on X")

    out, _ = run(
        "--platform",
        "x",
        "--name",
        "Acme on X",
        "--credential",
        f"consumer_secret={CONSUMER_SECRET}",
        "--keyword",
        "acme corp",
        "--team",
        "care",
    )

    assert ChannelAccount.objects.filter(name="Acme on X").count() == 1
    channel = ChannelAccount.objects.get(name="Acme on X")
    assert channel.pk == first.pk
    # What was not given again is kept; what was given is added.
    assert channel.handle == "@acme"
    assert channel.external_account_id == "2244994945"
    assert channel.credentials == {"bearer_token": BEARER, "consumer_secret": CONSUMER_SECRET}
    assert channel.settings["keywords"] == ["acme corp"]
    assert ChannelAccess.objects.filter(channel=channel, team=care).count() == 1
    assert out.strip() == f"Updated channel #{channel.pk} Acme on X (x)."


def test_a_new_value_for_a_stored_credential_replaces_it(care):
    run(*x_args("--credential", f"bearer_token={BEARER}"))

    run(*x_args("--credential", "bearer_token=rotated-bearer-value-0003"))

    channel = ChannelAccount.objects.get(name="Acme on X")
    assert channel.credentials == {"bearer_token": "rotated-bearer-value-0003"}


def test_a_credential_the_platform_does_not_take_is_refused():
    with pytest.raises(CommandError) as raised:
        run(*x_args("--credential", "page_access_token=some-page-token-value"))

    message = str(raised.value)
    assert "'page_access_token'" in message
    assert "x takes: bearer_token, consumer_key, consumer_secret" in message
    assert "some-page-token-value" not in message
    assert not ChannelAccount.objects.filter(name="Acme on X").exists()


def test_a_credential_for_the_demo_platform_is_refused():
    with pytest.raises(CommandError, match="demo takes: none"):
        run("--platform", "demo", "--name", "Demo", "--credential", "bearer_token=abc")


def test_an_unknown_team_is_refused(care):
    with pytest.raises(CommandError) as raised:
        run(*x_args("--team", "care", "--team", "no-such-team"))

    assert str(raised.value) == "No team with slug no-such-team."
    assert not ChannelAccount.objects.filter(name="Acme on X").exists()
    assert not ChannelAccess.objects.exists()


def test_a_channel_of_another_platform_with_that_name_is_not_touched():
    existing = ChannelFactory(
        platform="facebook",
        name="Acme",
        handle="Acme Page",
        credentials={"page_access_token": "page-token-value-000"},
    )

    with pytest.raises(CommandError) as raised:
        run(
            "--platform",
            "x",
            "--name",
            "Acme",
            "--handle",
            "@acme",
            "--credential",
            f"bearer_token={BEARER}",
        )

    assert str(raised.value) == "Acme is a facebook channel."
    existing.refresh_from_db()
    assert existing.platform == "facebook"
    assert existing.handle == "Acme Page"
    assert existing.credentials == {"page_access_token": "page-token-value-000"}


def test_a_poll_interval_under_ten_seconds_is_refused():
    with pytest.raises(CommandError, match="10 seconds"):
        run(*x_args("--poll-interval", "5"))

    assert not ChannelAccount.objects.exists()


def test_the_command_never_prints_a_credential(care):
    out, err = run(
        *x_args(
            "--credential",
            f"bearer_token={BEARER}",
            "--credential",
            f"consumer_secret={CONSUMER_SECRET}",
            "--team",
            "care",
        )
    )
    again_out, again_err = run(*x_args("--credential", f"bearer_token={BEARER}"))

    printed = out + err + again_out + again_err
    assert "Acme on X" in printed
    for secret in (BEARER, CONSUMER_SECRET):
        assert secret not in printed
        assert secret[-8:] not in printed


def test_a_malformed_credential_is_refused_without_echoing_it():
    with pytest.raises(CommandError) as raised:
        run(*x_args("--credential", f"bearer_token:{BEARER}"))

    assert BEARER not in str(raised.value)


def test_the_first_team_given_becomes_the_default_team():
    zulu = TeamFactory(name="Zulu desk", slug="zulu")
    TeamFactory(name="Alpha desk", slug="alpha")

    run(*x_args("--team", "zulu", "--team", "alpha"))

    channel = ChannelAccount.objects.get(name="Acme on X")
    assert channel.default_team == zulu
    assert set(
        ChannelAccess.objects.filter(channel=channel).values_list("team__slug", flat=True)
    ) == {
        "zulu",
        "alpha",
    }
