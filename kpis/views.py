from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import render

from governance.roles import is_manager_or_admin
from kpis.selectors import overview
from scrm.types import AuthedRequest

RANGES = (7, 30, 90)


def reports(request: AuthedRequest) -> HttpResponse:
    if not is_manager_or_admin(request.user):
        raise PermissionDenied("Reports are for managers and admins.")
    days = int(request.GET.get("days", 30)) if request.GET.get("days", "").isdigit() else 30
    days = days if days in RANGES else 30
    return render(
        request,
        "kpis/overview.html",
        {"overview": overview(user=request.user, days=days), "ranges": RANGES},
    )
