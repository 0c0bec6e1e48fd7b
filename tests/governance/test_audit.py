"""The audit log: what is recorded (by whom, from where, before and after), that secrets never
are, the admins' page and its CSV export, and that nothing can change or delete an entry."""

import csv
import io
import json
from datetime import timedelta

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import DatabaseError, connection, transaction
from django.forms import MultiWidget
from django.http import StreamingHttpResponse
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from channels_ingest.models import ChannelAccount, DeadLetter, DeadLetterStatus
from channels_ingest.services import message_fail, stalled_sends_fail
from contacts.models import ContactMerge
from conversations.escalations import escalation_answer, escalation_open
from conversations.models import (
    BusinessCalendar,
    DeliveryStatus,
    Direction,
    Escalation,
    Message,
    MessageKind,
    RoutingRule,
    SlaPolicy,
    WebhookEndpoint,
)
from governance.audit import AuditedModelAdmin, audit_record, model_snapshot
from governance.audit_views import PAGE_SIZE
from governance.models import AuditEntry, ChannelAccess, Role, TeamMembership
from tests.factories import (
    BusinessCalendarFactory,
    ChannelFactory,
    ContactFactory,
    ConversationFactory,
    DepartmentFactory,
    IdentityFactory,
    MessageFactory,
    RoutingRuleFactory,
    SlaPolicyFactory,
    TagFactory,
    TeamFactory,
    UserFactory,
)
from tests.governance.test_access import _routes, _url

pytestmark = pytest.mark.django_db

IP = "203.0.113.7"
PAGE_TOKEN = "EAAGpage-access-token-value-R2d2"
APP_SECRET = "facebook-app-secret-value-Yt8u"
NEW_APP_SECRET = "rotated-app-secret-value-Qp4z"
HOOK_SECRET = "hook-signing-secret-Zx81"
PASSWORD = "a-new-Password-for-tests-913"


def _only(action: str, **filters) -> AuditEntry:
    found = list(AuditEntry.objects.filter(action=action, **filters))
    assert len(found) == 1, f"{action}: {len(found)} entries"
    return found[0]


def _everything_recorded() -> str:
    return json.dumps(
        list(
            AuditEntry.objects.values(
                "actor_name", "action", "object_repr", "object_id", "before", "after", "data"
            )
        )
    )


@pytest.fixture
def site_admin(world, login):
    """Alice in the Django admin (staff, with the admin role's permissions)."""
    world.admin.is_staff = True
    world.admin.save()
    return login(world.admin)


def _admin_form(response) -> dict:
    """What a Django admin change form posts back unchanged."""
    form = response.context["adminform"].form
    data: dict = {}
    for field in form:
        if field.field.disabled:
            continue
        value = field.value()
        widget = field.field.widget
        if isinstance(widget, MultiWidget):
            for n, part in enumerate(widget.decompress(value) or []):
                data[f"{field.html_name}_{n}"] = "" if part is None else str(part)
        elif isinstance(value, bool):
            if value:
                data[field.html_name] = "on"
        elif isinstance(value, list | tuple):
            data[field.html_name] = [str(v) for v in value]
        elif value is not None:
            data[field.html_name] = str(value)
    for formset in response.context.get("inline_admin_formsets", []):
        management = formset.formset.management_form
        for name in management.fields:
            data[f"{management.prefix}-{name}"] = management[name].value()
    return data


# --- Logins ------------------------------------------------------------------------------


def test_a_login_and_a_logout_are_recorded_with_the_address(client, world):
    response = client.post(
        "/accounts/login/", {"username": "bob", "password": "pw-for-tests"}, REMOTE_ADDR=IP
    )
    assert response.status_code == 302
    login = _only("auth.login", actor=world.agent_a)
    assert (login.ip, login.object_id, login.actor_name) == (IP, str(world.agent_a.pk), "bob")

    client.post("/accounts/logout/", REMOTE_ADDR=IP)
    logout = _only("auth.logout", actor=world.agent_a)
    assert logout.ip == IP


def test_a_failed_login_records_the_name_tried_never_the_password(client, world):
    client.post(
        "/accounts/login/", {"username": "bob", "password": "wrong-guess-481"}, REMOTE_ADDR=IP
    )
    client.post("/accounts/login/", {"username": "nobody", "password": "x"}, REMOTE_ADDR=IP)

    failed = _only("auth.login_failed", object_repr="bob")
    assert (failed.actor, failed.ip, failed.object_id) == (None, IP, str(world.agent_a.pk))
    assert failed.data == {"username": "bob"}
    unknown = _only("auth.login_failed", object_repr="nobody")
    assert unknown.object_id == ""
    assert "wrong-guess-481" not in _everything_recorded()
    assert not AuditEntry.objects.filter(action="auth.login").exists()


# --- Users, roles, teams and channel access (through the Django admin) ---------------------


def test_a_role_change_in_the_admin_is_one_entry_with_the_roles_before_and_after(site_admin, world):
    url = f"/admin/auth/user/{world.agent_a.pk}/change/"
    data = _admin_form(site_admin.get(url))
    data["groups"] = [str(Group.objects.get(name=Role.MANAGER).pk)]
    start = AuditEntry.objects.latest("id").pk

    response = site_admin.post(url, data, REMOTE_ADDR=IP)

    assert response.status_code == 302
    entry = _only("user.roles_changed", object_id=str(world.agent_a.pk), id__gt=start)
    assert (entry.actor, entry.ip) == (world.admin, IP)
    assert (entry.before, entry.after) == ({"roles": ["agent"]}, {"roles": ["manager"]})
    # Nothing else about bob changed, and the generic admin entry is not doubled.
    assert list(AuditEntry.objects.filter(id__gt=start).values_list("action", flat=True)) == [
        "user.roles_changed"
    ]


def test_deactivating_a_user_in_the_admin_records_the_flag_before_and_after(site_admin, world):
    url = f"/admin/auth/user/{world.agent_a.pk}/change/"
    data = _admin_form(site_admin.get(url))
    del data["is_active"]

    assert site_admin.post(url, data, REMOTE_ADDR=IP).status_code == 302

    entry = _only("user.deactivated")
    assert (entry.actor, entry.ip, entry.object_id) == (world.admin, IP, str(world.agent_a.pk))
    assert (entry.before, entry.after) == ({"is_active": True}, {"is_active": False})


def test_a_user_created_in_the_admin_is_recorded_without_the_password(site_admin, world):
    response = site_admin.post(
        "/admin/auth/user/add/",
        {
            "username": "dora",
            "password1": PASSWORD,
            "password2": PASSWORD,
            "usable_password": "true",
        },
        REMOTE_ADDR=IP,
    )

    assert response.status_code == 302
    entry = _only("user.created", object_repr="dora")
    assert (entry.actor, entry.ip) == (world.admin, IP)
    assert entry.after["username"] == "dora" and entry.after["is_active"] is True
    assert "password" not in entry.after
    recorded = _everything_recorded()
    assert PASSWORD not in recorded and "md5$" not in recorded


def test_staff_and_superuser_flags_are_recorded(world):
    world.agent_b.is_staff = True
    world.agent_b.is_superuser = True
    world.agent_b.save()

    entry = _only("user.updated", object_id=str(world.agent_b.pk))
    assert entry.before == {"is_staff": False, "is_superuser": False}
    assert entry.after == {"is_staff": True, "is_superuser": True}


def test_a_login_alone_records_no_user_change(client, world):
    start = AuditEntry.objects.latest("id").pk
    client.post("/accounts/login/", {"username": "bob", "password": "pw-for-tests"})
    assert list(AuditEntry.objects.filter(id__gt=start).values_list("action", flat=True)) == [
        "auth.login"
    ]


def test_a_password_change_is_recorded_without_the_password(login, world):
    client = login(world.agent_a)
    start = AuditEntry.objects.latest("id").pk
    client.post(
        "/accounts/password/",
        {"old_password": "pw-for-tests", "new_password1": PASSWORD, "new_password2": PASSWORD},
        REMOTE_ADDR=IP,
    )
    entry = _only("user.password_changed", id__gt=start)
    assert (entry.ip, entry.object_id) == (IP, str(world.agent_a.pk))
    assert PASSWORD not in _everything_recorded()


def test_with_the_middleware_a_change_on_the_users_own_page_names_them(login, world, settings):
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "governance.audit.AuditContextMiddleware"]
    client = login(world.agent_a)
    start = AuditEntry.objects.latest("id").pk
    client.post(
        "/accounts/password/",
        {"old_password": "pw-for-tests", "new_password1": PASSWORD, "new_password2": PASSWORD},
    )
    assert _only("user.password_changed", id__gt=start).actor == world.agent_a


def test_team_membership_changes_in_the_admin_are_recorded(site_admin, world):
    team = TeamFactory(name="Team C")
    response = site_admin.post(
        "/admin/governance/teammembership/add/",
        {"team": str(team.pk), "user": str(world.agent_b.pk), "capacity": "4"},
        REMOTE_ADDR=IP,
    )
    assert response.status_code == 302
    membership = TeamMembership.objects.get(team=team)
    mine = {"object_id": str(membership.pk)}
    created = _only("team_membership.created", **mine)
    assert (created.actor, created.ip, created.object_id) == (world.admin, IP, str(membership.pk))
    assert created.after == {"team": team.pk, "user": world.agent_b.pk, "capacity": 4}

    url = f"/admin/governance/teammembership/{membership.pk}/change/"
    data = _admin_form(site_admin.get(url))
    data["capacity"] = "6"
    site_admin.post(url, data, REMOTE_ADDR=IP)
    updated = _only("team_membership.updated", **mine)
    assert (updated.before, updated.after) == ({"capacity": 4}, {"capacity": 6})

    site_admin.post(
        f"/admin/governance/teammembership/{membership.pk}/delete/", {"post": "yes"}, REMOTE_ADDR=IP
    )
    deleted = _only("team_membership.deleted", **mine)
    assert (deleted.actor, deleted.object_id) == (world.admin, str(membership.pk))
    assert deleted.object_repr == f"{world.agent_b} in Team C"
    # The membership admin leaves the recording to the model signals: no second entries.
    assert AuditEntry.objects.filter(action__startswith="team_membership.", **mine).count() == 3


def test_channel_access_changes_are_recorded(site_admin, world):
    access = ChannelAccess.objects.get(channel=world.channel_a, team=world.team_a)
    url = f"/admin/governance/channelaccess/{access.pk}/change/"
    data = _admin_form(site_admin.get(url))
    del data["can_reply"]

    site_admin.post(url, data, REMOTE_ADDR=IP)

    entry = _only("channel_access.updated")
    assert (entry.actor, entry.ip) == (world.admin, IP)
    assert (entry.before, entry.after) == ({"can_reply": True}, {"can_reply": False})


def test_team_changes_outside_the_admin_are_recorded_without_an_actor(world):
    access = ChannelAccess.objects.create(channel=world.channel_b, team=world.team_a)
    pk = str(access.pk)
    access.delete()

    created = _only("channel_access.created", object_id=pk)
    assert created.actor is None and created.after["can_reply"] is True
    assert _only("channel_access.deleted", object_id=pk).before["team"] == world.team_a.pk


def test_roles_added_outside_the_admin_are_recorded(world):
    start = AuditEntry.objects.count() and AuditEntry.objects.latest("id").pk
    world.agent_b.groups.add(Group.objects.get(name=Role.MANAGER))

    entry = _only("user.roles_changed", object_id=str(world.agent_b.pk), id__gt=start)
    assert (entry.before, entry.after) == ({"roles": ["agent"]}, {"roles": ["agent", "manager"]})


# --- Channels and their credentials --------------------------------------------------------


def _facebook_form(world, **overrides) -> dict[str, str]:
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
        "bearer_token": "",
        "consumer_key": "",
        "consumer_secret": "",
        "access_token": "",
        "access_token_secret": "",
        "page_access_token": PAGE_TOKEN,
        "app_secret": APP_SECRET,
        "verify_token": "",
    }
    data.update(overrides)
    return data


def test_a_channel_created_and_updated_records_settings_and_only_credential_names(login, world):
    client = login(world.admin)
    assert client.post("/channels/new/", _facebook_form(world), REMOTE_ADDR=IP).status_code == 302
    channel = ChannelAccount.objects.get(name="Acme Page")
    created = _only("channel.created")
    assert (created.actor, created.ip, created.object_id) == (world.admin, IP, str(channel.pk))
    assert created.after["handle"] == "Acme" and created.after["mode"] == "engage"
    assert "credentials" not in created.after
    assert created.data["secrets_changed"] == [
        "credentials.app_secret",
        "credentials.page_access_token",
    ]

    form = _facebook_form(world, handle="AcmeHelp", page_access_token="", app_secret=NEW_APP_SECRET)
    assert client.post(f"/channels/{channel.pk}/", form, REMOTE_ADDR=IP).status_code == 302
    updated = _only("channel.updated")
    assert (updated.actor, updated.ip) == (world.admin, IP)
    assert (updated.before, updated.after) == ({"handle": "Acme"}, {"handle": "AcmeHelp"})
    assert updated.data == {"secrets_changed": ["credentials.app_secret"]}

    recorded = _everything_recorded()
    for secret in (PAGE_TOKEN, APP_SECRET, NEW_APP_SECRET):
        assert secret not in recorded


def test_saving_a_channel_unchanged_records_nothing(login, world):
    client = login(world.admin)
    client.post("/channels/new/", _facebook_form(world))
    channel = ChannelAccount.objects.get(name="Acme Page")
    form = _facebook_form(world, page_access_token="", app_secret="")
    client.post(f"/channels/{channel.pk}/", form)
    assert not AuditEntry.objects.filter(action="channel.updated").exists()


def test_channel_changes_and_deletion_in_the_django_admin_are_recorded(site_admin, world):
    channel = ChannelFactory(name="Old channel", credentials={"app_secret": APP_SECRET})
    url = f"/admin/channels_ingest/channelaccount/{channel.pk}/change/"
    data = _admin_form(site_admin.get(url))
    data["handle"] = "@renamed"

    assert site_admin.post(url, data, REMOTE_ADDR=IP).status_code == 302
    updated = _only("channel.updated")
    assert (updated.actor, updated.ip, updated.data["via"]) == (world.admin, IP, "admin")
    assert (updated.before, updated.after) == ({"handle": "@acme"}, {"handle": "@renamed"})

    response = site_admin.post(
        f"/admin/channels_ingest/channelaccount/{channel.pk}/delete/",
        {"post": "yes"},
        REMOTE_ADDR=IP,
    )
    assert response.status_code == 302
    deleted = _only("channel.deleted")
    assert (deleted.actor, deleted.object_id, deleted.object_repr) == (
        world.admin,
        str(channel.pk),
        "Old channel",
    )
    assert deleted.before["handle"] == "@renamed"
    assert APP_SECRET not in _everything_recorded()


def test_other_models_changed_in_the_django_admin_are_recorded(site_admin, world):
    tag = TagFactory(name="refund")
    url = f"/admin/conversations/tag/{tag.pk}/change/"
    data = _admin_form(site_admin.get(url))
    data["name"] = "refunds"

    site_admin.post(url, data, REMOTE_ADDR=IP)

    entry = _only("tag.updated")
    assert (entry.actor, entry.ip) == (world.admin, IP)
    assert (entry.before, entry.after) == ({"name": "refund"}, {"name": "refunds"})


def test_a_contact_changed_in_the_django_admin_is_recorded_by_field_names_only(site_admin, world):
    # The admin's form shows times to the second.
    seen = timezone.now().replace(microsecond=0)
    contact = ContactFactory(
        name="Zebulon Quist",
        email="zq@example.com",
        source="manual",
        first_seen_at=seen,
        last_seen_at=seen,
    )
    url = f"/admin/contacts/contact/{contact.pk}/change/"
    data = _admin_form(site_admin.get(url))
    data["email"] = "zebulon@example.com"

    assert site_admin.post(url, data, REMOTE_ADDR=IP).status_code == 302

    entry = _only("contact.updated")
    assert (entry.actor, entry.ip, entry.object_repr) == (world.admin, IP, f"contact #{contact.pk}")
    assert (entry.before, entry.after, entry.data) == (
        {},
        {},
        {"fields": ["email"], "via": "admin"},
    )
    recorded = _everything_recorded()
    assert "Zebulon" not in recorded and "zq@example.com" not in recorded


def test_every_model_admin_is_audited():
    for model, model_admin in admin.site._registry.items():
        assert isinstance(model_admin, AuditedModelAdmin), model


# --- Routing rules, SLA policies, webhook endpoints, capacities -----------------------------


def test_a_rule_toggled_and_deleted_is_recorded(login, world):
    rule = RoutingRuleFactory(name="Refunds")
    client = login(world.admin)

    client.post(f"/routing/rules/{rule.pk}/toggle/", {"active": "0"}, REMOTE_ADDR=IP)
    client.post(f"/routing/rules/{rule.pk}/delete/", REMOTE_ADDR=IP)

    toggled = _only("routing_rule.updated")
    assert (toggled.actor, toggled.ip, toggled.object_repr) == (world.admin, IP, "Refunds")
    assert (toggled.before, toggled.after) == ({"is_active": True}, {"is_active": False})
    deleted = _only("routing_rule.deleted")
    assert (deleted.object_id, deleted.before["name"]) == (str(rule.pk), "Refunds")
    assert not RoutingRule.objects.exists()


def test_a_refused_deletion_records_nothing(login, world):
    calendar = BusinessCalendarFactory(name="Office hours")
    SlaPolicyFactory(name="Standard", calendar=calendar)
    login(world.admin).post(f"/routing/hours/{calendar.pk}/delete/")
    assert BusinessCalendar.objects.filter(pk=calendar.pk).exists()
    assert not AuditEntry.objects.filter(action="business_hours.deleted").exists()


def test_an_sla_policy_created_and_edited_is_recorded(login, world):
    client = login(world.admin)
    form = {
        "name": "Urgent",
        "priority": "4",
        "channel": "",
        "calendar": "",
        "first_response_amount": "2",
        "first_response_unit": "hours",
        "next_response_unit": "hours",
        "resolution_unit": "hours",
        "at_risk_minutes": "20",
        "is_active": "on",
    }
    client.post("/routing/sla/new/", form, REMOTE_ADDR=IP)
    policy = SlaPolicy.objects.get(name="Urgent")
    client.post(
        f"/routing/sla/{policy.pk}/", {**form, "first_response_amount": "3"}, REMOTE_ADDR=IP
    )

    created = _only("sla_policy.created")
    assert (created.actor, created.ip) == (world.admin, IP)
    assert created.after["first_response_minutes"] == 120
    updated = _only("sla_policy.updated")
    assert (updated.before, updated.after) == (
        {"first_response_minutes": 120},
        {"first_response_minutes": 180},
    )


def test_business_hours_record_their_holidays(login, world):
    client = login(world.admin)
    client.post(
        "/routing/hours/new/",
        {
            "name": "Office",
            "time_zone": "Europe/Berlin",
            "d0_0_opens": "09:00",
            "d0_0_closes": "17:00",
            "holidays-0-date": "2026-12-25",
            "holidays-0-name": "Christmas",
        },
        REMOTE_ADDR=IP,
    )
    entry = _only("business_hours.created")
    assert entry.after["holidays"] == ["2026-12-25 Christmas"]
    assert entry.after["weekly_hours"] == {"0": [["09:00", "17:00"]]}


def test_an_escalation_path_records_its_levels_and_a_moved_rule_its_position(login, world):
    department = DepartmentFactory(name="Tier 2", team=world.team_a)
    first, second = RoutingRuleFactory(name="First"), RoutingRuleFactory(name="Second")
    RoutingRule.objects.filter(pk=first.pk).update(position=0)
    RoutingRule.objects.filter(pk=second.pk).update(position=1)
    client = login(world.admin)
    client.post(
        "/routing/paths/new/",
        {"name": "Complaints", "levels-0-target": f"department:{department.pk}"},
        REMOTE_ADDR=IP,
    )
    client.post(f"/routing/rules/{second.pk}/move/", {"direction": "up"}, REMOTE_ADDR=IP)

    path = _only("escalation_path.created")
    assert (path.actor, path.ip) == (world.admin, IP)
    assert path.after["levels"] == ["Complaints level 1: Tier 2"]
    moved = _only("routing_rule.updated", object_id=str(second.pk))
    assert (moved.before, moved.after) == ({"position": 1}, {"position": 0})
    # The rule it passed moved too: the running order changed for both.
    passed = _only("routing_rule.updated", object_id=str(first.pk))
    assert (passed.before, passed.after) == ({"position": 0}, {"position": 1})
    assert (passed.actor, passed.ip) == (world.admin, IP)


def test_a_two_factor_devices_key_is_never_recorded(world):
    from django_otp.plugins.otp_totp.models import TOTPDevice

    device = TOTPDevice.objects.create(user=world.admin, name="phone")
    assert "key" not in model_snapshot(device) and device.key


def test_a_webhook_endpoint_secret_is_named_never_recorded(login, world):
    client = login(world.admin)
    form = {"name": "Ops", "url": "https://ops.example.com/hook", "is_active": "on"}
    client.post("/routing/endpoints/new/", {**form, "new_secret": HOOK_SECRET}, REMOTE_ADDR=IP)
    endpoint = WebhookEndpoint.objects.get(name="Ops")
    client.post(f"/routing/endpoints/{endpoint.pk}/", {**form, "new_secret": "another-one-77"})
    client.post(f"/routing/endpoints/{endpoint.pk}/", {**form, "new_secret": ""})

    created = _only("webhook_endpoint.created")
    assert created.data == {"secrets_changed": ["secret"]} and "secret" not in created.after
    updated = _only("webhook_endpoint.updated")
    assert (updated.before, updated.after) == ({}, {})
    assert updated.data == {"secrets_changed": ["secret"]}
    recorded = _everything_recorded()
    assert HOOK_SECRET not in recorded and "another-one-77" not in recorded


def test_a_department_deleted_is_recorded(login, world):
    department = DepartmentFactory(name="Billing", team=world.team_a)
    login(world.admin).post(f"/routing/departments/{department.pk}/delete/", REMOTE_ADDR=IP)
    entry = _only("department.deleted")
    assert (entry.actor, entry.ip, entry.object_repr) == (world.admin, IP, "Billing")


def test_capacities_are_recorded_per_member(login, world):
    bob = TeamMembership.objects.get(user=world.agent_a)
    fields = {f"capacity_{m.pk}": "" for m in TeamMembership.objects.all()}
    login(world.admin).post(
        "/routing/assignment/", {**fields, f"capacity_{bob.pk}": "3"}, REMOTE_ADDR=IP
    )
    entry = _only("capacity.updated")
    assert (entry.actor, entry.ip, entry.object_id) == (world.admin, IP, str(bob.pk))
    assert (entry.before, entry.after) == ({"capacity": None}, {"capacity": 3})


def test_model_snapshot_leaves_secrets_out_and_names_relations(world):
    endpoint = WebhookEndpoint.objects.create(name="Hook", url="https://x.example", secret="s3")
    assert "secret" not in model_snapshot(endpoint)
    assert model_snapshot(endpoint, ["name", "secret"]) == {"name": "Hook"}
    assert model_snapshot(world.team_a, ["name", "members"]) == {
        "name": "Team A",
        "members": ["bob", "mona"],
    }


# --- Sends, escalations, merges, exports and imports, dead letters ---------------------------


def test_a_reply_sent_is_recorded_without_its_text(
    login, world, django_capture_on_commit_callbacks
):
    client = login(world.agent_a)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            f"/inbox/{world.conversation_a.pk}/reply/",
            {"body": "Your refund is on its way"},
            REMOTE_ADDR=IP,
        )
    reply = Message.objects.get(conversation=world.conversation_a, direction=Direction.OUT)
    assert reply.delivery_status == DeliveryStatus.SENT
    entry = _only("message.sent")
    assert (entry.actor, entry.object_id) == (world.agent_a, str(reply.pk))
    assert entry.data == {
        "channel": world.channel_a.pk,
        "conversation": world.conversation_a.pk,
        "external_id": reply.external_id,
    }
    assert "refund is on its way" not in _everything_recorded()


def _queued_reply(world, **fields):
    return MessageFactory(
        conversation=world.conversation_a,
        direction=Direction.OUT,
        kind=MessageKind.REPLY,
        author_user=world.agent_a,
        delivery_status=DeliveryStatus.QUEUED,
        body="Secret customer details",
        **fields,
    )


def test_a_failed_send_is_recorded_once(world):
    reply = _queued_reply(world)
    message_fail(message_id=reply.pk, reason="The platform refused it")
    message_fail(message_id=reply.pk, reason="again")  # already failed: nothing to record

    entry = _only("message.failed")
    assert (entry.actor, entry.object_id) == (world.agent_a, str(reply.pk))
    assert entry.data["reason"] == "The platform refused it"
    assert entry.data["conversation"] == world.conversation_a.pk
    assert "Secret customer details" not in _everything_recorded()


def test_a_stalled_send_is_recorded_as_failed(world):
    reply = _queued_reply(
        world,
        send_started_at=timezone.now() - timedelta(hours=1),
    )
    Message.objects.filter(pk=reply.pk).update(delivery_status=DeliveryStatus.SENDING)
    assert stalled_sends_fail() == 1
    assert _only("message.failed").object_id == str(reply.pk)


def test_escalations_opened_answered_and_withdrawn_are_recorded(login, world):
    department = DepartmentFactory(name="Tier 2", team=world.team_b)
    client = login(world.agent_a)
    client.post(
        f"/escalations/{world.conversation_a.pk}/escalate/",
        {"target": f"department:{department.pk}", "reason": "Refund above the limit"},
        REMOTE_ADDR=IP,
    )
    escalation = Escalation.objects.get(conversation=world.conversation_a)
    opened = _only("escalation.opened")
    assert (opened.actor, opened.ip, opened.object_id) == (world.agent_a, IP, str(escalation.pk))
    assert opened.data["target"] == "Tier 2" and opened.data["trigger"] == "agent"

    client.post(f"/escalations/{escalation.pk}/withdraw/", REMOTE_ADDR=IP)
    withdrawn = _only("escalation.withdrawn")
    assert (withdrawn.actor, withdrawn.ip) == (world.agent_a, IP)

    again = escalation_open(
        conversation=world.conversation_a,
        trigger="agent",
        actor=world.manager,
        department=department,
    )
    escalation_answer(escalation=again, answer="Done", outcome="", answered_by=world.agent_b)
    answered = _only("escalation.answered")
    assert (answered.actor, answered.object_id) == (world.agent_b, str(again.pk))
    assert "Done" not in json.dumps(answered.data)


def test_merges_undo_and_identity_moves_are_recorded(login, world):
    kept = world.conversation_a.contact
    other = IdentityFactory().contact
    ConversationFactory(channel=world.channel_a, contact=other)
    client = login(world.manager)

    client.post(f"/contacts/{kept.pk}/merge/", {"other": str(other.pk)}, REMOTE_ADDR=IP)
    merged = _only("contact.merged")
    assert (merged.actor, merged.ip, merged.object_id) == (world.manager, IP, str(other.pk))
    assert (merged.before, merged.after) == ({"merged_into": None}, {"merged_into": kept.pk})
    assert merged.data["identities"] == 1 and merged.data["conversations"] == 1

    merge = ContactMerge.objects.get()
    client.post(f"/contacts/merges/{merge.pk}/undo/", REMOTE_ADDR=IP)
    undone = _only("contact.merge_undone")
    assert (undone.actor, undone.ip, undone.after) == (world.manager, IP, {"merged_into": None})

    identity = other.identities.get()
    client.post(f"/contacts/identities/{identity.pk}/move/", {"to": str(kept.pk)}, REMOTE_ADDR=IP)
    moved = _only("identity.moved")
    assert (moved.actor, moved.ip, moved.object_id) == (world.manager, IP, str(identity.pk))
    assert (moved.before, moved.after) == ({"contact": other.pk}, {"contact": kept.pk})


def test_a_contacts_export_records_who_the_filter_and_the_rows(login, world):
    ContactFactory(name="Acme Buyer", source="manual")
    response = login(world.manager).get("/contacts/export.csv?q=Acme", REMOTE_ADDR=IP)
    rows = b"".join(response.streaming_content).decode("utf-8-sig").splitlines()

    entry = _only("contacts.exported")
    assert (entry.actor, entry.ip) == (world.manager, IP)
    assert entry.data == {"search": "Acme", "rows": len(rows) - 1}


def test_a_contacts_import_records_the_upload_and_the_outcome(
    login, world, django_capture_on_commit_callbacks
):
    client = login(world.manager)
    raw = b"name,email\nDana Reyes,dana@example.com\nEli Moss,not-an-email\n"
    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            "/contacts/imports/",
            {"file": SimpleUploadedFile("people.csv", raw, "text/csv")},
            REMOTE_ADDR=IP,
        )
    started = _only("contacts.import_started")
    assert (started.actor, started.ip) == (world.manager, IP)
    assert started.data["file_name"] == "people.csv" and started.data["rows"] == 2
    finished = _only("contacts.imported")
    assert finished.actor == world.manager
    assert (finished.data["created"], finished.data["skipped"]) == (1, 1)


def test_dead_letters_retried_and_discarded_are_recorded(login, world):
    first, second = (
        DeadLetter.objects.create(channel=world.channel_a, source="poll", raw="{}", error="bad")
        for _ in range(2)
    )
    client = login(world.admin)
    client.post(f"/channels/dead-letters/{first.pk}/retry/", REMOTE_ADDR=IP)
    client.post(f"/channels/dead-letters/{second.pk}/discard/", REMOTE_ADDR=IP)

    retried = _only("dead_letter.retried")
    assert (retried.actor, retried.ip, retried.object_id) == (world.admin, IP, str(first.pk))
    first.refresh_from_db()
    expected = "stored" if first.status == DeadLetterStatus.RETRIED else "still unreadable"
    assert retried.data["outcome"] == expected
    discarded = _only("dead_letter.discarded")
    assert (discarded.actor, discarded.ip, discarded.object_id) == (world.admin, IP, str(second.pk))


# --- The page -------------------------------------------------------------------------------

ACCESS = {"admin": 200, "manager": 403, "agent_a": 403, "agent_b": 403}


@pytest.mark.parametrize("persona", ACCESS)
@pytest.mark.parametrize("url", ["/governance/audit/", "/governance/audit/export.csv"])
def test_the_audit_log_is_for_admins(login, world, persona, url):
    assert login(world.persona(persona)).get(url).status_code == ACCESS[persona]


@pytest.mark.parametrize("url", ["/governance/audit/", "/governance/audit/export.csv"])
def test_anonymous_visitors_are_sent_to_log_in(client, world, url):
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def _entries(n: int, **fields) -> None:
    for i in range(n):
        audit_record(action=fields.pop("action", f"test.thing{i % 3}"), **fields)


def test_the_page_shows_entries_newest_first_with_their_details(login, world):
    audit_record(action="test.older", object_type="x", object_repr="first thing")
    audit_record(
        action="test.newer",
        actor=world.manager,
        object_type="x",
        object_id="7",
        object_repr="second thing",
        before={"handle": "@old"},
        after={"handle": "@new"},
        rows=12,
    )
    page = login(world.admin).get("/governance/audit/", REMOTE_ADDR=IP).content.decode()

    assert page.index("second thing") < page.index("first thing")
    assert "mona" in page and "@old" in page and "@new" in page and "rows" in page
    assert "<details>" in page


def _shown(response) -> list[str]:
    return [entry.action for entry, _ in response.context["rows"]]


def test_the_filters_narrow_the_entries(login, world):
    audit_record(
        action="channel.updated",
        actor=world.manager,
        object_type="channels.x",
        object_id="5",
        object_repr="Acme Page",
    )
    audit_record(action="channel.created", object_type="channels.x", object_id="6")
    audit_record(action="contact.merged", actor=world.manager, object_repr="Contact #3")
    client = login(world.admin)

    def shown(**params) -> set[str]:
        return set(_shown(client.get("/governance/audit/", params)))

    assert shown(action="channel.") == {"channel.updated", "channel.created"}
    assert shown(actor="MONA") == {"channel.updated", "contact.merged"}
    assert shown(object_type="channels.x", object_id="6") == {"channel.created"}
    assert shown(q="acme") == {"channel.updated"}
    today = timezone.localdate().isoformat()
    assert "contact.merged" in shown(since=today, until=today)
    assert not shown(until=(timezone.localdate() - timedelta(days=3)).isoformat())
    # A filter that does not parse is shown as an error and ignored.
    response = client.get("/governance/audit/", {"since": "not a date"})
    assert response.status_code == 200 and response.context["form"].errors


def test_pages_hold_a_hundred_entries_at_a_fixed_number_of_queries(
    login, world, django_assert_max_num_queries
):
    AuditEntry.objects.bulk_create(
        AuditEntry(action=f"test.n{i}", object_repr=f"entry {i}") for i in range(PAGE_SIZE * 2 + 5)
    )
    client = login(world.admin)
    client.get("/governance/audit/")  # the session and role settle
    counts, seen = [], []
    url = "/governance/audit/?action=test."
    for _ in range(3):
        # Session, user, (sign-in settings,) role, the entries; the navigation's two counts.
        with django_assert_max_num_queries(7), CaptureQueriesContext(connection) as queries:
            response = client.get(url)
        counts.append(len(queries))
        seen += _shown(response)
        older = response.context["older"]
        url = f"/governance/audit/?{older}" if older else ""
    assert url == ""
    assert len(seen) == len(set(seen)) == PAGE_SIZE * 2 + 5
    assert seen[0] == f"test.n{PAGE_SIZE * 2 + 4}"  # newest first
    assert counts[0] == counts[1] == counts[2]


# --- The export -----------------------------------------------------------------------------


def _csv(response) -> list[list[str]]:
    assert isinstance(response, StreamingHttpResponse)
    text = b"".join(response.streaming_content).decode("utf-8-sig")  # type: ignore[arg-type]
    return list(csv.reader(io.StringIO(text)))


def test_the_export_holds_the_filtered_entries_and_is_itself_audited(login, world):
    audit_record(
        action="channel.updated",
        actor=world.manager,
        object_repr="Acme Page",
        before={"handle": "@a"},
        after={"handle": "@b"},
    )
    audit_record(action="contact.merged", object_repr="Contact #3")
    client = login(world.admin)

    rows = _csv(client.get("/governance/audit/export.csv?action=channel.", REMOTE_ADDR=IP))

    assert rows[0][:4] == ["at", "actor", "ip", "action"]
    assert len(rows) == 2
    assert rows[1][1:7] == ["mona", "", "channel.updated", "", "", "Acme Page"]
    assert json.loads(rows[1][7]) == {"handle": "@a"}
    exported = _only("audit.exported")
    assert (exported.actor, exported.ip) == (world.admin, IP)
    assert exported.data == {"filters": {"action": "channel."}, "rows": 1}


def test_the_export_quotes_cells_a_spreadsheet_would_run(login, world):
    for name in ('=HYPERLINK("http://evil")', "+1+2", "-3+4", "@SUM(A1)", "plain"):
        audit_record(action="auth.login_failed", object_repr=name, username=name)
    rows = _csv(login(world.admin).get("/governance/audit/export.csv?action=auth.login_failed"))
    shown = sorted(row[6] for row in rows[1:])
    assert shown == sorted(['\'=HYPERLINK("http://evil")', "'+1+2", "'-3+4", "'@SUM(A1)", "plain"])


# --- Nobody changes or deletes an entry ---------------------------------------------------


def _state() -> dict[int, tuple]:
    return {
        row[0]: row
        for row in AuditEntry.objects.values_list(
            "id", "at", "actor_id", "ip", "action", "object_id", "before", "after", "data"
        )
    }


def test_no_page_endpoint_or_admin_url_changes_or_deletes_an_entry(site_admin, world):
    entry = audit_record(action="test.kept", actor=world.manager, object_repr="keep me")
    before = _state()
    client = site_admin
    client.raise_request_exception = False
    urls = [_url(route, entry.pk) for name, route in _routes() if name != "logout"]
    urls += [
        f"/admin/governance/auditentry/{entry.pk}/change/",
        f"/admin/governance/auditentry/{entry.pk}/delete/",
        f"/admin/governance/auditentry/{entry.pk}/history/",
        "/admin/governance/auditentry/add/",
        "/admin/governance/auditentry/",
    ]
    forged = {
        "action": "changed",
        "object_repr": "changed",
        "post": "yes",
        "_selected_action": [str(pk) for pk in before],
    }
    for url in urls:
        for method in ("post", "put", "patch", "delete"):
            client.force_login(world.admin)
            getattr(client, method)(url, forged)
    after = _state()
    assert {pk: after[pk] for pk in before} == before


def test_the_django_admin_shows_entries_but_refuses_to_add_change_or_delete(site_admin, world):
    entry = audit_record(action="test.kept")
    base = "/admin/governance/auditentry/"
    assert site_admin.get(base).status_code == 200
    assert site_admin.get(f"{base}{entry.pk}/change/").status_code == 200
    assert site_admin.post(f"{base}{entry.pk}/change/", {"action": "x"}).status_code == 403
    assert site_admin.get(f"{base}{entry.pk}/delete/").status_code == 403
    assert site_admin.post(f"{base}{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    assert site_admin.get(f"{base}add/").status_code == 403
    model_admin = admin.site._registry[AuditEntry]
    request = site_admin.get(base).wsgi_request
    request.user = UserFactory(is_superuser=True, is_staff=True)
    assert "delete_selected" not in model_admin.get_actions(request)
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request, entry)
    assert not model_admin.has_delete_permission(request, entry)


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_the_audit_pages_accept_only_reading(login, world, method):
    client = login(world.admin)
    for url in ("/governance/audit/", "/governance/audit/export.csv"):
        assert getattr(client, method)(url).status_code == 405


def test_the_model_refuses_to_change_or_delete_an_entry(world):
    entry = audit_record(action="test.kept")
    entry.action = "test.changed"
    with pytest.raises(PermissionError):
        entry.save()
    with pytest.raises(PermissionError):
        entry.delete()
    assert AuditEntry.objects.get(pk=entry.pk).action == "test.kept"


def test_the_database_refuses_to_change_or_delete_an_entry(world):
    if connection.vendor != "postgresql":
        pytest.skip("On SQLite only the model guards the log.")
    entry = audit_record(action="test.kept")
    table = AuditEntry._meta.db_table
    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET action = 'test.changed' WHERE id = %s", [entry.pk])
    with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {table} WHERE id = %s", [entry.pk])
    assert AuditEntry.objects.get(pk=entry.pk).action == "test.kept"


def test_bulk_changes_of_the_log_are_refused_too(world):
    entry = audit_record(action="test.kept")
    with pytest.raises(PermissionError):
        AuditEntry.objects.filter(pk=entry.pk).update(action="test.changed")
    with pytest.raises(PermissionError):
        AuditEntry.objects.filter(pk=entry.pk).delete()
    assert AuditEntry.objects.get(pk=entry.pk).action == "test.kept"


# --- Credentials are never shown back ---------------------------------------------------------


def test_stored_secrets_never_appear_on_channel_pages_or_in_the_django_admin(site_admin, world):
    secrets = {
        "page_access_token": PAGE_TOKEN,
        "app_secret": APP_SECRET,
        "verify_token": "vt-9d8f7e6a5b4c",
    }
    channel = ChannelFactory(platform="facebook", name="Acme Page", credentials=secrets)
    pages = [
        "/channels/",
        f"/channels/{channel.pk}/",
        "/governance/",
        "/admin/channels_ingest/channelaccount/",
        f"/admin/channels_ingest/channelaccount/{channel.pk}/change/",
        f"/admin/channels_ingest/channelaccount/{channel.pk}/history/",
    ]
    for url in pages:
        response = site_admin.get(url)
        assert response.status_code == 200, url
        content = response.content.decode()
        for value in secrets.values():
            assert value not in content, url
    # The form hints that a secret is set with its last characters only.
    assert "ends …R2d2" in site_admin.get(f"/channels/{channel.pk}/").content.decode()
    # The stored value in the table is encrypted.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT credentials FROM channels_ingest_channelaccount WHERE id = %s", [channel.pk]
        )
        assert APP_SECRET not in cursor.fetchone()[0]
