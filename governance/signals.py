"""Audit entries recorded from Django's signals: logins, and changes to users, roles, team
memberships and channel access, whichever path made them (the Django admin, a management
command, the shell). In the admin the actor is the admin's user (see ``audit_context``)."""

from contextvars import ContextVar
from typing import Any

from django.contrib.auth import get_user_model, user_logged_in, user_logged_out, user_login_failed
from django.contrib.auth.models import Group, User
from django.core.exceptions import ObjectDoesNotExist
from django.core.signals import request_finished, request_started
from django.db.models import Model
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save
from django.http import HttpRequest

from governance.audit import (
    ambient_actor,
    audit_defer,
    audit_record,
    changes,
    current_audit_batch,
    model_snapshot,
    request_finished_note,
    request_started_note,
    snapshot_fields,
    thing_name,
)
from governance.models import ChannelAccess, TeamMembership

# --- Logins ------------------------------------------------------------------------------


def _logged_in(sender: Any, request: HttpRequest | None, user: User, **kwargs: Any) -> None:
    audit_record(action="auth.login", actor=user, obj=user, request=request)


def _logged_out(sender: Any, request: HttpRequest | None, user: User | None, **kwargs: Any) -> None:
    audit_record(
        action="auth.logout",
        actor=user,
        obj=user if user is not None and user.pk else None,
        request=request,
    )


def _login_failed(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    # Only the name tried: the credentials also hold the password (masked, but not recorded).
    username = str(credentials.get(get_user_model().USERNAME_FIELD) or "")[:150]
    known = User.objects.filter(username=username).values_list("pk", flat=True).first()
    audit_record(
        action="auth.login_failed",
        request=request,
        object_type="auth.user",
        object_id=str(known or ""),
        object_repr=username,
        username=username,
    )


# --- Users --------------------------------------------------------------------------------

# What an admin may change about a person that governance cares about; never the password.
_USER_FIELDS = (
    "username",
    "email",
    "first_name",
    "last_name",
    "is_active",
    "is_staff",
    "is_superuser",
)


def _user_before(
    sender: Any, instance: User, raw: bool, update_fields: frozenset[str] | None, **kwargs: Any
) -> None:
    if raw or instance.pk is None:
        return
    # A login saves last_login only: not worth a read.
    if update_fields is not None and not update_fields & {*_USER_FIELDS, "password"}:
        return
    stored = User._base_manager.filter(pk=instance.pk).values(*_USER_FIELDS, "password").first()
    instance.__dict__["_audit_before"] = stored


def _user_saved(
    sender: Any,
    instance: User,
    created: bool,
    raw: bool,
    update_fields: frozenset[str] | None,
    **kwargs: Any,
) -> None:
    if raw:
        return
    after = model_snapshot(instance, _USER_FIELDS)
    if created:
        audit_record(action="user.created", obj=instance, after=after, actor=ambient_actor())
        return
    before = instance.__dict__.pop("_audit_before", None)
    if before is None:
        return
    old_password = before.pop("password")
    old, new = changes(before, after)
    if old or new:
        if old.get("is_active") is True and new.get("is_active") is False:
            action = "user.deactivated"
        elif old.get("is_active") is False and new.get("is_active") is True:
            action = "user.reactivated"
        else:
            action = "user.updated"
        audit_record(action=action, obj=instance, before=old, after=new, actor=ambient_actor())
    # Logging in re-saves the password alone when its hash is upgraded: not a change.
    if old_password != instance.password and update_fields != frozenset({"password"}):
        audit_record(action="user.password_changed", obj=instance, actor=ambient_actor())


def _user_deleted(sender: Any, instance: User, **kwargs: Any) -> None:
    audit_record(
        action="user.deleted",
        actor=ambient_actor(),
        obj=instance,
        before=model_snapshot(instance, _USER_FIELDS),
    )


# --- Roles (the user's groups) ---------------------------------------------------------------

# Users whose roles are changing: their pk -> (user, role names before), with the batch they
# change in (None: one add, remove or clear).
_RolesBefore = dict[int, tuple[User, list[str]]]
_roles_before: ContextVar[tuple[object | None, _RolesBefore] | None] = ContextVar(
    "audit_roles_before", default=None
)


def _role_names(user: User) -> list[str]:
    return sorted(user.groups.values_list("name", flat=True))


def _roles_changing(
    sender: Any,
    instance: Model,
    action: str,
    reverse: bool,
    pk_set: set[int] | None,
    **kwargs: Any,
) -> None:
    if action.startswith("pre_"):
        # A fresh start for each change, so what a failed one left behind is never recorded.
        batch, state = current_audit_batch(), _roles_before.get()
        if batch is None or state is None or state[0] is not batch:
            state = (batch, {})
            _roles_before.set(state)
        pending = state[1]
        if isinstance(instance, User):
            users = [instance]
        elif isinstance(instance, Group):
            users = list(
                User.objects.filter(pk__in=pk_set)
                if pk_set is not None
                else instance.user_set.all()
            )
        else:
            return
        for user in users:
            if user.pk not in pending:
                pending[user.pk] = (user, _role_names(user))
    elif action.startswith("post_") and not audit_defer("roles", _roles_record):
        _roles_record()


def _roles_record() -> None:
    state = _roles_before.get()
    _roles_before.set(None)
    for user, before in (state[1] if state is not None else {}).values():
        after = _role_names(user)
        if after != before:
            audit_record(
                action="user.roles_changed",
                actor=ambient_actor(),
                obj=user,
                before={"roles": before},
                after={"roles": after},
            )


# --- Team memberships and channel access -----------------------------------------------------


def _row_before(sender: type[Model], instance: Model, raw: bool, **kwargs: Any) -> None:
    if raw or instance.pk is None:
        return
    stored = sender._base_manager.filter(pk=instance.pk).first()
    instance.__dict__["_audit_before"] = model_snapshot(stored) if stored is not None else None


def _label(instance: Model) -> str:
    try:
        return str(instance)
    except ObjectDoesNotExist:  # a cascade deleted what the name is made of
        return f"{thing_name(instance)} #{instance.pk}"


def _row_saved(
    sender: type[Model], instance: Model, created: bool, raw: bool, **kwargs: Any
) -> None:
    if raw:
        return
    after = model_snapshot(instance)
    who: dict[str, Any] = {
        "obj": instance,
        "object_repr": _label(instance),
        "actor": ambient_actor(),
    }
    if created:
        audit_record(action=f"{thing_name(sender)}.created", after=after, **who)
        return
    old, new = changes(instance.__dict__.pop("_audit_before", None), after)
    if old or new:
        audit_record(action=f"{thing_name(sender)}.updated", before=old, after=new, **who)


def _row_deleted(sender: type[Model], instance: Model, **kwargs: Any) -> None:
    audit_record(
        action=f"{thing_name(sender)}.deleted",
        actor=ambient_actor(),
        obj=instance,
        object_repr=_label(instance),
        before=model_snapshot(instance, snapshot_fields(sender)),
    )


def connect() -> None:
    """Called once from the app's ready()."""
    request_started.connect(_note_request, dispatch_uid="governance.audit_request_started")
    request_finished.connect(_forget_request, dispatch_uid="governance.audit_request_finished")
    user_logged_in.connect(_logged_in, dispatch_uid="governance.audit_login")
    user_logged_out.connect(_logged_out, dispatch_uid="governance.audit_logout")
    user_login_failed.connect(_login_failed, dispatch_uid="governance.audit_login_failed")
    pre_save.connect(_user_before, sender=User, dispatch_uid="governance.audit_user_before")
    post_save.connect(_user_saved, sender=User, dispatch_uid="governance.audit_user_saved")
    post_delete.connect(_user_deleted, sender=User, dispatch_uid="governance.audit_user_deleted")
    m2m_changed.connect(
        _roles_changing, sender=User.groups.through, dispatch_uid="governance.audit_roles"
    )
    for model in (TeamMembership, ChannelAccess):
        uid = f"governance.audit_{model._meta.model_name}"
        pre_save.connect(_row_before, sender=model, dispatch_uid=f"{uid}_before")
        post_save.connect(_row_saved, sender=model, dispatch_uid=f"{uid}_saved")
        post_delete.connect(_row_deleted, sender=model, dispatch_uid=f"{uid}_deleted")


def _note_request(sender: Any, **kwargs: Any) -> None:
    request_started_note(**kwargs)


def _forget_request(sender: Any, **kwargs: Any) -> None:
    request_finished_note(**kwargs)
