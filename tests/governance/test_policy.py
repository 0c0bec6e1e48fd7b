"""The publishing policy: its checks on text, the verdicts of the outbound gate, and the pages
where admins set it."""

from datetime import UTC, datetime

import pytest

from channels_ingest.models import ChannelMode
from governance.models import (
    ApprovalRequirement,
    AuditEntry,
    PolicyAction,
    PublishingPolicy,
)
from governance.policy import (
    banned_pattern_reasons,
    banned_term_reasons,
    in_quiet_hours,
    link_reasons,
    luhn_valid,
    pii_reasons,
    policy_for,
    quiet_hours_reasons,
)
from governance.services import Verdict, outbound_check
from tests.factories import ChannelFactory, TeamMembershipFactory, UserFactory

NOON = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


# --- Personal data ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    ["4111111111111111", "5500000000000004", "378282246310005", "6011111111111117"],
)
def test_luhn_accepts_real_card_numbers(number):
    assert luhn_valid(number)


@pytest.mark.parametrize("number", ["4111111111111112", "1234567812345678", "5500000000000005"])
def test_luhn_refuses_numbers_with_a_wrong_check_digit(number):
    assert not luhn_valid(number)


@pytest.mark.parametrize(
    "text",
    [
        "My card is 4111111111111111, please refund",
        "card: 4111 1111 1111 1111",
        "card 4111-1111-1111-1111 thanks",
        "Amex 3782 822463 10005.",
    ],
)
def test_a_card_number_is_found_however_it_is_written(text):
    reasons = pii_reasons(text)
    assert len(reasons) == 1
    assert reasons[0].startswith("It contains a payment card number (…")


def test_the_reason_shows_only_the_last_four_digits_of_a_card():
    (reason,) = pii_reasons("Use 4111 1111 1111 1234 or 5500 0000 0000 0004")[-1:]
    assert reason == "It contains a payment card number (…0004)."
    assert "5500" not in " ".join(pii_reasons("Use 5500 0000 0000 0004"))


@pytest.mark.parametrize(
    "text",
    [
        "Your order number is 1234567812345678.",
        "Tracking 4111 1111 1111 1112",
        "Reference 12345678901234567890123",
    ],
)
def test_numbers_failing_the_luhn_check_are_not_cards(text):
    assert pii_reasons(text) == []


def test_two_cards_in_one_run_of_digits_are_both_found():
    assert len(pii_reasons("4111111111111111 5500000000000004")) == 2


def _arabic_indic(digits: str) -> str:
    return "".join(chr(0x0660 + int(digit)) for digit in digits)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Without a digit only the email check can find something, without "@" only the others.
        ("write to ana@example.org", ["It contains an email address (a…@example.org)."]),
        ("call +49 30 1234567", ["It contains a phone number (…67)."]),
        (
            "ana@example.org or +49 30 1234567",
            [
                "It contains an email address (a…@example.org).",
                "It contains a phone number (…67).",
            ],
        ),
        ("Thanks, we will call you back.", []),
        # Digits of other scripts are digits too.
        (
            f"card {_arabic_indic('4111111111111111')}",
            [f"It contains a payment card number (…{_arabic_indic('1111')})."],
        ),
    ],
)
def test_texts_without_a_digit_or_an_at_sign_are_checked_as_fully_as_others(text, expected):
    assert pii_reasons(text) == expected


def test_an_iban_with_a_valid_checksum_is_personal_data_and_a_wrong_one_is_not():
    assert pii_reasons("Pay to DE89 3704 0044 0532 0130 00 please") == [
        "It contains a bank account number (IBAN …3000)."
    ]
    assert pii_reasons("Pay to DE88 3704 0044 0532 0130 00 please") == []


def test_national_ids_are_found_and_masked():
    assert pii_reasons("SSN 123-45-6789") == ["It contains a US social security number (…89)."]
    assert pii_reasons("SSN 000-45-6789") == []  # never issued
    assert pii_reasons("NI number AB 12 34 56 C") == [
        "It contains a UK national insurance number (…6C)."
    ]


@pytest.mark.parametrize(
    "text",
    [
        "Call me on +49 30 1234567",
        "Call me on 0049 30 1234567",
        "Ring (555) 123-4567 tomorrow",
        "Ring 555-123-4567 tomorrow",
        "Our office: 020 7946 0958",
        "Mobile 07911123456",
    ],
)
def test_phone_numbers_are_found(text):
    reasons = pii_reasons(text)
    assert len(reasons) == 1 and reasons[0].startswith("It contains a phone number (…")


@pytest.mark.parametrize(
    "text",
    [
        "Your order 12345678 ships on 2026-01-15 at 10:30",
        "Delivered 15.01.2026 10:30",
        "Call 555-1234",  # seven digits: too short to be sure
        "Rooms 101 102 103",
        "It costs 10 000 000 EUR",
    ],
)
def test_dates_amounts_and_short_numbers_are_not_phone_numbers(text):
    assert pii_reasons(text) == []


def test_an_email_address_is_found_and_masked():
    assert pii_reasons("Write to jane.doe@example.com") == [
        "It contains an email address (j…@example.com)."
    ]


def test_ordinary_text_has_no_personal_data():
    assert pii_reasons("Thanks for waiting! Your parcel ships tomorrow.") == []


# --- Banned terms, patterns, links -----------------------------------------------------


def test_banned_terms_match_whole_words_in_any_case():
    terms = ["refund", "free money"]
    assert banned_term_reasons(terms, "We will REFUND you") == [
        "It contains the banned term “refund”."
    ]
    assert banned_term_reasons(terms, "Free   money for all!") == [
        "It contains the banned term “free money”."
    ]
    assert banned_term_reasons(terms, "Refunds are processed; prerefund checks") == []
    assert banned_term_reasons([], "anything") == []


def test_a_banned_pattern_is_named_not_what_it_matched():
    assert banned_pattern_reasons([r"order\s*#?\d{6}"], "Your ORDER #123456 is late") == [
        r"It matches the banned pattern “order\s*#?\d{6}”."
    ]
    assert banned_pattern_reasons([r"order\s*#?\d{6}"], "Your order is late") == []


def test_an_invalid_pattern_stored_around_the_form_is_skipped():
    assert banned_pattern_reasons(["(unclosed", "late"], "It is late") == [
        "It matches the banned pattern “late”."
    ]


def test_links_are_found_with_their_host():
    assert link_reasons("See https://example.com/help and www.acme.test.") == [
        "It contains a link (example.com).",
        "It contains a link (acme.test).",
    ]
    assert link_reasons("Visit our help centre") == []


# --- Quiet hours -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hour", "minute", "quiet"),
    [(22, 0, True), (23, 30, True), (0, 15, True), (6, 59, True), (7, 0, False), (12, 0, False)],
)
def test_overnight_quiet_hours_wrap_past_midnight(settings, hour, minute, quiet):
    settings.TIME_ZONE = "UTC"
    at = datetime(2026, 1, 5, hour, minute, tzinfo=UTC)
    assert in_quiet_hours("22:00", "07:00", at) is quiet


def test_daytime_quiet_hours_and_empty_ones(settings):
    settings.TIME_ZONE = "UTC"
    assert in_quiet_hours("12:00", "13:00", NOON)
    assert not in_quiet_hours("13:00", "14:00", NOON)
    assert not in_quiet_hours("", "", NOON)
    assert not in_quiet_hours("12:00", "12:00", NOON)


def test_quiet_hours_are_local_to_the_organisation(settings):
    settings.TIME_ZONE = "Europe/Berlin"
    # 21:30 UTC is 22:30 in Berlin in January.
    at = datetime(2026, 1, 5, 21, 30, tzinfo=UTC)
    assert in_quiet_hours("22:00", "07:00", at)
    assert quiet_hours_reasons("22:00", "07:00", at) == [
        "It is quiet hours (from 22:00 to 07:00, Europe/Berlin)."
    ]


# --- Which policy applies --------------------------------------------------------------


@pytest.mark.django_db
def test_a_channel_follows_its_own_policy_else_the_default_else_the_built_in_one():
    channel, other = ChannelFactory(), ChannelFactory()
    builtin = policy_for(channel)
    assert builtin.pk is None
    assert builtin.pii_action == PolicyAction.BLOCK
    assert builtin.banned_action == PolicyAction.BLOCK and builtin.banned_terms == []
    assert builtin.links_action == PolicyAction.OFF
    assert builtin.approval == ApprovalRequirement.NONE
    default = PublishingPolicy.objects.create(links_action=PolicyAction.BLOCK)
    own = PublishingPolicy.objects.create(channel=channel)
    assert policy_for(channel) == own
    assert policy_for(other) == default


# --- The gate --------------------------------------------------------------------------


def _policy(channel=None, **fields):
    return PublishingPolicy.objects.create(channel=channel, **fields)


def check(user, channel, text="Thanks, we are on it.", now=NOON):
    return outbound_check(user=user, channel=channel, text=text, now=now)


@pytest.mark.django_db
def test_ordinary_replies_are_allowed(world):
    decision = check(world.agent_a, world.channel_a)
    assert decision.verdict == Verdict.ALLOWED and decision.reasons == []


@pytest.mark.django_db
def test_the_built_in_default_refuses_personal_data(world):
    decision = check(world.agent_a, world.channel_a, "Your card 4111 1111 1111 1111 is on file")
    assert decision.verdict == Verdict.REFUSED
    assert decision.reasons == ["It contains a payment card number (…1111)."]


@pytest.mark.django_db
@pytest.mark.parametrize("sender", ["agent_a", "manager", "admin", None])
def test_a_listen_only_channel_refuses_everyone_whatever_the_policy(world, sender):
    world.channel_a.mode = ChannelMode.LISTEN
    world.channel_a.save()
    _policy(world.channel_a, approval=ApprovalRequirement.EVERYONE)
    user = getattr(world, sender) if sender else None
    decision = check(user, world.channel_a)
    assert decision.verdict == Verdict.REFUSED
    assert decision.reasons == ["Channel A is listen-only: nothing can be sent from it."]


@pytest.mark.django_db
def test_no_reply_rights_empty_and_too_long_are_refused_together(world):
    decision = check(world.agent_b, world.channel_a, "   ")
    assert decision.verdict == Verdict.REFUSED
    assert decision.reasons == ["Your teams may not reply on Channel A.", "The reply is empty."]
    long = check(world.agent_a, world.channel_a, "x" * 281)
    assert long.reasons == ["Demo accepts at most 280 characters; this reply has 281."]


@pytest.mark.django_db
def test_a_block_hit_refuses_with_only_the_blocking_reasons(world):
    _policy(
        banned_terms=["refund"],
        banned_action=PolicyAction.BLOCK,
        links_action=PolicyAction.APPROVE,
    )
    decision = check(world.agent_a, world.channel_a, "No refund: see https://acme.test/terms")
    assert decision.verdict == Verdict.REFUSED
    assert decision.reasons == ["It contains the banned term “refund”."]


@pytest.mark.django_db
def test_approve_hits_send_the_message_for_approval_with_every_reason(world):
    _policy(
        banned_terms=["refund"],
        banned_action=PolicyAction.APPROVE,
        links_action=PolicyAction.APPROVE,
        pii_action=PolicyAction.APPROVE,
    )
    decision = check(
        world.manager, world.channel_a, "Refund at https://acme.test or mail help@acme.test"
    )
    assert decision.verdict == Verdict.NEEDS_APPROVAL
    assert decision.reasons == [
        "It contains the banned term “refund”.",
        "It contains an email address (h…@acme.test).",
        "It contains a link (acme.test).",
    ]


@pytest.mark.django_db
def test_checks_set_to_allow_are_ignored(world):
    _policy(pii_action=PolicyAction.OFF, links_action=PolicyAction.OFF)
    decision = check(world.agent_a, world.channel_a, "Call +49 30 1234567 or www.acme.test")
    assert decision.verdict == Verdict.ALLOWED


@pytest.mark.django_db
def test_checks_set_to_allow_are_not_even_run(world, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a check set to allow ran")

    for name in ("banned_term_reasons", "pii_reasons", "link_reasons", "quiet_hours_reasons"):
        monkeypatch.setattr(f"governance.policy.{name}", fail)
    _policy(
        banned_action=PolicyAction.OFF,
        pii_action=PolicyAction.OFF,
        links_action=PolicyAction.OFF,
        quiet_hours_action=PolicyAction.OFF,
    )
    decision = check(world.agent_a, world.channel_a, "Call +49 30 1234567 or www.acme.test")
    assert decision.verdict == Verdict.ALLOWED


@pytest.mark.django_db
def test_the_channels_own_policy_wins_over_the_default(world):
    _policy(banned_terms=["refund"])
    _policy(world.channel_a, banned_terms=[])
    assert check(world.agent_a, world.channel_a, "refund").verdict == Verdict.ALLOWED
    assert check(world.agent_b, world.channel_b, "refund").verdict == Verdict.REFUSED


@pytest.mark.django_db
def test_when_agents_need_approval_managers_admins_and_rules_send_directly(world):
    _policy(world.channel_a, approval=ApprovalRequirement.AGENTS)
    held = check(world.agent_a, world.channel_a)
    assert held.verdict == Verdict.NEEDS_APPROVAL
    assert held.reasons == ["On Channel A, agents' replies are sent after approval."]
    assert check(world.manager, world.channel_a).verdict == Verdict.ALLOWED
    assert check(world.admin, world.channel_a).verdict == Verdict.ALLOWED
    assert check(None, world.channel_a).verdict == Verdict.ALLOWED


@pytest.mark.django_db
@pytest.mark.parametrize("sender", ["agent_a", "manager", "admin", None])
def test_when_everyone_needs_approval_automatic_messages_do_too(world, sender):
    _policy(world.channel_a, approval=ApprovalRequirement.EVERYONE)
    decision = check(getattr(world, sender) if sender else None, world.channel_a)
    assert decision.verdict == Verdict.NEEDS_APPROVAL
    assert decision.reasons == ["On Channel A, every message is sent after approval."]


@pytest.mark.django_db
def test_quiet_hours_hold_or_refuse_as_set(world, settings):
    settings.TIME_ZONE = "UTC"
    _policy(world.channel_a, quiet_hours_start="11:00", quiet_hours_end="13:00")
    held = check(world.agent_a, world.channel_a)
    assert held.verdict == Verdict.NEEDS_APPROVAL
    assert held.reasons == ["It is quiet hours (from 11:00 to 13:00, UTC)."]
    PublishingPolicy.objects.update(quiet_hours_action=PolicyAction.BLOCK)
    assert check(world.agent_a, world.channel_a).verdict == Verdict.REFUSED
    later = datetime(2026, 1, 5, 14, 0, tzinfo=UTC)
    assert check(world.agent_a, world.channel_a, now=later).verdict == Verdict.ALLOWED


@pytest.mark.django_db
def test_a_named_approver_outside_the_channels_teams_may_send_on_it(world):
    approver = UserFactory(role="agent")
    TeamMembershipFactory(team=world.team_b, user=approver)
    policy = _policy(world.channel_a)
    assert check(approver, world.channel_a).verdict == Verdict.REFUSED
    policy.approvers.add(approver)
    assert check(approver, world.channel_a).verdict == Verdict.ALLOWED


# --- The policy pages ------------------------------------------------------------------


def _form(**changes):
    data = {
        "approval": "none",
        "approval_expiry_hours": "24",
        "banned_terms": "",
        "banned_patterns": "",
        "banned_action": "block",
        "pii_action": "block",
        "links_action": "off",
        "quiet_hours_start": "",
        "quiet_hours_end": "",
        "quiet_hours_action": "approve",
    }
    data.update(changes)
    return data


@pytest.mark.django_db
def test_an_admin_sets_up_the_default_policy_and_it_is_audited(login, world):
    client = login(world.admin)
    assert "None is saved" in client.get("/governance/policies/").content.decode()
    response = client.post(
        "/governance/policies/default/",
        _form(
            banned_terms="refund, Free money\nrefund\n",
            banned_patterns=r"order\s*\d{6}",
            banned_action="approve",
            approvers=[world.manager.pk],
            second_level="on",
            quiet_hours_start="22:00",
            quiet_hours_end="7:00",
        ),
    )
    assert response.status_code == 302
    policy = PublishingPolicy.objects.get(channel__isnull=True)
    assert policy.banned_terms == ["refund", "Free money"]
    assert policy.banned_patterns == [r"order\s*\d{6}"]
    assert policy.quiet_hours_end == "07:00"
    assert policy.second_level
    assert list(policy.approvers.all()) == [world.manager]
    entry = AuditEntry.objects.get(action="policy.created")
    assert entry.actor == world.admin
    assert entry.after["banned_terms"] == ["refund", "Free money"]
    assert entry.after["approvers"] == ["mona"]
    page = client.get("/governance/policies/").content.decode()
    assert "“refund”" in page and world.manager.get_full_name() in page


@pytest.mark.django_db
def test_an_invalid_pattern_is_refused_with_the_regex_error(login, world):
    response = login(world.admin).post(
        "/governance/policies/default/", _form(banned_patterns="fine\n(unclosed")
    )
    assert response.status_code == 200
    errors = response.context["form"].errors["banned_patterns"]
    assert errors == [
        "Line 2, “(unclosed”, is not a valid pattern: "
        "missing ), unterminated subpattern at position 0."
    ]
    assert not PublishingPolicy.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("start", "end", "field", "error"),
    [
        ("25:00", "07:00", "quiet_hours_start", "Write a time of day as HH:MM, such as 22:00."),
        ("22:00", "7pm", "quiet_hours_end", "Write a time of day as HH:MM, such as 22:00."),
        ("22:00", "", "quiet_hours_end", "Give both the start and the end of quiet hours"),
        ("", "07:00", "quiet_hours_start", "Give both the start and the end of quiet hours"),
        ("08:00", "08:00", "quiet_hours_end", "Quiet hours need an end different from start."),
    ],
)
def test_quiet_hours_must_be_two_different_times(login, world, start, end, field, error):
    response = login(world.admin).post(
        "/governance/policies/default/", _form(quiet_hours_start=start, quiet_hours_end=end)
    )
    assert response.status_code == 200
    assert response.context["form"].errors[field][0].startswith(error)


@pytest.mark.django_db
def test_an_admin_gives_a_channel_its_own_policy_then_changes_and_deletes_it(login, world):
    client = login(world.admin)
    response = client.post(
        "/governance/policies/new/",
        _form(channel=world.channel_a.pk, approval="agents", links_action="block"),
    )
    assert response.status_code == 302
    policy = PublishingPolicy.objects.get(channel=world.channel_a)
    assert policy.approval == ApprovalRequirement.AGENTS
    # A channel with a policy is not offered again.
    new_page = client.get("/governance/policies/new/")
    assert world.channel_a not in new_page.context["form"].fields["channel"].queryset
    client.post(f"/governance/policies/{policy.pk}/", _form(approval="everyone"))
    policy.refresh_from_db()
    assert policy.approval == ApprovalRequirement.EVERYONE
    assert policy.channel == world.channel_a
    updated = AuditEntry.objects.get(action="policy.updated")
    assert updated.before["approval"] == "agents" and updated.after["approval"] == "everyone"
    assert client.get(f"/governance/policies/{policy.pk}/delete/").status_code == 200
    client.post(f"/governance/policies/{policy.pk}/delete/")
    assert not PublishingPolicy.objects.exists()
    deleted = AuditEntry.objects.get(action="policy.deleted")
    assert deleted.before["approval"] == "everyone"


@pytest.mark.django_db
def test_the_test_box_shows_the_verdict_and_reasons(login, world):
    _policy(world.channel_a, banned_terms=["refund"], banned_action=PolicyAction.APPROVE)
    client = login(world.admin)
    data = {"channel": world.channel_a.pk, "sender": world.agent_a.pk, "text": "A refund"}
    page = client.post("/governance/policies/test/", data).content.decode()
    assert "Needs approval" in page and "banned term “refund”" in page
    partial = client.post("/governance/policies/test/", data, HTTP_HX_REQUEST="true")
    assert partial.templates[0].name == "governance/policy_test_result.html"
    refused = client.post(
        "/governance/policies/test/",
        {"channel": world.channel_b.pk, "sender": world.agent_a.pk, "text": "Hello"},
        HTTP_HX_REQUEST="true",
    ).content.decode()
    assert "Refused" in refused and "Your teams may not reply on Channel B." in refused
    automatic = client.post(
        "/governance/policies/test/",
        {"channel": world.channel_b.pk, "sender": "automatic", "text": "Hello"},
        HTTP_HX_REQUEST="true",
    ).content.decode()
    assert "Allowed" in automatic
