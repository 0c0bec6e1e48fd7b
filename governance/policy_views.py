"""Publishing policy pages for admins: the default policy, per-channel policies, and a box to
test a message against the gate every outbound message passes."""

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db.models import Prefetch
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from channels_ingest.models import ChannelAccount
from governance.models import PublishingPolicy
from governance.policy import policy_delete, policy_save
from governance.policy_forms import PolicyForm, PolicyTestForm
from governance.roles import is_admin
from governance.services import OutboundDecision, outbound_check
from scrm.types import AuthedRequest

View = Callable[..., HttpResponse]


def admins_only(view: View) -> View:
    @wraps(view)
    def guarded(request: AuthedRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not is_admin(request.user):
            raise PermissionDenied("Publishing policies are set by admins.")
        return view(request, *args, **kwargs)

    return guarded


def _test_form(request: AuthedRequest) -> PolicyTestForm:
    users = User.objects.filter(is_active=True).order_by("username")
    return PolicyTestForm(request.POST or None, users=users)


def _list(
    request: AuthedRequest,
    test_form: PolicyTestForm,
    result: OutboundDecision | None = None,
) -> HttpResponse:
    policies = list(
        PublishingPolicy.objects.select_related("channel").prefetch_related(
            Prefetch("approvers", queryset=User.objects.order_by("username"))
        )
    )
    default = next((p for p in policies if p.channel_id is None), None)
    overrides = sorted((p for p in policies if p.channel_id), key=lambda p: str(p.channel))
    return render(
        request,
        "governance/policy_list.html",
        {
            "default": default,
            "builtin": PublishingPolicy(),
            "overrides": overrides,
            "can_add": ChannelAccount.objects.filter(publishing_policy__isnull=True).exists(),
            "test_form": test_form,
            "result": result,
        },
    )


@admins_only
def policy_list(request: AuthedRequest) -> HttpResponse:
    return _list(request, _test_form(request))


@admins_only
@require_POST
def policy_test(request: AuthedRequest) -> HttpResponse:
    """Run a message through ``outbound_check`` as the chosen sender would send it now."""
    form = _test_form(request)
    result = None
    if form.is_valid():
        result = outbound_check(
            user=form.sender_user(),
            channel=form.cleaned_data["channel"],
            text=form.cleaned_data["text"],
        )
    if request.htmx:
        return render(
            request, "governance/policy_test_result.html", {"test_form": form, "result": result}
        )
    return _list(request, form, result)


def _edit(request: AuthedRequest, policy: PublishingPolicy, *, new_channel: bool) -> HttpResponse:
    channels = (
        ChannelAccount.objects.filter(publishing_policy__isnull=True).order_by("name")
        if new_channel
        else None
    )
    form = PolicyForm(request.POST or None, instance=policy, channels=channels)
    if request.method == "POST" and form.is_valid():
        policy = form.save(commit=False)
        if new_channel:
            policy.channel = form.cleaned_data["channel"]
        policy = policy_save(
            policy=policy,
            approvers=form.cleaned_data["approvers"],
            actor=request.user,
            request=request,
        )
        messages.success(request, f"{policy} saved.")
        return redirect("governance:policies")
    return render(
        request,
        "governance/policy_form.html",
        {"form": form, "policy": policy, "new_channel": new_channel},
    )


@admins_only
def policy_default_edit(request: AuthedRequest) -> HttpResponse:
    """The default policy; saving it the first time replaces the built-in one."""
    policy = PublishingPolicy.objects.filter(channel__isnull=True).first() or PublishingPolicy()
    return _edit(request, policy, new_channel=False)


@admins_only
def policy_new(request: AuthedRequest) -> HttpResponse:
    return _edit(request, PublishingPolicy(), new_channel=True)


@admins_only
def policy_edit(request: AuthedRequest, pk: int) -> HttpResponse:
    policy = get_object_or_404(PublishingPolicy.objects.select_related("channel"), pk=pk)
    return _edit(request, policy, new_channel=False)


@admins_only
def policy_delete_view(request: AuthedRequest, pk: int) -> HttpResponse:
    policy = get_object_or_404(PublishingPolicy.objects.select_related("channel"), pk=pk)
    if request.method == "POST":
        name = str(policy)
        policy_delete(policy=policy, actor=request.user, request=request)
        messages.success(request, f"{name} deleted.")
        return redirect("governance:policies")
    return render(request, "governance/policy_confirm_delete.html", {"policy": policy})
