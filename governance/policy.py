"""The publishing policy: which one applies to a channel, what it finds in a text, and how
admins change it.

The checks on text are pure functions (no database), each answering with reasons in plain
words. Reasons never repeat personal data in full: a card shows its last four digits, a phone
number its last two.
"""

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, time
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import F, Q
from django.http import HttpRequest

from channels_ingest.models import ChannelAccount
from governance.audit import audit_record
from governance.models import ApprovalRequirement, PolicyAction, PublishingPolicy

logger = logging.getLogger(__name__)


def policy_for(channel: ChannelAccount) -> PublishingPolicy:
    """The channel's own policy, else the default one, else the built-in default (unsaved):
    everything may be sent except personal data. One query."""
    policy = (
        PublishingPolicy.objects.filter(Q(channel=channel) | Q(channel__isnull=True))
        .order_by(F("channel").asc(nulls_last=True))
        .first()
    )
    return policy if policy is not None else PublishingPolicy(channel=None)


def policy_approver_ids(policy: PublishingPolicy) -> set[int]:
    """The policy's named approvers; none for the built-in default."""
    if policy.pk is None:
        return set()
    return set(policy.approvers.values_list("pk", flat=True))


@dataclass(frozen=True)
class PolicyHit:
    """Something in a message the policy acts on: ``action`` is approve or block."""

    action: str
    reason: str


def policy_hits(policy: PublishingPolicy, *, text: str, at: datetime) -> list[PolicyHit]:
    """What the policy finds in a text sent at ``at``; checks set to "allow" are not run."""
    checks: list[tuple[str, Callable[[], list[str]]]] = [
        (
            policy.banned_action,
            lambda: (
                banned_term_reasons(policy.banned_terms, text)
                + banned_pattern_reasons(policy.banned_patterns, text)
            ),
        ),
        (policy.pii_action, lambda: pii_reasons(text)),
        (policy.links_action, lambda: link_reasons(text)),
        (
            policy.quiet_hours_action,
            lambda: quiet_hours_reasons(policy.quiet_hours_start, policy.quiet_hours_end, at),
        ),
    ]
    return [
        PolicyHit(action, reason)
        for action, reasons in checks
        if action != PolicyAction.OFF
        for reason in reasons()
    ]


def approval_required(policy: PublishingPolicy, *, is_person: bool, is_manager: bool) -> bool:
    """Whether the policy holds every message of this sender for approval, whatever it says."""
    if policy.approval == ApprovalRequirement.EVERYONE:
        return True
    return policy.approval == ApprovalRequirement.AGENTS and is_person and not is_manager


# --- Banned terms and patterns ----------------------------------------------------------


def terms_clean(terms: Iterable[str]) -> list[str]:
    """Terms as stored: trimmed, without blanks or repeats (ignoring case), in order."""
    seen: set[str] = set()
    cleaned = []
    for term in terms:
        term = " ".join(str(term).split())
        if term and term.casefold() not in seen:
            seen.add(term.casefold())
            cleaned.append(term)
    return cleaned


@lru_cache(maxsize=256)
def _terms_regex(terms: tuple[str, ...]) -> re.Pattern[str] | None:
    # Whole words only: "ass" must not match "class". Spaces in a phrase match any spacing.
    parts = [r"\s+".join(re.escape(word) for word in term.split()) for term in terms]
    parts = [p for p in parts if p]
    if not parts:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(parts) + r")(?!\w)", re.IGNORECASE)


def banned_term_reasons(terms: Iterable[str], text: str) -> list[str]:
    """Each banned term the text holds as a whole word or phrase, in any case, named as the
    policy writes it."""
    cleaned = terms_clean(terms)
    pattern = _terms_regex(tuple(cleaned))
    if pattern is None:
        return []
    as_written = {term.casefold(): term for term in cleaned}
    found = terms_clean(" ".join(m.group(0).split()) for m in pattern.finditer(text))
    return [f"It contains the banned term “{as_written.get(t.casefold(), t)}”." for t in found]


def pattern_error(pattern: str) -> str | None:
    """Why a banned pattern cannot be used (the regular expression engine's message), or None."""
    try:
        re.compile(pattern)
    except re.error as error:
        return str(error)
    return None


def banned_pattern_problems(patterns: Iterable[str]) -> list[str]:
    """Why each pattern that cannot be used is refused, numbered in the order given."""
    problems = []
    for number, pattern in enumerate(patterns, start=1):
        error = pattern_error(pattern)
        if error is not None:
            problems.append(f"Line {number}, “{pattern}”, is not a valid pattern: {error}.")
    return problems


@lru_cache(maxsize=512)
def _compiled(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error:
        # Only a pattern written around the policy form gets here: skipped, never fatal.
        logger.warning("Banned pattern %r cannot be compiled; skipped", pattern)
        return None


def banned_pattern_reasons(patterns: Iterable[str], text: str) -> list[str]:
    # The pattern is named, not what it matched: that may be personal data.
    reasons = []
    for pattern in patterns:
        compiled = _compiled(pattern) if pattern else None
        if compiled is not None and compiled.search(text):
            reasons.append(f"It matches the banned pattern “{pattern}”.")
    return reasons


# --- Personal data ----------------------------------------------------------------------

# Digit groups joined by single spaces or dashes, as cards are written: "4111 1111-1111 1111".
_DIGIT_RUN = re.compile(r"(?<![\w-])\d+(?:[ -]\d+)*(?![\w-])")
_SSN = re.compile(r"(?<![\w-])(\d{3})-(\d{2})-(\d{4})(?![\w-])")
_IBAN = re.compile(r"\b([A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?)\b")
_UK_NINO = re.compile(r"\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")
_EMAIL = re.compile(r"(?<![\w.+-])([\w.+-]+)@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})")
_DATE = re.compile(r"(?<![\w.-])\d{1,4}([-./])\d{1,2}\1\d{2,4}(?![\w-])")
_PHONE = re.compile(r"(?<![\w+])(?:\+|\(\+?)?\d[\d ().-]{5,}\d(?!\w)")
_DIGIT = re.compile(r"\d")
# A North American number: 555-123-4567, 555.123.4567, 555 123 4567.
_NANP = re.compile(r"^\d{3}([-. ])\d{3}\1\d{4}$")


def luhn_valid(digits: str) -> bool:
    """The check digit of payment card numbers (ISO/IEC 7812)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _iban_valid(candidate: str) -> bool:
    compact = candidate.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _card_numbers(text: str) -> list[tuple[str, tuple[int, int]]]:
    """Card numbers (13-19 digits passing the Luhn check) and where they are. Within a longer
    run of digit groups, any consecutive groups may form a card."""
    found = []
    for run in _DIGIT_RUN.finditer(text):
        groups = [(m.group(0), run.start() + m.start()) for m in re.finditer(r"\d+", run.group(0))]
        first = 0
        while first < len(groups):
            digits, last = "", first
            card = None
            for last in range(first, len(groups)):
                digits += groups[last][0]
                if len(digits) > 19:
                    break
                if len(digits) >= 13 and luhn_valid(digits):
                    card = (digits, (groups[first][1], groups[last][1] + len(groups[last][0])))
                    break
            if card is None:
                first += 1
            else:
                found.append(card)
                first = last + 1
    return found


def _is_phone(number: str) -> bool:
    """A phone number rather than an amount, a date or an order number: at least 8 digits,
    and written the way phone numbers are (international, area code, trunk 0, NANP)."""
    digits = re.sub(r"\D", "", number)
    if not 8 <= len(digits) <= 15:
        return False
    international = number.startswith(("+", "(+")) or digits.startswith("00")
    area_code = number.startswith("(")
    trunk = digits.startswith("0") and len(digits) >= 9
    return international or area_code or trunk or bool(_NANP.match(number))


def pii_reasons(text: str) -> list[str]:
    """Payment cards, bank accounts, national ids, email addresses and phone numbers. Each
    finding is blanked before the next check, so one number is reported once."""
    reasons: list[str] = []
    # Every check but the email one needs a digit, and that one an "@": most texts have
    # neither, and looking for them costs a fraction of one check's search.
    has_digit = _DIGIT.search(text) is not None
    has_at = "@" in text
    if not has_digit and not has_at:
        return reasons
    chars = list(text)

    def blank(span: tuple[int, int]) -> None:
        chars[span[0] : span[1]] = " " * (span[1] - span[0])

    if has_digit:
        for match in _IBAN.finditer(text.upper()):
            if _iban_valid(match.group(1)):
                compact = match.group(1).replace(" ", "")
                reasons.append(f"It contains a bank account number (IBAN …{compact[-4:]}).")
                blank(match.span())
        for digits, span in _card_numbers("".join(chars)):
            reasons.append(f"It contains a payment card number (…{digits[-4:]}).")
            blank(span)
        for match in _SSN.finditer("".join(chars)):
            area, group, serial = match.groups()
            if area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000":
                reasons.append(f"It contains a US social security number (…{serial[-2:]}).")
                blank(match.span())
        for match in _UK_NINO.finditer("".join(chars)):
            compact = match.group(0).replace(" ", "")
            reasons.append(f"It contains a UK national insurance number (…{compact[-2:]}).")
            blank(match.span())
    if has_at:
        for match in _EMAIL.finditer("".join(chars)):
            local, domain = match.groups()
            reasons.append(f"It contains an email address ({local[0]}…@{domain}).")
            blank(match.span())
    if has_digit:
        for match in _DATE.finditer("".join(chars)):
            blank(match.span())
        for match in _PHONE.finditer("".join(chars)):
            number = match.group(0).strip()
            if _is_phone(number):
                reasons.append(
                    f"It contains a phone number (…{re.sub(r'[^0-9]', '', number)[-2:]})."
                )
    return reasons


# --- Links and quiet hours -------------------------------------------------------------

_LINK = re.compile(r"(?i)\b(?:https?://|www\.)([^\s/?#<>\"']+)")


def link_reasons(text: str) -> list[str]:
    hosts = terms_clean(m.group(1).rstrip(".,;:!?)") for m in _LINK.finditer(text))
    return [f"It contains a link ({host})." for host in hosts]


_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def hhmm_parse(value: str) -> time | None:
    """A local time of day written "HH:MM" (24-hour), or None if it is not one."""
    match = _HHMM.match(value.strip())
    return time(int(match.group(1)), int(match.group(2))) if match else None


def quiet_hour_clean(value: str) -> str:
    """A quiet-hours time as stored: "HH:MM" ("7:00" is "07:00"), or "" for none. Raises
    ValueError with the message for the person who wrote it."""
    value = (value or "").strip()
    if value and re.fullmatch(r"\d:\d\d", value):
        value = "0" + value
    if value and hhmm_parse(value) is None:
        raise ValueError("Write a time of day as HH:MM, such as 22:00.")
    return value


def quiet_hours_problem(start: str, end: str) -> tuple[str, str] | None:
    """The field to blame and why, when quiet hours are half set or begin when they end."""
    if bool(start) != bool(end):
        field = "quiet_hours_end" if start else "quiet_hours_start"
        return field, "Give both the start and the end of quiet hours, or neither."
    if start and start == end:
        return "quiet_hours_end", "Quiet hours need an end different from start."
    return None


def in_quiet_hours(start: str, end: str, at: datetime) -> bool:
    """Whether ``at`` falls in [start, end) local time; a start after the end wraps past
    midnight (22:00-07:00). Equal or unreadable times mean no quiet hours."""
    begins, ends = hhmm_parse(start or ""), hhmm_parse(end or "")
    if begins is None or ends is None or begins == ends:
        return False
    local = at.astimezone(ZoneInfo(settings.TIME_ZONE)).time()
    if begins < ends:
        return begins <= local < ends
    return local >= begins or local < ends


def quiet_hours_reasons(start: str, end: str, at: datetime) -> list[str]:
    if not in_quiet_hours(start, end, at):
        return []
    return [f"It is quiet hours (from {start} to {end}, {settings.TIME_ZONE})."]


# --- Changes by admins ------------------------------------------------------------------


def policy_snapshot(policy: PublishingPolicy) -> dict[str, Any]:
    """The policy's settings as the audit log records them."""
    if policy.pk is None:
        return {}
    return {
        "channel": policy.channel_id,
        "approval": policy.approval,
        "approvers": sorted(policy.approvers.values_list("username", flat=True)),
        "second_level": policy.second_level,
        "approval_expiry_hours": policy.approval_expiry_hours,
        "banned_terms": list(policy.banned_terms),
        "banned_patterns": list(policy.banned_patterns),
        "banned_action": policy.banned_action,
        "pii_action": policy.pii_action,
        "links_action": policy.links_action,
        "quiet_hours_start": policy.quiet_hours_start,
        "quiet_hours_end": policy.quiet_hours_end,
        "quiet_hours_action": policy.quiet_hours_action,
    }


@transaction.atomic
def policy_save(
    *,
    policy: PublishingPolicy,
    approvers: Iterable[User],
    actor: User,
    request: HttpRequest | None = None,
) -> PublishingPolicy:
    """Create or change a policy (validated by the form) and record the change."""
    created = policy.pk is None
    before = {} if created else policy_snapshot(PublishingPolicy.objects.get(pk=policy.pk))
    policy.banned_terms = terms_clean(policy.banned_terms)
    policy.banned_patterns = [p for p in policy.banned_patterns if p]
    policy.save()
    policy.approvers.set(list(approvers))
    audit_record(
        action="policy.created" if created else "policy.updated",
        actor=actor,
        obj=policy,
        before=before,
        after=policy_snapshot(policy),
        request=request,
    )
    return policy


@transaction.atomic
def policy_delete(
    *, policy: PublishingPolicy, actor: User, request: HttpRequest | None = None
) -> None:
    """Remove a policy: its channel follows the default again (the default, the built-in one)."""
    before = policy_snapshot(policy)
    pk, name = policy.pk, str(policy)
    policy.delete()
    audit_record(
        action="policy.deleted",
        actor=actor,
        object_type=PublishingPolicy._meta.label_lower,
        object_id=str(pk),
        object_repr=name,
        before=before,
        request=request,
    )
