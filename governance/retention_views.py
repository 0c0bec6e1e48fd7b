"""The retention settings page: the default policy, each channel's own, the latest runs, and
a button to run now. Admins only; ``governance.retention`` does the work."""

from dataclasses import dataclass

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from channels_ingest.models import ChannelAccount
from governance.models import RetentionAction, RetentionPolicy
from governance.retention import (
    REPORTS_LONGEST_RANGE_DAYS,
    RetentionPolicyError,
    retention_apply,
    retention_policy_remove,
    retention_policy_save,
    retention_settings,
)
from governance.roles import is_admin
from scrm.types import AuthedRequest

DEFAULT_SCOPE = "default"


class RetentionPolicyForm(forms.Form):
    keep_days = forms.IntegerField(label="Keep for (days)", min_value=1, max_value=36500)
    action = forms.ChoiceField(label="Then", choices=RetentionAction.choices)
    is_active = forms.BooleanField(label="Active", required=False)

    @classmethod
    def for_policy(cls, policy: RetentionPolicy | None, prefix: str) -> "RetentionPolicyForm":
        initial = (
            {"keep_days": policy.keep_days, "action": policy.action, "is_active": policy.is_active}
            if policy is not None
            else {"keep_days": 365, "action": RetentionAction.ANONYMISE, "is_active": True}
        )
        return cls(initial=initial, prefix=prefix)


@dataclass
class _Row:
    scope: str
    channel: ChannelAccount | None
    policy: RetentionPolicy | None
    effective: RetentionPolicy | None
    form: RetentionPolicyForm


def _admin_only(request: AuthedRequest) -> None:
    if not is_admin(request.user):
        raise PermissionDenied("Retention is for admins.")


def retention_settings_view(request: AuthedRequest) -> HttpResponse:
    _admin_only(request)
    scope = request.POST.get("scope", "") if request.method == "POST" else ""
    bound: RetentionPolicyForm | None = None
    if scope:
        channel = None
        if scope != DEFAULT_SCOPE:
            channel = ChannelAccount.objects.filter(pk=int(scope) if scope.isdigit() else 0).first()
            if channel is None:
                raise Http404("No such channel.")
        bound = RetentionPolicyForm(request.POST, prefix=scope)
        if bound.is_valid():
            try:
                retention_policy_save(
                    channel=channel,
                    keep_days=bound.cleaned_data["keep_days"],
                    action=bound.cleaned_data["action"],
                    is_active=bound.cleaned_data["is_active"],
                    actor=request.user,
                    request=request,
                )
            except RetentionPolicyError as exc:
                bound.add_error(None, str(exc))
            else:
                messages.success(request, f"Retention of {channel or 'the default'} saved.")
                return redirect("governance:retention")

    state = retention_settings()
    rows = [
        _Row(
            scope=DEFAULT_SCOPE,
            channel=None,
            policy=state.default,
            effective=state.default,
            form=RetentionPolicyForm.for_policy(state.default, DEFAULT_SCOPE),
        )
    ] + [
        _Row(
            scope=str(item.channel.pk),
            channel=item.channel,
            policy=item.policy,
            effective=item.effective,
            form=RetentionPolicyForm.for_policy(item.policy or state.default, str(item.channel.pk)),
        )
        for item in state.channels
    ]
    for row in rows:
        if bound is not None and row.scope == scope:
            row.form = bound
    return render(
        request,
        "governance/retention.html",
        {
            "default_row": rows[0],
            "channel_rows": rows[1:],
            "runs": state.runs,
            "delete_min_days": REPORTS_LONGEST_RANGE_DAYS,
            "open_scope": scope,
        },
        status=400 if bound is not None else 200,
    )


@require_POST
def retention_policy_remove_view(request: AuthedRequest, pk: int) -> HttpResponse:
    _admin_only(request)
    channel = ChannelAccount.objects.filter(pk=pk).first()
    if channel is None:
        raise Http404("No such channel.")
    if retention_policy_remove(channel=channel, actor=request.user, request=request):
        messages.success(request, f"{channel} follows the default retention again.")
    return redirect("governance:retention")


@require_POST
def retention_run_view(request: AuthedRequest) -> HttpResponse:
    """Runs in the request: fine for a small installation; the nightly task does the same."""
    _admin_only(request)
    runs = retention_apply(actor=request.user, request=request)
    removed = sum(run.messages for run in runs)
    payloads = sum(run.payloads for run in runs)
    messages.success(
        request,
        f"Retention ran on {len(runs)} channel{'s' if len(runs) != 1 else ''}: "
        f"{removed} message{'s' if removed != 1 else ''} and {payloads} other "
        f"text{'s' if payloads != 1 else ''} removed.",
    )
    return redirect("governance:retention")
