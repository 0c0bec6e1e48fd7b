"""A user's role, read once per request from their groups."""

from governance.models import Role
from scrm.types import AnyUser

_ROLE_ORDER = [Role.ADMIN, Role.MANAGER, Role.AGENT]


def role_of(user: AnyUser) -> Role | None:
    """The highest role the user holds; superusers are admins. Cached on the user object."""
    if not user.is_authenticated:
        return None
    # Memoised on the user object, which lives as long as the request.
    if "_scrm_role" in user.__dict__:
        return user.__dict__["_scrm_role"]
    if getattr(user, "is_superuser", False):
        role: Role | None = Role.ADMIN
    else:
        names = set(user.groups.values_list("name", flat=True))
        role = next((r for r in _ROLE_ORDER if r.value in names), None)
    user.__dict__["_scrm_role"] = role
    return role


def is_admin(user: AnyUser) -> bool:
    return role_of(user) == Role.ADMIN


def is_manager_or_admin(user: AnyUser) -> bool:
    return role_of(user) in (Role.ADMIN, Role.MANAGER)
