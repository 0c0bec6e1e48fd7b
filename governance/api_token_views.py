"""The API tokens page: each user makes and revokes their own keys; admins also see everyone's
and may revoke any."""

from django import forms
from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from governance.api_tokens import (
    api_token_create,
    api_token_revocable_by,
    api_token_revoke,
    api_tokens_visible_to,
)
from governance.roles import is_admin
from scrm.types import AuthedRequest


class ApiTokenForm(forms.Form):
    name = forms.CharField(
        max_length=100, help_text="What the key is for, e.g. “CRM sync” or “BI export”."
    )


def api_tokens(request: AuthedRequest) -> HttpResponse:
    """GET lists the tokens; POST makes one and shows its key, this once."""
    form = ApiTokenForm(request.POST or None)
    new_key = ""
    if request.method == "POST" and form.is_valid():
        _, new_key = api_token_create(user=request.user, name=form.cleaned_data["name"])
        form = ApiTokenForm()
    tokens = api_tokens_visible_to(user=request.user)
    return render(
        request,
        "governance/api_tokens.html",
        {
            "form": form,
            "new_key": new_key,
            "own": [t for t in tokens if t.user_id == request.user.pk],
            "others": [t for t in tokens if t.user_id != request.user.pk and t.is_active]
            if is_admin(request.user)
            else [],
        },
    )


@require_POST
def api_token_revoke_view(request: AuthedRequest, pk: int) -> HttpResponse:
    token = api_tokens_visible_to(user=request.user).filter(pk=pk).first()
    if token is None or not api_token_revocable_by(token=token, user=request.user):
        raise Http404("No such token.")
    api_token_revoke(token=token, actor=request.user)
    messages.success(request, f"The token “{token.name}” was revoked.")
    return redirect("api_tokens")
