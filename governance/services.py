"""Governance decisions on outbound messages.

``outbound_check`` is the single gate every outbound message passes: agent replies, automatic
acknowledgements and API calls alike. It answers allowed, needs approval or refused, with the
reasons in plain words.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from django.contrib.auth.models import Group, Permission, User
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from channels_ingest.models import ChannelAccount
from channels_ingest.platforms import REPLY_MAX_LENGTH
from governance.audit import audit_acting_as
from governance.models import (
    ApprovalRequirement,
    ChannelAccess,
    PolicyAction,
    PublishingPolicy,
    Role,
    Team,
)
from governance.policy import approval_required, policy_approver_ids, policy_for, policy_hits
from governance.roles import is_manager_or_admin
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


def outbound_check(
    *,
    user: User | None,
    channel: ChannelAccount,
    text: str,
    now: datetime | None = None,
    policy: PublishingPolicy | None = None,
) -> OutboundDecision:
    """``user`` is None for what the product sends on its own (a rule's acknowledgement): an
    admin set it up, so no team's reply rights apply, but every other check does.

    Refused: listen-only channel, no reply rights, empty, too long, or a policy check set to
    refuse. Needs approval: a check set to approval, or the policy holds this sender's
    messages. ``policy`` saves the lookup when the caller checks many messages of one channel.
    """
    if channel.is_listen_only:
        # Nothing else matters: no edit and no approval can make this channel send.
        return OutboundDecision(
            Verdict.REFUSED, [f"{channel.name} is listen-only: nothing can be sent from it."]
        )
    policy = policy if policy is not None else policy_for(channel)
    reasons = []
    replyable = replyable_channel_ids(user=user) if user is not None else None
    if (
        user is not None
        and replyable is not None
        and channel.pk not in replyable
        # The policy's named approvers send what they approve, team or no team.
        and user.pk not in policy_approver_ids(policy)
    ):
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
    hits = policy_hits(policy, text=text, at=now or timezone.now())
    blocked = [hit.reason for hit in hits if hit.action == PolicyAction.BLOCK]
    if blocked:
        return OutboundDecision(Verdict.REFUSED, blocked)
    held = [hit.reason for hit in hits if hit.action == PolicyAction.APPROVE]
    if approval_required(
        policy,
        is_person=user is not None,
        is_manager=user is not None and is_manager_or_admin(user),
    ):
        held.append(
            f"On {channel.name}, every message is sent after approval."
            if policy.approval == ApprovalRequirement.EVERYONE
            else f"On {channel.name}, agents' replies are sent after approval."
        )
    if held:
        return OutboundDecision(Verdict.NEEDS_APPROVAL, held)
    return OutboundDecision(Verdict.ALLOWED)


@transaction.atomic
def channel_access_set(
    *, channel: ChannelAccount, access: Mapping[Team, bool], actor: User
) -> list[ChannelAccess]:
    """Let exactly these teams see the channel, each replying on it or not (``access`` maps a
    team to its reply right). Rows are added, changed and removed one at a time, so the
    signals record each change as in the Django admin (``governance.signals``)."""
    wanted = {team.pk: can_reply for team, can_reply in access.items()}
    with audit_acting_as(actor):
        current = {row.team_id: row for row in ChannelAccess.objects.filter(channel=channel)}
        for team_id, row in sorted(current.items()):
            if team_id not in wanted:
                row.delete()
            elif row.can_reply != wanted[team_id]:
                row.can_reply = wanted[team_id]
                row.save(update_fields=["can_reply"])
        for team_id, can_reply in sorted(wanted.items()):
            if team_id not in current:
                ChannelAccess.objects.create(channel=channel, team_id=team_id, can_reply=can_reply)
    return list(ChannelAccess.objects.filter(channel=channel).order_by("team_id"))
