"""The channels pages for admins: health, settings, credentials and dead letters."""

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from channels_ingest.forms import ChannelForm
from channels_ingest.models import ChannelAccount, DeadLetter, DeadLetterStatus
from channels_ingest.platforms import Platform
from channels_ingest.selectors import channels_with_health
from channels_ingest.services import (
    CREDENTIAL_FIELDS,
    channel_save,
    dead_letter_discard,
    dead_letter_retry,
)
from governance.roles import is_admin
from scrm.types import AuthedRequest


def _admin_only(request: AuthedRequest) -> None:
    if not is_admin(request.user):
        raise PermissionDenied("Channels are managed by admins.")


def channel_list(request: AuthedRequest) -> HttpResponse:
    _admin_only(request)
    return render(request, "channels_ingest/list.html", {"channels": channels_with_health()})


def channel_edit(request: AuthedRequest, pk: int | None = None) -> HttpResponse:
    _admin_only(request)
    channel = get_object_or_404(ChannelAccount, pk=pk) if pk else ChannelAccount()
    form = ChannelForm(request.POST or None, instance=channel)
    if request.method == "POST" and form.is_valid():
        channel = form.save(commit=False)
        channel.settings = form.settings_value()
        channel_save(channel=channel, credentials=form.credentials(), actor=request.user)
        messages.success(request, f"{channel.name} saved.")
        return redirect("channels:list")
    webhook_path = ""
    if channel.pk and channel.platform in ("x", "facebook"):
        webhook_path = f"/webhooks/{channel.platform}/{channel.pk}/"
    return render(
        request,
        "channels_ingest/form.html",
        {
            "form": form,
            "channel": channel,
            "settings_fields": [f for f in form if f.name not in form.secret_names()],
            "secret_groups": [
                (platform, f"{Platform(platform).label} credentials", [form[n] for n in names])
                for platform, names in CREDENTIAL_FIELDS.items()
                if names
            ],
            "webhook_url": request.build_absolute_uri(webhook_path) if webhook_path else "",
        },
    )


def dead_letter_list(request: AuthedRequest) -> HttpResponse:
    _admin_only(request)
    status = request.GET.get("status", DeadLetterStatus.NEW)
    letters = DeadLetter.objects.select_related("channel").order_by("-created_at")
    if status in DeadLetterStatus.values:
        letters = letters.filter(status=status)
    channel = request.GET.get("channel", "")
    if channel.isdigit():
        letters = letters.filter(channel_id=int(channel))
    return render(
        request,
        "channels_ingest/dead_letters.html",
        {
            "letters": letters[:200],
            "status": status,
            "statuses": DeadLetterStatus.choices,
            "channels": ChannelAccount.objects.only("id", "name"),
            "channel": int(channel) if channel.isdigit() else None,
        },
    )


@require_POST
def dead_letter_action(request: AuthedRequest, pk: int, action: str) -> HttpResponse:
    _admin_only(request)
    letter = get_object_or_404(DeadLetter, pk=pk)
    if letter.status != DeadLetterStatus.NEW:
        messages.error(request, f"Dead letter #{letter.pk} was already {letter.status}.")
        return redirect("channels:dead_letters")
    if action == "retry":
        letter = dead_letter_retry(letter=letter, actor=request.user)
        if letter.status == DeadLetterStatus.RETRIED:
            messages.success(request, f"Dead letter #{letter.pk} was read and stored.")
        else:
            messages.error(request, f"Dead letter #{letter.pk}: {letter.error}")
    elif action == "discard":
        dead_letter_discard(letter=letter, actor=request.user)
        messages.success(request, f"Dead letter #{letter.pk} discarded.")
    else:
        raise PermissionDenied("Unknown action.")
    return redirect("channels:dead_letters")
