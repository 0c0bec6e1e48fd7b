"""Sign-in security: TOTP two-factor with recovery codes, the "required for admins" rule, and
the middleware that holds a signed-in user at the second step until it is passed.

A password login whose user has a confirmed device leaves the session *pending*: every page
but the verify step and logout sends the user there. Brute force on the password is django-axes'
job (settings.AXES_*); a wrong second factor counts as a failed login there too.
"""

import base64
import io
import re
import time
from collections.abc import Callable
from typing import Any

import segno
from django.conf import settings
from django.contrib.auth import logout
from django.contrib.auth.models import User
from django.contrib.auth.signals import user_login_failed
from django.core.cache import cache
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import resolve_url
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django_htmx.http import HttpResponseClientRedirect
from django_otp import DEVICE_ID_SESSION_KEY, devices_for_user
from django_otp import login as otp_login
from django_otp.models import Device
from django_otp.oath import TOTP
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from governance.audit import audit_record
from governance.models import SecuritySettings
from governance.roles import is_admin
from scrm.types import AnyUser

# Set at login for a user with a confirmed device; cleared when the second step is passed.
PENDING_SESSION_KEY = "scrm_two_factor_pending"
# When the user signed in (epoch seconds): a sign-in ends SCRM_SESSION_MAX_AGE after it.
SIGNED_IN_AT_SESSION_KEY = "scrm_signed_in_at"
# Recovery codes made on the last request, shown once by the next page and then dropped.
NEW_CODES_SESSION_KEY = "scrm_new_recovery_codes"
RECOVERY_CODE_COUNT = 10
TOTP_DEVICE_NAME = "Authenticator app"
RECOVERY_DEVICE_NAME = "Recovery codes"
_SETTINGS_CACHE_KEY = "governance:security-settings"
_TOTP_CODE = re.compile(r"^\d{6}$")


# --- The organisation's rule --------------------------------------------------------------


def admin_two_factor_required() -> bool:
    """Whether admins must use two-factor. Read on every admin request, so kept in the shared
    cache (Redis in production) and refreshed whenever it is saved."""
    required = cache.get(_SETTINGS_CACHE_KEY)
    if required is None:
        row = SecuritySettings.objects.filter(pk=SecuritySettings.SINGLETON_ID).first()
        required = bool(row and row.require_two_factor_for_admins)
        cache.set(_SETTINGS_CACHE_KEY, required, None)
    return bool(required)


def security_settings_update(
    *, require_two_factor_for_admins: bool, actor: User, request: HttpRequest | None = None
) -> SecuritySettings:
    with transaction.atomic():
        row, _ = SecuritySettings.objects.select_for_update().get_or_create(
            pk=SecuritySettings.SINGLETON_ID
        )
        before = {"require_two_factor_for_admins": row.require_two_factor_for_admins}
        row.require_two_factor_for_admins = require_two_factor_for_admins
        row.updated_by = actor
        row.save()
        audit_record(
            action="security.settings_updated",
            actor=actor,
            obj=row,
            before=before,
            after={"require_two_factor_for_admins": require_two_factor_for_admins},
            request=request,
        )
        # Again once committed, in case a request cached the old value in between.
        transaction.on_commit(lambda: cache.delete(_SETTINGS_CACHE_KEY))
    cache.delete(_SETTINGS_CACHE_KEY)
    return row


# --- Devices ------------------------------------------------------------------------------


def totp_device_of(user: User) -> TOTPDevice | None:
    """The user's confirmed authenticator, if two-factor is on."""
    return TOTPDevice.objects.filter(user=user, confirmed=True).first()


def recovery_codes_left(user: User) -> int:
    return StaticToken.objects.filter(device__user=user, device__confirmed=True).count()


def has_two_factor(user: AnyUser) -> bool:
    return user.is_authenticated and any(True for _ in devices_for_user(user, confirmed=True))


def totp_setup_device(*, user: User) -> TOTPDevice:
    """The unconfirmed authenticator the user is setting up (made on first ask, so reloading
    the page keeps the secret they may already have scanned)."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("pk").first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name=TOTP_DEVICE_NAME, confirmed=False)
    return device


def totp_secret(device: TOTPDevice) -> str:
    """The secret as people type it into an app: base32 in groups of four."""
    secret = base64.b32encode(device.bin_key).decode().rstrip("=")
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


def qr_data_uri(text: str) -> str:
    """An SVG QR code as a data: URI, so the page needs no script and CSP only allows data:
    images."""
    buffer = io.BytesIO()
    segno.make(text, error="m").save(
        buffer, kind="svg", scale=5, border=2, dark="#000", light="#fff", xmldecl=False
    )
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode()


def totp_code(device: TOTPDevice, *, at: float | None = None) -> str:
    """The code the user's app shows at ``at`` (now by default); for tests and the demo."""
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time() if at is None else at
    return f"{totp.token():0{device.digits}d}"


def _clean(code: str) -> str:
    return re.sub(r"[\s-]+", "", code or "").lower()


def _recovery_codes_make(user: User) -> list[str]:
    StaticDevice.objects.filter(user=user).delete()
    device = StaticDevice.objects.create(user=user, name=RECOVERY_DEVICE_NAME, confirmed=True)
    codes = [StaticToken.random_token() for _ in range(RECOVERY_CODE_COUNT)]
    StaticToken.objects.bulk_create(StaticToken(device=device, token=code) for code in codes)
    return codes


def two_factor_enable(
    *, user: User, code: str, request: HttpRequest
) -> tuple[TOTPDevice, list[str]] | None:
    """Confirm the authenticator being set up with a code from it; make recovery codes and mark
    this session as verified. None if the code is wrong."""
    with transaction.atomic():
        device = (
            TOTPDevice.objects.select_for_update()
            .filter(user=user, confirmed=False)
            .order_by("pk")
            .first()
        )
        if device is None or not device.verify_token(_clean(code)):
            return None
        TOTPDevice.objects.filter(user=user).exclude(pk=device.pk).delete()
        device.confirmed = True
        device.save(update_fields=["confirmed"])
        codes = _recovery_codes_make(user)
        audit_record(action="two_factor.enabled", actor=user, obj=user, request=request)
    otp_login(request, device)
    request.session.pop(PENDING_SESSION_KEY, None)
    return device, codes


def two_factor_check(*, user: User, code: str) -> Device | None:
    """The device that accepts ``code``: six digits go to the authenticator, anything else is
    tried as a recovery code (which is then used up). Both are throttled by django-otp."""
    code = _clean(code)
    if not code:
        return None
    model: type[TOTPDevice] | type[StaticDevice] = (
        TOTPDevice if _TOTP_CODE.match(code) else StaticDevice
    )
    with transaction.atomic():
        for device in model.objects.select_for_update().filter(user=user, confirmed=True):
            if device.verify_token(code):
                return device
    return None


def two_factor_verify(*, user: User, code: str, request: HttpRequest) -> Device | None:
    """The second step of a login. A wrong code is a failed login: django-axes counts it
    towards the lockout, and the audit log sees it like a wrong password."""
    device = two_factor_check(user=user, code=code)
    if device is None:
        user_login_failed.send(
            sender=__name__,
            credentials={"username": user.get_username(), "second_factor": "********"},
            request=request,
        )
        return None
    otp_login(request, device)
    request.session.pop(PENDING_SESSION_KEY, None)
    return device


def two_factor_disable(*, user: User, code: str, request: HttpRequest) -> bool:
    """Remove the user's authenticator and recovery codes, proven with a current code."""
    if two_factor_check(user=user, code=code) is None:
        return False
    with transaction.atomic():
        for device in devices_for_user(user, confirmed=None):
            device.delete()
        audit_record(action="two_factor.disabled", actor=user, obj=user, request=request)
    request.session.pop(DEVICE_ID_SESSION_KEY, None)
    return True


def recovery_codes_regenerate(*, user: User, code: str, request: HttpRequest) -> list[str] | None:
    """New recovery codes (the old ones stop working), proven with an authenticator code."""
    device = totp_device_of(user)
    if device is None or not device.verify_token(_clean(code)):
        return None
    with transaction.atomic():
        codes = _recovery_codes_make(user)
        audit_record(
            action="two_factor.recovery_codes_regenerated", actor=user, obj=user, request=request
        )
    return codes


# --- Login and the middleware ------------------------------------------------------------


def two_factor_on_login(sender: object, request: HttpRequest | None, user: User, **_: Any) -> None:
    """Receiver of user_logged_in, for every way in (login page, admin login, tests): a user
    with a confirmed device must pass the second step before anything else."""
    if request is None or not hasattr(request, "session"):
        return
    request.session[SIGNED_IN_AT_SESSION_KEY] = time.time()
    request.session.pop(DEVICE_ID_SESSION_KEY, None)
    if has_two_factor(user):
        request.session[PENDING_SESSION_KEY] = True
    else:
        request.session.pop(PENDING_SESSION_KEY, None)
    admin_two_factor_required()  # warm the cache the middleware reads on every request


def safe_next(request: HttpRequest, default: str = "") -> str:
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return default or resolve_url(settings.LOGIN_REDIRECT_URL)


def _redirect(request: HttpRequest, url: str) -> HttpResponse:
    if getattr(request, "htmx", False):
        return HttpResponseClientRedirect(url)
    return HttpResponseRedirect(url)


# Pages a signed-in user may open while the second step is pending.
_PENDING_VIEWS = {"two_factor_verify", "logout"}
# ...and an admin who must still set two-factor up.
_SETUP_VIEWS = _PENDING_VIEWS | {"security", "two_factor_enable", "password_change"}


class TwoFactorMiddleware:
    """Holds a signed-in user at the verify step while it is pending, and sends an admin who
    must use two-factor but has none to the Security page. Costs no query for anyone else
    (the admin rule is read from the cache)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(
        self,
        request: HttpRequest,
        view_func: Callable[..., HttpResponse],
        view_args: tuple[Any, ...],
        view_kwargs: dict[str, Any],
    ) -> HttpResponse | None:
        user = request.user
        if not user.is_authenticated:
            return None
        match = request.resolver_match
        name = match.url_name if match is not None and not match.namespace else None
        if match is not None and match.namespace == "admin" and name != "logout":
            name = None
        here = request.get_full_path()
        if request.session.get(PENDING_SESSION_KEY):
            if name in _PENDING_VIEWS:
                return None
            return _redirect(request, f"{reverse('two_factor_verify')}?{urlencode({'next': here})}")
        if DEVICE_ID_SESSION_KEY in request.session or name in _SETUP_VIEWS:
            return None
        if admin_two_factor_required() and is_admin(user):
            if has_two_factor(user):
                # A device made after this session began: prove it once here.
                verify = reverse("two_factor_verify")
                return _redirect(request, f"{verify}?{urlencode({'next': here})}")
            return _redirect(request, reverse("security"))
        return None


class SessionLifetimeMiddleware:
    """Ends a sign-in SCRM_SESSION_MAX_AGE after it began, however busy it has been (with an
    idle timeout every request pushes the session's own expiry on, so that alone would not)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = request.session.get(SIGNED_IN_AT_SESSION_KEY)
        if started is not None and time.time() - started > settings.SCRM_SESSION_MAX_AGE:
            logout(request)
            login_url = resolve_url(settings.LOGIN_URL)
            return _redirect(request, f"{login_url}?{urlencode({'next': request.get_full_path()})}")
        return self.get_response(request)


class PermissionsPolicyMiddleware:
    """Switches off browser features the product never uses, for its pages and any injected
    content alike."""

    POLICY = "camera=(), microphone=(), geolocation=(), payment=(), usb=()"

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Permissions-Policy", self.POLICY)
        return response
