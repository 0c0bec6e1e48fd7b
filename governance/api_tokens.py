"""Personal API tokens: made and revoked by their user on the profile page (admins may revoke
any), checked on every API request by ``ApiTokenAuthentication``."""

import hashlib
import secrets
from datetime import timedelta

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from governance.audit import audit_actor_set, audit_record
from governance.models import ApiToken
from governance.roles import is_admin
from scrm.types import AnyUser

KEY_PREFIX = "scrm_"
# How often the last use is written back: a busy script would otherwise write on every call.
LAST_USED_PRECISION = timedelta(minutes=1)


def api_key_hash(key: str) -> str:
    """Keys are 256 random bits, so a plain SHA-256 is enough to store them safely."""
    return hashlib.sha256(key.encode()).hexdigest()


@transaction.atomic
def api_token_create(*, user: User, name: str) -> tuple[ApiToken, str]:
    """A new token for the user, and its key: the only time the key exists outside a hash."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user,
        name=name.strip()[:100] or "API token",
        prefix=key[:12],
        key_hash=api_key_hash(key),
    )
    audit_record(action="api_token.created", actor=user, obj=token, owner=user.pk)
    return token, key


def api_token_revocable_by(*, token: ApiToken, user: AnyUser) -> bool:
    return user.is_authenticated and (token.user_id == user.pk or is_admin(user))


@transaction.atomic
def api_token_revoke(*, token: ApiToken, actor: User) -> ApiToken:
    """Switch a token off for good. Revoking a revoked token changes nothing."""
    revoked = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now(), revoked_by=actor
    )
    token.refresh_from_db()
    if revoked:
        audit_record(action="api_token.revoked", actor=actor, obj=token, owner=token.user_id)
    return token


def api_tokens_visible_to(*, user: AnyUser) -> QuerySet[ApiToken]:
    """A user's own tokens; admins see everyone's (to revoke them)."""
    if not user.is_authenticated:
        return ApiToken.objects.none()
    tokens = ApiToken.objects.select_related("user", "revoked_by")
    if not is_admin(user):
        tokens = tokens.filter(user_id=user.pk)
    return tokens.order_by("-created_at", "-pk")


class ApiTokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer scrm_...``. A revoked token, or one of an inactive user, is
    refused with 401."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[User, ApiToken] | None:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() not in (b"bearer", b"token"):
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Send the token as: Authorization: Bearer <key>.")
        try:
            key = header[1].decode()
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("The token is not valid.") from None
        token = (
            ApiToken.objects.select_related("user")
            .filter(key_hash=api_key_hash(key), revoked_at__isnull=True)
            .first()
        )
        if token is None or not token.user.is_active:
            raise exceptions.AuthenticationFailed("The token is not valid or was revoked.")
        now = timezone.now()
        if token.last_used_at is None or now - token.last_used_at > LAST_USED_PRECISION:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        # Entries recorded from model signals during this request name the token's user.
        audit_actor_set(token.user)
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return self.keyword
