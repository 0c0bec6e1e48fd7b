"""What every API view shares: permissions by role, cursor pagination, the error body, the
per-token rate limit, conditional requests (ETag / If-Match), and the schema's error responses.

Access itself is decided where the browser pages decide it: views start from the selectors
(``conversations_visible_to`` and the like) and the role checks of ``governance.roles``.
"""

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.forms import BaseForm
from django.http import Http404
from drf_spectacular.utils import extend_schema_field
from rest_framework import exceptions, pagination, permissions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle

from governance.models import ApiToken

if TYPE_CHECKING:
    from rest_framework.views import APIView
from governance.roles import is_admin, is_manager_or_admin


def request_user(request: Request) -> User:
    """The user of a request past the permission checks (never the anonymous one there)."""
    return cast(User, request.user)


class IsAdmin(permissions.BasePermission):
    message = "Only admins may use this resource."

    def has_permission(self, request: Request, view: "APIView") -> bool:
        return bool(request.user and is_admin(request.user))


class IsManagerOrAdmin(permissions.BasePermission):
    message = "Only managers and admins may use this resource."

    def has_permission(self, request: Request, view: "APIView") -> bool:
        return bool(request.user and is_manager_or_admin(request.user))


class CursorPage(pagination.CursorPagination):
    """Stable pages however many rows are added meanwhile; ``page_size`` up to 200."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
    ordering = ("-created_at", "-pk")

    def decode_cursor(self, request: Request) -> Any:
        # DRF answers a garbled cursor with 404; it is bad input, not a missing resource.
        try:
            return super().decode_cursor(request)
        except exceptions.NotFound:
            raise exceptions.ValidationError({"cursor": ["This cursor is not valid."]}) from None


class TokenRateThrottle(SimpleRateThrottle):
    """Requests per token (per user for the browser's session, per address for the anonymous):
    one script cannot use up the allowance of another key of the same user."""

    scope = "api"

    def get_cache_key(self, request: Request, view: "APIView") -> str | None:
        if isinstance(request.auth, ApiToken):
            ident = f"token-{request.auth.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"user-{request.user.pk}"
        else:
            ident = f"ip-{self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}


class PreconditionFailed(exceptions.APIException):
    status_code = status.HTTP_412_PRECONDITION_FAILED
    default_detail = "The resource changed since you read it: read it again and retry."
    default_code = "precondition_failed"


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the resource's current state."
    default_code = "conflict"


class ErrorSerializer(serializers.Serializer[Any]):
    """Every error answers with this body."""

    code = serializers.CharField(help_text="A stable, machine-readable name of the error")
    detail = serializers.CharField(help_text="What went wrong, in plain words")
    fields = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="For invalid input: the messages of each field ('non_field_errors' for all)",
    )
    retry_after = serializers.IntegerField(
        required=False, help_text="For 429: seconds to wait before trying again"
    )


def _messages(value: Any) -> list[str]:
    if isinstance(value, list):
        return [m for item in value for m in _messages(item)]
    if isinstance(value, dict):
        return [f"{k}: {m}" for k, v in value.items() for m in _messages(v)]
    return [str(value)]


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, with every error body in one shape: ``code``, ``detail``, and ``fields``
    for invalid input."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or None)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    from rest_framework.views import exception_handler  # it reads the settings naming us

    response = exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    body: dict[str, Any]
    if isinstance(exc, exceptions.ValidationError):
        data = exc.detail
        fields = (
            {str(k): _messages(v) for k, v in data.items()}
            if isinstance(data, dict)
            else {"non_field_errors": _messages(data)}
        )
        first = next(iter(fields.values()), ["Invalid input."])
        body = {
            "code": "invalid",
            "detail": first[0] if first else "Invalid input.",
            "fields": fields,
        }
    else:
        codes = exc.get_codes()
        body = {
            "code": codes if isinstance(codes, str) else exc.default_code,
            "detail": " ".join(_messages(exc.detail)),
        }
    wait = getattr(exc, "wait", None)
    if isinstance(exc, exceptions.Throttled) and wait is not None:
        body["retry_after"] = max(1, int(wait))
    response.data = body
    return response


def form_errors(form: BaseForm, names: Mapping[str, str] | None = None) -> dict[str, list[str]]:
    """A page's form's problems by the API's field names: ``names`` renames the form's fields
    (``"__all__"`` for its own problems, else ``non_field_errors``)."""
    names = {"__all__": "non_field_errors", **(names or {})}
    found: dict[str, list[str]] = {}
    for name, messages in form.errors.items():
        found.setdefault(names.get(name, name), []).extend(str(m) for m in messages)
    return found


def etag_of(*parts: object) -> str:
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:32]
    return f'"{digest}"'


def precondition_check(request: Request, current: str) -> None:
    """Refuse a write made against an older version: ``If-Match`` with a stale ETag is 412.
    Without the header the write goes ahead (last write wins, as in the browser)."""
    wanted = request.headers.get("If-Match", "")
    if not wanted or wanted.strip() == "*":
        return
    tags = {tag.strip().removeprefix("W/") for tag in wanted.split(",")}
    if current not in tags:
        raise PreconditionFailed()


def cursor_page(*ordering: str) -> type[CursorPage]:
    """A cursor pagination in this order; the last field must be unique (``pk``)."""
    return type("OrderedCursorPage", (CursorPage,), {"ordering": ordering})


@extend_schema_field({"type": "string", "description": "A URL, or empty when none is set"})
class BlankableUrlField(serializers.URLField):
    """A URL that may be empty: the schema must not promise a URL where "" is stored."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_blank", True)
        super().__init__(**kwargs)


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def json_without_nul(value: Any) -> Any:
    """A validator for JSON input: PostgreSQL cannot store a NUL character in JSON."""
    if _has_nul(value):
        raise serializers.ValidationError("Text may not contain NUL characters.")
    return value
