from django.core.exceptions import PermissionDenied
from django.db.models import Prefetch
from django.http import HttpResponse
from django.shortcuts import render

from channels_ingest.selectors import channels_with_health
from governance.models import ChannelAccess, Team
from governance.roles import is_admin
from scrm.types import AuthedRequest


def governance_home(request: AuthedRequest) -> HttpResponse:
    if not is_admin(request.user):
        raise PermissionDenied("Governance is for admins.")
    channels = channels_with_health().prefetch_related(
        Prefetch("access", queryset=ChannelAccess.objects.select_related("team"))
    )
    teams = Team.objects.prefetch_related("members")
    return render(request, "governance/home.html", {"channels": channels, "teams": teams})
