"""What a user may do and see, read in one query and kept on the user object for the request.

Every page asks the same questions before it shows anything: the user's role, their teams,
the channels those teams may see and reply on, and whether a publishing policy names them as
an approver. One round trip answers all of them, and the pages then scope their own queries
with plain lists of ids, which the database plans faster than the subqueries they replace.
"""

from dataclasses import dataclass

from django.contrib.auth.models import Group
from django.db import connection

from conversations.models import Department, DepartmentDelivery, Escalation, EscalationStatus
from governance.models import ChannelAccess, PublishingPolicy, Role, Team, TeamMembership
from scrm.types import AnyUser

_ROLE_ORDER = [Role.ADMIN, Role.MANAGER, Role.AGENT]
_MEMO = "_scrm_access"


@dataclass(frozen=True)
class Access:
    role: Role | None
    teams: tuple[tuple[int, str], ...]  # (id, name), by name
    # None: every channel (admins). Otherwise the channels the user's teams may see.
    visible_channel_ids: frozenset[int] | None
    replyable_channel_ids: frozenset[int] | None
    named_approver: bool
    # Whether escalations can wait on the user (addressed to them, or to an in-app department
    # of one of their teams): they then also see those conversations, whatever the channel.
    receives_escalations: bool = False

    @property
    def team_ids(self) -> list[int]:
        return [pk for pk, _ in self.teams]

    @property
    def scope(self) -> str:
        """What the user sees, in short: figures kept for the user hold only while it stays
        the same."""
        channels = self.visible_channel_ids
        seen = "all" if channels is None else ",".join(map(str, sorted(channels)))
        return f"{self.role or ''}|{','.join(map(str, self.team_ids))}|{seen}"


_NOBODY = Access(
    role=None,
    teams=(),
    visible_channel_ids=frozenset(),
    replyable_channel_ids=frozenset(),
    named_approver=False,
)


def _sql() -> str:
    quote = connection.ops.quote_name
    user_groups = quote(Group.user_set.through._meta.db_table)
    approvers = quote(PublishingPolicy.approvers.through._meta.db_table)
    group, team = quote(Group._meta.db_table), quote(Team._meta.db_table)
    membership, access = quote(TeamMembership._meta.db_table), quote(ChannelAccess._meta.db_table)
    escalation, department = quote(Escalation._meta.db_table), quote(Department._meta.db_table)
    # kind, id, name, can_reply: one branch per question, all for the same user.
    return f"""
        SELECT 'role', 0, g.name, 0 FROM {group} g
            JOIN {user_groups} ug ON ug.group_id = g.id WHERE ug.user_id = %s
        UNION ALL
        SELECT 'team', t.id, t.name, 0 FROM {team} t
            JOIN {membership} m ON m.team_id = t.id WHERE m.user_id = %s
        UNION ALL
        SELECT 'channel', a.channel_id, '', CASE WHEN a.can_reply THEN 1 ELSE 0 END
            FROM {access} a JOIN {membership} m ON m.team_id = a.team_id WHERE m.user_id = %s
        UNION ALL
        SELECT 'approver', 0, '', 0 FROM {approvers} p WHERE p.user_id = %s
        UNION ALL
        SELECT 'escalations', 0, '', 0 WHERE EXISTS (
            SELECT 1 FROM {escalation} e WHERE e.user_id = %s AND e.status = %s
        ) OR EXISTS (
            SELECT 1 FROM {department} d JOIN {membership} m ON m.team_id = d.team_id
            WHERE m.user_id = %s AND d.delivery = %s
        )
    """


def access_of(user: AnyUser) -> Access:
    """The user's access, read once per user object (a request's user lives as long as the
    request). Anonymous users see nothing."""
    if not user.is_authenticated:
        return _NOBODY
    if _MEMO in user.__dict__:
        return user.__dict__[_MEMO]
    groups: set[str] = set()
    teams: list[tuple[int, str]] = []
    visible: set[int] = set()
    replyable: set[int] = set()
    approver = escalations = False
    with connection.cursor() as cursor:
        pk = user.pk
        cursor.execute(
            _sql(), [pk, pk, pk, pk, pk, EscalationStatus.OPEN, pk, DepartmentDelivery.IN_APP]
        )
        for kind, pk, name, can_reply in cursor.fetchall():
            if kind == "role":
                groups.add(name)
            elif kind == "team":
                teams.append((pk, name))
            elif kind == "channel":
                visible.add(pk)
                if can_reply:
                    replyable.add(pk)
            elif kind == "approver":
                approver = True
            else:
                escalations = True
    if getattr(user, "is_superuser", False):
        role: Role | None = Role.ADMIN
    else:
        role = next((r for r in _ROLE_ORDER if r.value in groups), None)
    admin = role == Role.ADMIN
    found = Access(
        role=role,
        teams=tuple(sorted(set(teams), key=lambda t: (t[1], t[0]))),
        visible_channel_ids=None if admin else frozenset(visible),
        replyable_channel_ids=None if admin else frozenset(replyable),
        named_approver=approver,
        receives_escalations=escalations,
    )
    user.__dict__[_MEMO] = found
    return found


def access_forget(user: AnyUser) -> None:
    """After the user's role, teams or channel access changed: read them again next time."""
    user.__dict__.pop(_MEMO, None)
