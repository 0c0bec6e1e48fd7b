from django.core.exceptions import PermissionDenied
from django.db.models import Count, Prefetch, Q
from django.http import HttpResponse
from django.shortcuts import render

from channels_ingest.models import ChannelAccount, DeadLetterStatus
from governance.models import ChannelAccess, Team
from governance.roles import is_admin
from scrm.types import AuthedRequest


def governance_home(request: AuthedRequest) -> HttpResponse:
    if not is_admin(request.user):
        raise PermissionDenied("Governance is for admins.")
    channels = (
        ChannelAccount.objects.select_related("default_team")
        .prefetch_related(Prefetch("access", queryset=ChannelAccess.objects.select_related("team")))
        .annotate(
            open_dead_letters=Count(
                "dead_letters", filter=Q(dead_letters__status=DeadLetterStatus.NEW)
            )
        )
    )
    teams = Team.objects.prefetch_related("members")
    return render(request, "governance/home.html", {"channels": channels, "teams": teams})
