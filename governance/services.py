"""Governance decisions on outbound messages.

``outbound_check`` is the single gate every outbound message passes: agent replies, automatic
acknowledgements and API calls alike. It answers allowed, needs approval or refused, with the
reasons in plain words.
"""

from dataclasses import dataclass, field
from enum import StrEnum

from django.contrib.auth.models import Group, Permission, User
from django.db.models import Q

from channels_ingest.models import ChannelAccount
from channels_ingest.platforms import REPLY_MAX_LENGTH
from governance.models import Role
from governance.selectors import replyable_channel_ids

# What each role may do in the Django admin and API, as "app_label.codename" (or a whole app).
_AGENT_PERMISSIONS = [
    "contacts.view_contact",
    "contacts.change_contact",
    "contacts.add_contact",
    "contacts.view_socialidentity",
    "conversations.view_conversation",
    "conversations.change_conversation",
    "conversations.view_message",
    "conversations.add_message",
    "conversations.view_tag",
    "conversations.view_conversationevent",
]
_MANAGER_PERMISSIONS = [
    *_AGENT_PERMISSIONS,
    "conversations.add_tag",
    "conversations.change_tag",
    "channels_ingest.view_channelaccount",
    "governance.view_team",
    "governance.view_teammembership",
    "governance.view_channelaccess",
]
_ADMIN_APPS = ["contacts", "conversations", "channels_ingest", "governance", "kpis", "auth"]


def roles_ensure(*, using: str = "default") -> None:
    """Create the role groups and give them their permissions; safe to run any number of times."""

    def by_names(names: list[str]) -> list[Permission]:
        query = Q(pk__in=[])
        for name in names:
            app_label, codename = name.split(".")
            query |= Q(content_type__app_label=app_label, codename=codename)
        return list(Permission.objects.using(using).filter(query))

    grants = {
        Role.AGENT: by_names(_AGENT_PERMISSIONS),
        Role.MANAGER: by_names(_MANAGER_PERMISSIONS),
        Role.ADMIN: list(
            Permission.objects.using(using).filter(content_type__app_label__in=_ADMIN_APPS)
        ),
    }
    for role, permissions in grants.items():
        group, _ = Group.objects.using(using).get_or_create(name=role.value)
        group.permissions.set(permissions)


class Verdict(StrEnum):
    ALLOWED = "allowed"
    NEEDS_APPROVAL = "needs_approval"
    REFUSED = "refused"


@dataclass(frozen=True)
class OutboundDecision:
    verdict: Verdict
    reasons: list[str] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return self.verdict == Verdict.ALLOWED


def outbound_check(*, user: User | None, channel: ChannelAccount, text: str) -> OutboundDecision:
    """``user`` is None for what the product sends on its own (a rule's acknowledgement): an
    admin set it up, so no team's reply rights apply, but every other check does."""
    reasons = []
    if channel.is_listen_only:
        reasons.append(f"{channel.name} is listen-only: nothing can be sent from it.")
    replyable = replyable_channel_ids(user=user) if user is not None else None
    if replyable is not None and channel.pk not in replyable:
        reasons.append(f"Your teams may not reply on {channel.name}.")
    if not text.strip():
        reasons.append("The reply is empty.")
    limit = REPLY_MAX_LENGTH.get(channel.platform)
    if limit is not None and len(text) > limit:
        reasons.append(
            f"{channel.get_platform_display()} accepts at most {limit} characters; "
            f"this reply has {len(text)}."
        )
    if reasons:
        return OutboundDecision(Verdict.REFUSED, reasons)
    return OutboundDecision(Verdict.ALLOWED)
