"""The admin pages for channels: adding and editing, write-only secrets, health, dead letters."""

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import resolve
from django.utils import dateformat, timezone

from channels_ingest import webhook_views
from channels_ingest.models import (
    ChannelAccount,
    ChannelHealth,
    DeadLetter,
    DeadLetterStatus,
)
from channels_ingest.services import CREDENTIAL_FIELDS
from conversations.models import Message
from tests.factories import ChannelFactory

pytestmark = pytest.mark.django_db

BEARER = "AAAAbearer-token-long-enough-7Qz1"
CONSUMER_SECRET = "consumer-secret-value-k9Wd"
CONSUMER_KEY = "consumer-key-value-55Mx"
PAGE_TOKEN = "EAAGpage-access-token-value-R2d2"
APP_SECRET = "facebook-app-secret-value-Yt8u"

ALL_SECRET_NAMES = [name for names in CREDENTIAL_FIELDS.values() for name in names]


def _empty_secrets() -> dict[str, str]:
    return dict.fromkeys(ALL_SECRET_NAMES, "")


def x_form(world, **overrides) -> dict[str, str]:
    data = {
        "platform": "x",
        "name": "Acme Support on X",
        "handle": "@acmesupport",
        "external_account_id": "2244994945",
        "mode": "engage",
        "is_active": "on",
        "poll_interval_seconds": "60",
        "default_team": str(world.team_a.pk),
        "keywords": "acme, acme support",
        "search_query": "",
        **_empty_secrets(),
        "bearer_token": BEARER,
        "consumer_key": CONSUMER_KEY,
        "consumer_secret": CONSUMER_SECRET,
    }
    data.update(overrides)
    return data


def facebook_form(world, **overrides) -> dict[str, str]:
    data = {
        "platform": "facebook",
        "name": "Acme Page",
        "handle": "Acme",
        "external_account_id": "1234567890",
        "mode": "engage",
        "is_active": "on",
        "poll_interval_seconds": "60",
        "default_team": str(world.team_a.pk),
        "keywords": "",
        "search_query": "",
        **_empty_secrets(),
        "page_access_token": PAGE_TOKEN,
        "app_secret": APP_SECRET,
    }
    data.update(overrides)
    return data


def edit_form(channel: ChannelAccount, **overrides) -> dict[str, str]:
    """What the edit form posts back for a channel when only the secrets are touched."""
    data = {
        "platform": channel.platform,
        "name": channel.name,
        "handle": channel.handle,
        "external_account_id": channel.external_account_id,
        "mode": channel.mode,
        "poll_interval_seconds": str(channel.poll_interval_seconds),
        "default_team": str(channel.default_team_id or ""),
        "keywords": ", ".join((channel.settings or {}).get("keywords", [])),
        "search_query": "",
        **_empty_secrets(),
    }
    if channel.is_active:
        data["is_active"] = "on"
    data.update(overrides)
    return data


@pytest.fixture
def x_channel(world):
    return ChannelFactory(
        platform="x",
        name="Acme on X",
        handle="@acme",
        external_account_id="2244994945",
        default_team=world.team_a,
        settings={"keywords": ["acme"]},
        credentials={
            "bearer_token": BEARER,
            "consumer_key": CONSUMER_KEY,
            "consumer_secret": CONSUMER_SECRET,
        },
    )


@pytest.fixture
def facebook_channel(world):
    return ChannelFactory(
        platform="facebook",
        name="Acme Facebook",
        handle="Acme",
        external_account_id="1234567890",
        default_team=world.team_a,
        settings={},
        credentials={"page_access_token": PAGE_TOKEN, "app_secret": APP_SECRET},
    )


@pytest.fixture
def admin_client(login, world):
    return login(world.admin)


# --- Adding and editing ---------------------------------------------------------------


def test_an_admin_adds_an_x_channel_with_keywords_and_credentials(admin_client, world):
    response = admin_client.post("/channels/new/", x_form(world))

    assert response.status_code == 302
    assert response.url == "/channels/"
    channel = ChannelAccount.objects.get(name="Acme Support on X")
    assert channel.platform == "x"
    assert channel.handle == "@acmesupport"
    assert channel.external_account_id == "2244994945"
    assert channel.mode == "engage"
    assert channel.is_active is True
    assert channel.poll_interval_seconds == 60
    assert channel.default_team == world.team_a
    assert channel.settings["keywords"] == ["acme", "acme support"]
    assert channel.credentials == {
        "bearer_token": BEARER,
        "consumer_key": CONSUMER_KEY,
        "consumer_secret": CONSUMER_SECRET,
    }
    assert channel.next_poll_at is not None
    assert channel.next_poll_at <= timezone.now()


def test_a_facebook_channel_keeps_only_facebook_secrets(admin_client, world):
    data = facebook_form(world, bearer_token="stray-x-token-should-not-be-kept")

    response = admin_client.post("/channels/new/", data)

    assert response.status_code == 302
    channel = ChannelAccount.objects.get(name="Acme Page")
    assert channel.credentials == {"page_access_token": PAGE_TOKEN, "app_secret": APP_SECRET}


def test_the_edit_page_shows_a_hint_of_each_secret_but_never_the_secret(admin_client, x_channel):
    response = admin_client.get(f"/channels/{x_channel.pk}/")

    html = response.content.decode()
    assert response.status_code == 200
    for secret in (BEARER, CONSUMER_SECRET, CONSUMER_KEY):
        assert secret not in html
        assert f"ends …{secret[-4:]}" in html
    # The fields that hold nothing say so.
    assert "not set" in html


def test_a_short_secret_is_only_reported_as_set(admin_client, world):
    channel = ChannelFactory(
        platform="x", credentials={"bearer_token": "shorttoken", "consumer_secret": "abc12345"}
    )

    html = admin_client.get(f"/channels/{channel.pk}/").content.decode()

    assert "shorttoken" not in html
    assert "abc12345" not in html
    assert "ends …" not in html


def test_a_refused_form_does_not_render_the_secret_just_typed(admin_client, world):
    response = admin_client.post("/channels/new/", x_form(world, consumer_secret=""))

    assert response.status_code == 200
    assert BEARER not in response.content.decode()


def test_saving_with_empty_credential_fields_keeps_the_stored_secrets(admin_client, x_channel):
    response = admin_client.post(
        f"/channels/{x_channel.pk}/", edit_form(x_channel, handle="@acme_help")
    )

    assert response.status_code == 302
    x_channel.refresh_from_db()
    assert x_channel.handle == "@acme_help"
    assert x_channel.credentials == {
        "bearer_token": BEARER,
        "consumer_key": CONSUMER_KEY,
        "consumer_secret": CONSUMER_SECRET,
    }


def test_a_new_secret_replaces_only_that_secret(admin_client, x_channel):
    response = admin_client.post(
        f"/channels/{x_channel.pk}/", edit_form(x_channel, consumer_secret="rotated-secret-0001")
    )

    assert response.status_code == 302
    x_channel.refresh_from_db()
    assert x_channel.credentials == {
        "bearer_token": BEARER,
        "consumer_key": CONSUMER_KEY,
        "consumer_secret": "rotated-secret-0001",
    }


def test_a_channel_needing_reauthentication_is_healthy_again_after_a_new_secret(
    admin_client, x_channel
):
    ChannelAccount.objects.filter(pk=x_channel.pk).update(
        health=ChannelHealth.NEEDS_REAUTH, last_error="401 Unauthorized: token revoked"
    )
    x_channel.refresh_from_db()

    response = admin_client.post(
        f"/channels/{x_channel.pk}/", edit_form(x_channel, bearer_token="fresh-bearer-token-0002")
    )

    assert response.status_code == 302
    x_channel.refresh_from_db()
    assert x_channel.health == ChannelHealth.OK
    assert x_channel.last_error == ""
    assert x_channel.credentials["bearer_token"] == "fresh-bearer-token-0002"


def test_saving_without_a_new_secret_leaves_a_channel_needing_reauthentication(
    admin_client, x_channel
):
    ChannelAccount.objects.filter(pk=x_channel.pk).update(
        health=ChannelHealth.NEEDS_REAUTH, last_error="401 Unauthorized: token revoked"
    )
    x_channel.refresh_from_db()

    admin_client.post(f"/channels/{x_channel.pk}/", edit_form(x_channel, bearer_token=BEARER))

    x_channel.refresh_from_db()
    assert x_channel.health == ChannelHealth.NEEDS_REAUTH
    assert x_channel.last_error == "401 Unauthorized: token revoked"


@pytest.mark.parametrize(
    ("form", "overrides", "field", "error"),
    [
        ("x", {"consumer_secret": ""}, "consumer_secret", "Needed to connect this platform."),
        ("x", {"bearer_token": ""}, "bearer_token", "Needed to read mentions and searches."),
        (
            "facebook",
            {"page_access_token": ""},
            "page_access_token",
            "Needed to connect this platform.",
        ),
        ("facebook", {"app_secret": ""}, "app_secret", "Needed to connect this platform."),
        ("x", {"poll_interval_seconds": "9"}, "poll_interval_seconds", "every 10 seconds"),
    ],
    ids=[
        "x-without-consumer-secret",
        "x-without-bearer-token",
        "facebook-without-page-token",
        "facebook-without-app-secret",
        "poll-interval-under-10s",
    ],
)
def test_an_incomplete_channel_is_refused_with_the_reason_shown(
    admin_client, world, form, overrides, field, error
):
    data = (x_form if form == "x" else facebook_form)(world, **overrides)
    before = ChannelAccount.objects.count()

    response = admin_client.post("/channels/new/", data)

    assert response.status_code == 200
    assert ChannelAccount.objects.count() == before
    errors = response.context["form"].errors
    assert field in errors
    assert any(error in message for message in errors[field])
    assert error in response.content.decode()


def test_a_poll_interval_of_ten_seconds_is_accepted(admin_client, world):
    response = admin_client.post("/channels/new/", x_form(world, poll_interval_seconds="10"))

    assert response.status_code == 302
    assert ChannelAccount.objects.get(name="Acme Support on X").poll_interval_seconds == 10


def test_an_edit_can_rely_on_secrets_already_stored(admin_client, facebook_channel):
    response = admin_client.post(f"/channels/{facebook_channel.pk}/", edit_form(facebook_channel))

    assert response.status_code == 302


def test_the_platform_cannot_be_changed_on_edit(admin_client, x_channel):
    page = admin_client.get(f"/channels/{x_channel.pk}/").content.decode()
    select = re.search(r"<select[^>]*id=\"id_platform\"[^>]*>", page)
    assert select is not None
    assert "disabled" in select.group(0)

    response = admin_client.post(
        f"/channels/{x_channel.pk}/",
        edit_form(
            x_channel,
            platform="facebook",
            page_access_token=PAGE_TOKEN,
            app_secret=APP_SECRET,
        ),
    )

    assert response.status_code == 302
    x_channel.refresh_from_db()
    assert x_channel.platform == "x"
    assert "page_access_token" not in x_channel.credentials


def test_the_add_form_lets_the_platform_be_chosen(admin_client):
    page = admin_client.get("/channels/new/").content.decode()

    select = re.search(r"<select[^>]*id=\"id_platform\"[^>]*>", page)
    assert select is not None
    assert "disabled" not in select.group(0)


def test_each_platforms_credentials_are_titled_with_its_name(admin_client):
    page = admin_client.get("/channels/new/").content.decode()
    legends = dict(
        re.findall(r'<fieldset class="secrets" data-platform="(\w+)">\s*<legend>([^<]+?) <', page)
    )
    assert legends == {
        "x": "X credentials",
        "facebook": "Facebook credentials",
        "api": "Inbound API credentials",
    }


# --- The list ---------------------------------------------------------------------------


def test_the_list_shows_rate_limits_and_the_last_error(admin_client, x_channel):
    until = datetime(2030, 3, 4, 15, 30, tzinfo=UTC)
    ChannelAccount.objects.filter(pk=x_channel.pk).update(
        health=ChannelHealth.RATE_LIMITED,
        rate_limited_until=until,
        last_error="429 Too Many Requests on /2/tweets/search/recent",
    )

    html = admin_client.get("/channels/").content.decode()

    shown = dateformat.format(timezone.localtime(until), "M j, H:i")
    assert f"Rate limited until {shown}" in html
    assert "429 Too Many Requests on /2/tweets/search/recent" in html


def test_the_list_shows_a_channel_needing_reauthentication(admin_client, x_channel):
    ChannelAccount.objects.filter(pk=x_channel.pk).update(
        health=ChannelHealth.NEEDS_REAUTH, last_error="Invalid or expired token"
    )

    html = admin_client.get("/channels/").content.decode()

    assert "Needs re-authentication" in html
    assert "Invalid or expired token" in html


def test_the_list_counts_open_dead_letters_and_links_to_them(admin_client, world):
    channel = world.channel_a
    for _ in range(2):
        DeadLetter.objects.create(channel=channel, source="poll", raw="{}", error="bad")
    DeadLetter.objects.create(
        channel=channel, source="poll", raw="{}", error="bad", status=DeadLetterStatus.DISCARDED
    )
    DeadLetter.objects.create(channel=world.channel_b, source="webhook", raw="{}", error="bad")

    response = admin_client.get("/channels/")

    counts = {ch.pk: ch.open_dead_letters for ch in response.context["channels"]}
    assert counts[channel.pk] == 2
    assert counts[world.channel_b.pk] == 1
    html = response.content.decode()
    assert f'href="/channels/dead-letters/?channel={channel.pk}">2</a>' in html
    assert f'href="/channels/dead-letters/?channel={world.channel_b.pk}">1</a>' in html


def test_a_channel_without_dead_letters_has_no_dead_letter_link(admin_client, world):
    html = admin_client.get("/channels/").content.decode()

    assert f"?channel={world.channel_a.pk}" not in html


# --- Dead letters -----------------------------------------------------------------------


def _letter(channel, raw="{}", error="Unreadable", **fields) -> DeadLetter:
    return DeadLetter.objects.create(
        channel=channel, source=fields.pop("source", "poll"), raw=raw, error=error, **fields
    )


def _demo_post(external_id: str, text: str = "My parcel never came") -> str:
    return json.dumps(
        {
            "id": external_id,
            "author_id": "demo-user-77",
            "text": text,
            "created_at": "2026-01-05T12:00:00+00:00",
        }
    )


def test_the_dead_letters_page_shows_raw_payloads_escaped(admin_client, world):
    _letter(world.channel_a, raw='{"text": "<script>alert(1)</script>"}', error="No id")

    html = admin_client.get("/channels/dead-letters/").content.decode()

    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)</script>" not in html


def test_the_dead_letters_page_shows_what_an_item_is_read_again_with(admin_client, world):
    context = {"reader": "mention", "own_id": "1", "users": {"5": {"username": "<b>bob</b>"}}}
    _letter(world.channel_a, raw='{"id": "9", "author_id": "5"}', context=context)

    html = admin_client.get("/channels/dead-letters/").content.decode()

    assert "read again with what its page gave" in html
    assert '"reader": "mention"' in html.replace("&quot;", '"')
    assert "&lt;b&gt;bob&lt;/b&gt;" in html


def test_retrying_an_item_letter_from_the_page_stores_its_post(admin_client, world):
    letter = _letter(world.channel_a, raw=_demo_post("demo-dl-6"), context={"reader": "post"})

    admin_client.post(f"/channels/dead-letters/{letter.pk}/retry/")

    letter.refresh_from_db()
    assert letter.status == DeadLetterStatus.RETRIED
    assert Message.objects.filter(channel=world.channel_a, external_id="demo-dl-6").count() == 1


def test_the_dead_letters_page_lists_new_letters_by_default(admin_client, world):
    fresh = _letter(world.channel_a, raw='{"marker": "fresh-one"}')
    done = _letter(world.channel_a, raw='{"marker": "done-one"}', status=DeadLetterStatus.RETRIED)

    response = admin_client.get("/channels/dead-letters/")

    assert [letter.pk for letter in response.context["letters"]] == [fresh.pk]
    html = response.content.decode()
    assert "fresh-one" in html
    assert "done-one" not in html
    assert done.pk not in [letter.pk for letter in response.context["letters"]]


def test_the_dead_letters_page_filters_by_status(admin_client, world):
    _letter(world.channel_a)
    discarded = _letter(world.channel_a, status=DeadLetterStatus.DISCARDED)
    _letter(world.channel_a, status=DeadLetterStatus.RETRIED)

    response = admin_client.get("/channels/dead-letters/?status=discarded")

    assert [letter.pk for letter in response.context["letters"]] == [discarded.pk]
    assert "Discarded" in response.content.decode()


def test_the_dead_letters_page_filters_by_channel(admin_client, world):
    on_a = _letter(world.channel_a)
    _letter(world.channel_b)

    response = admin_client.get(f"/channels/dead-letters/?channel={world.channel_a.pk}")

    assert [letter.pk for letter in response.context["letters"]] == [on_a.pk]
    html = response.content.decode()
    assert f'<option value="{world.channel_a.pk}" selected>' in html


def test_retrying_a_letter_that_now_reads_stores_the_post(admin_client, world):
    letter = _letter(world.channel_a, raw=_demo_post("demo-dl-1"), error="Queue was down")

    response = admin_client.post(f"/channels/dead-letters/{letter.pk}/retry/")

    assert response.status_code == 302
    assert response.url == "/channels/dead-letters/"
    letter.refresh_from_db()
    assert letter.status == DeadLetterStatus.RETRIED
    assert letter.resolved_at is not None
    message = Message.objects.get(channel=world.channel_a, external_id="demo-dl-1")
    assert message.body == "My parcel never came"
    assert "was read and stored" in admin_client.get("/channels/").content.decode()


@pytest.mark.parametrize(
    "raw",
    ['{"id": "demo-dl-2", "text": "no author"', '{"id": "demo-dl-2", "text": "no author"}'],
    ids=["not-json", "missing-fields"],
)
def test_retrying_a_letter_that_still_cannot_be_read_keeps_it(admin_client, world, raw):
    letter = _letter(world.channel_a, raw=raw, error="Original reason")

    response = admin_client.post(f"/channels/dead-letters/{letter.pk}/retry/")

    assert response.status_code == 302
    letter.refresh_from_db()
    assert letter.status == DeadLetterStatus.NEW
    assert letter.resolved_at is None
    assert letter.error.startswith("Retry failed")
    assert not Message.objects.filter(external_id="demo-dl-2").exists()


def test_retrying_a_letter_of_a_deleted_channel_reports_the_problem(admin_client, world):
    letter = _letter(None, raw=_demo_post("demo-dl-3"))
    admin_client.raise_request_exception = False

    response = admin_client.post(f"/channels/dead-letters/{letter.pk}/retry/")

    assert response.status_code == 302
    letter.refresh_from_db()
    assert letter.status == DeadLetterStatus.NEW


def test_discarding_a_letter_resolves_it(admin_client, world):
    letter = _letter(world.channel_a)

    response = admin_client.post(f"/channels/dead-letters/{letter.pk}/discard/")

    assert response.status_code == 302
    letter.refresh_from_db()
    assert letter.status == DeadLetterStatus.DISCARDED
    assert letter.resolved_at is not None


def test_an_unknown_dead_letter_action_is_forbidden(admin_client, world):
    letter = _letter(world.channel_a, raw=_demo_post("demo-dl-4"))

    response = admin_client.post(f"/channels/dead-letters/{letter.pk}/delete/")

    assert response.status_code == 403
    letter.refresh_from_db()
    assert letter.status == DeadLetterStatus.NEW


@pytest.mark.parametrize("action", ["retry", "discard"])
def test_a_dead_letter_action_refuses_get(admin_client, world, action):
    letter = _letter(world.channel_a, raw=_demo_post("demo-dl-5"))

    response = admin_client.get(f"/channels/dead-letters/{letter.pk}/{action}/")

    assert response.status_code == 405
    letter.refresh_from_db()
    assert letter.status == DeadLetterStatus.NEW
    assert not Message.objects.filter(external_id="demo-dl-5").exists()


# --- Webhook address --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "platform", "view"),
    [
        ("x_channel", "x", webhook_views.x_webhook),
        ("facebook_channel", "facebook", webhook_views.facebook_webhook),
    ],
)
def test_the_edit_page_shows_the_webhook_url_of_a_real_platform(
    admin_client, request, fixture, platform, view
):
    channel = request.getfixturevalue(fixture)

    html = admin_client.get(f"/channels/{channel.pk}/").content.decode()

    path = f"/webhooks/{platform}/{channel.pk}/"
    assert f"http://testserver{path}" in html
    assert resolve(path).func == view


def test_the_edit_page_of_a_demo_channel_has_no_webhook_url(admin_client, world):
    html = admin_client.get(f"/channels/{world.channel_a.pk}/").content.decode()

    assert "/webhooks/" not in html
    assert "Webhook URL" not in html


# --- Who may use these pages ------------------------------------------------------------


def _requests(world, letter):
    edit = f"/channels/{world.channel_a.pk}/"
    return [
        ("get", "/channels/", None),
        ("get", "/channels/new/", None),
        ("post", "/channels/new/", x_form(world)),
        ("get", edit, None),
        ("post", edit, edit_form(world.channel_a, name="Hijacked")),
        ("get", "/channels/dead-letters/", None),
        ("post", f"/channels/dead-letters/{letter.pk}/retry/", None),
        ("post", f"/channels/dead-letters/{letter.pk}/discard/", None),
    ]


@pytest.mark.parametrize("persona", ["manager", "agent_a", "agent_b"])
def test_only_admins_may_use_the_channel_pages(login, world, persona):
    letter = _letter(world.channel_a, raw=_demo_post("demo-dl-6"))
    client = login(world.persona(persona))

    for method, url, data in _requests(world, letter):
        response = getattr(client, method)(url, data or {})
        assert response.status_code == 403, (method, url)

    assert not ChannelAccount.objects.filter(name__in=["Acme Support on X", "Hijacked"]).exists()
    letter.refresh_from_db()
    assert letter.status == DeadLetterStatus.NEW
    assert not Message.objects.filter(external_id="demo-dl-6").exists()


def test_anonymous_visitors_are_sent_to_log_in(login, world):
    letter = _letter(world.channel_a)
    client = login(None)

    for method, url, data in _requests(world, letter):
        response = getattr(client, method)(url, data or {})
        assert response.status_code == 302, (method, url)
        assert response.url.startswith("/accounts/login/"), (method, url)


def test_an_admin_may_open_every_channel_page(admin_client, world):
    for url in (
        "/channels/",
        "/channels/new/",
        f"/channels/{world.channel_a.pk}/",
        "/channels/dead-letters/",
    ):
        assert admin_client.get(url).status_code == 200, url


def test_the_channel_list_costs_a_fixed_number_of_queries(
    admin_client, world, django_assert_max_num_queries
):
    for n in range(8):
        channel = ChannelFactory(name=f"Extra {n}", default_team=world.team_b)
        _letter(channel, created_at=timezone.now() - timedelta(minutes=n))

    with django_assert_max_num_queries(10):
        response = admin_client.get("/channels/")

    assert len(response.context["channels"]) == 10
