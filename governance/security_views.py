"""The Security page (two-factor on and off, recovery codes, the admins' rule) and the second
step of a login. The work is done in governance.security."""

from typing import Any

from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_client_username, get_cool_off, get_failure_limit
from django import forms
from django.contrib import messages
from django.contrib.auth import logout
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST
from django_otp import DEVICE_ID_SESSION_KEY

from governance import security
from governance.models import SecuritySettings
from governance.roles import is_admin
from scrm.types import AuthedRequest


class CodeForm(forms.Form):
    code = forms.CharField(
        label="Code",
        max_length=32,
        strip=True,
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "autocapitalize": "off", "spellcheck": "false"}
        ),
    )


class SecurityPolicyForm(forms.Form):
    require_two_factor_for_admins = forms.BooleanField(
        label="Require two-factor for admins", required=False
    )


def locked_out(
    request: HttpRequest,
    original_response: HttpResponse | None = None,
    credentials: dict[str, Any] | None = None,
) -> HttpResponse:
    """The page django-axes answers with once a username and address are locked out
    (settings.AXES_LOCKOUT_CALLABLE)."""
    cool_off = get_cool_off(request)
    context = {
        "username": get_client_username(request, credentials) or "",
        "failure_limit": get_failure_limit(request, credentials),
        "cooloff_minutes": round(cool_off.total_seconds() / 60) if cool_off else None,
    }
    return render(request, "registration/locked_out.html", context, status=429)


def two_factor_verify(request: AuthedRequest) -> HttpResponse:
    """The second step of a login: a code from the authenticator app, or a recovery code."""
    user = request.user
    next_url = security.safe_next(request)
    pending = bool(request.session.get(security.PENDING_SESSION_KEY))
    if not pending and (
        DEVICE_ID_SESSION_KEY in request.session or not security.has_two_factor(user)
    ):
        return redirect(next_url)
    credentials = {"username": user.get_username()}
    if AxesProxyHandler.is_locked(request, credentials):
        logout(request)
        return locked_out(request, None, credentials)
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        code = form.cleaned_data["code"]
        if security.two_factor_verify(user=user, code=code, request=request):
            return redirect(next_url)
        if getattr(request, "axes_locked_out", False):
            # That was the last try allowed: the user starts again once the cool-off is over.
            logout(request)
            return locked_out(request, None, credentials)
        form.add_error("code", "That code did not match. Try the current one, or a recovery code.")
    return render(
        request,
        "registration/two_factor_verify.html",
        {"form": form, "next": next_url},
        status=400 if form.errors else 200,
    )


def security_page(request: AuthedRequest) -> HttpResponse:
    user = request.user
    device = security.totp_device_of(user)
    context: dict[str, object] = {
        "device": device,
        "form": CodeForm(),
        "new_codes": request.session.pop(security.NEW_CODES_SESSION_KEY, None),
        "admin": is_admin(user),
        "required_for_me": is_admin(user) and security.admin_two_factor_required(),
    }
    if device is None:
        setup = security.totp_setup_device(user=user)
        context["setup_qr"] = security.qr_data_uri(setup.config_url)
        context["setup_secret"] = security.totp_secret(setup)
    else:
        context["codes_left"] = security.recovery_codes_left(user)
    if context["admin"]:
        row = SecuritySettings.objects.filter(pk=SecuritySettings.SINGLETON_ID).first()
        context["policy_form"] = SecurityPolicyForm(
            initial={
                "require_two_factor_for_admins": bool(row and row.require_two_factor_for_admins)
            }
        )
    return render(request, "governance/security.html", context)


@require_POST
def two_factor_enable(request: AuthedRequest) -> HttpResponse:
    form = CodeForm(request.POST)
    done = form.is_valid() and security.two_factor_enable(
        user=request.user, code=form.cleaned_data["code"], request=request
    )
    if done:
        _, codes = done
        request.session[security.NEW_CODES_SESSION_KEY] = codes
        messages.success(request, "Two-factor is on: logins now ask for a code from your app.")
    else:
        messages.error(
            request,
            "That code did not match. Check the time on your phone and try the current code.",
        )
    return redirect("security")


@require_POST
def two_factor_disable(request: AuthedRequest) -> HttpResponse:
    if is_admin(request.user) and security.admin_two_factor_required():
        messages.error(request, "Admins must keep two-factor on while the rule requires it.")
        return redirect("security")
    form = CodeForm(request.POST)
    if form.is_valid() and security.two_factor_disable(
        user=request.user, code=form.cleaned_data["code"], request=request
    ):
        messages.success(request, "Two-factor is off.")
    else:
        messages.error(request, "That code did not match, so two-factor stays on.")
    return redirect("security")


@require_POST
def recovery_codes_regenerate(request: AuthedRequest) -> HttpResponse:
    form = CodeForm(request.POST)
    codes = form.is_valid() and security.recovery_codes_regenerate(
        user=request.user, code=form.cleaned_data["code"], request=request
    )
    if codes:
        request.session[security.NEW_CODES_SESSION_KEY] = codes
        messages.success(request, "New recovery codes made; the old ones no longer work.")
    else:
        messages.error(request, "That code did not match, so your recovery codes are unchanged.")
    return redirect("security")


@require_POST
def security_policy(request: AuthedRequest) -> HttpResponse:
    if not is_admin(request.user):
        raise PermissionDenied("Only admins set the sign-in rules.")
    form = SecurityPolicyForm(request.POST)
    form.is_valid()
    required = bool(form.cleaned_data.get("require_two_factor_for_admins"))
    if required and not security.has_two_factor(request.user):
        messages.error(request, "Turn two-factor on for yourself first, then require it.")
        return redirect("security")
    security.security_settings_update(
        require_two_factor_for_admins=required, actor=request.user, request=request
    )
    messages.success(
        request,
        "Admins must now use two-factor." if required else "Two-factor is optional for admins.",
    )
    return redirect("security")
