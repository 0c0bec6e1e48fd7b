"""A user's role, read once per request with the rest of their access."""

from governance.models import Role
from scrm.types import AnyUser


def role_of(user: AnyUser) -> Role | None:
    """The highest role the user holds; superusers are admins."""
    from governance.access import access_of

    return access_of(user).role


def is_admin(user: AnyUser) -> bool:
    return role_of(user) == Role.ADMIN


def is_manager_or_admin(user: AnyUser) -> bool:
    return role_of(user) in (Role.ADMIN, Role.MANAGER)
