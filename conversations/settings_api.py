"""API resources of the routing settings pages for admins: business hours, departments,
escalation paths and auto-assignment capacities.

Input is checked by the pages' own forms (``settings_forms``), so the API accepts what the
pages accept and says what they say; changes are audited as the pages audit them.
"""

from collections.abc import Iterable
from typing import Any

import django_filters
from django.conf import settings
from django.db import transaction
from django.db.models import Model, ProtectedError, RestrictedError
from django.forms import BaseForm
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from conversations.api import _AuditedAdminViewSet
from conversations.business_hours import WEEKDAY_NAMES
from conversations.models import (
    BusinessCalendar,
    Department,
    DepartmentDelivery,
    EscalationLevel,
    EscalationPath,
)
from conversations.presence import agents_online
from conversations.routing import agents_load
from conversations.settings_forms import (
    CalendarForm,
    CapacityForm,
    Catalog,
    DepartmentForm,
    EscalationPathForm,
    still_used_message,
)
from governance.audit import audit_change, audit_deletion
from governance.models import TeamMembership
from scrm.api import Conflict, IsAdmin, cursor_page, form_errors, request_user


def _pk(value: int | None) -> str:
    return "" if value is None else str(value)


class _FormChecked(serializers.ModelSerializer[Any]):
    """Valid when the settings page's form, given the same values, is valid."""

    form_names: dict[str, str] = {}

    def page_form(self, attrs: dict[str, Any]) -> BaseForm:
        raise NotImplementedError

    def problems(self, form: BaseForm) -> dict[str, list[str]]:
        return form_errors(form, self.form_names)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        form = self.page_form(attrs)
        if not form.is_valid():
            raise serializers.ValidationError(self.problems(form))
        self.checked_form = form
        return attrs


class _FormSavedViewSet(_AuditedAdminViewSet):
    """Saved by the page's form inside the page's audit; a delete of something still in use
    is 409 with the page's explanation."""

    noun = ""
    audit_related: list[str] = []

    def perform_create(self, serializer: Any) -> None:
        self._save(serializer)

    def perform_update(self, serializer: Any) -> None:
        self._save(serializer)

    def _save(self, serializer: Any) -> None:
        form = serializer.checked_form
        with audit_change(
            form.instance, actor=request_user(self.request), related=self.audit_related
        ):
            serializer.instance = form.save()

    def perform_destroy(self, instance: Model) -> None:
        name = str(instance)
        users: Iterable[Model]
        try:
            with transaction.atomic(), audit_deletion(instance, actor=request_user(self.request)):
                instance.delete()
            return
        except ProtectedError as error:
            users = error.protected_objects
        except RestrictedError as error:
            users = error.restricted_objects
        raise Conflict(still_used_message(self.noun, name, users))


# --- Business hours ------------------------------------------------------------------------


def _interval() -> serializers.ListField:
    return serializers.ListField(
        child=serializers.CharField(max_length=8),
        min_length=2,
        max_length=2,
        help_text='[opens, closes] as "HH:MM"; "24:00" closes at midnight',
    )


def _no_other_keys(self: serializers.Serializer[Any], data: Any) -> Any:
    """Refuse keys other than the weekdays': a serializer leaves them out silently, and the
    admin would believe the hours of a day "7" saved."""
    unknown = sorted(str(k) for k in data if k not in self.fields) if isinstance(data, dict) else []
    if unknown:
        raise serializers.ValidationError(
            f'Unknown weekday {", ".join(unknown)}: the days are "0" (Monday) to "6" (Sunday).'
        )
    return serializers.Serializer.to_internal_value(self, data)


WeeklyHoursSerializer = type(
    "WeeklyHoursSerializer",
    (serializers.Serializer,),
    {
        "to_internal_value": _no_other_keys,
        "__doc__": 'Open hours per weekday, "0" (Monday) to "6" (Sunday); a day left out is '
        "closed.",
        **{
            str(day): serializers.ListField(
                child=_interval(),
                required=False,
                max_length=2,
                help_text=f"{name}: up to two intervals",
            )
            for day, name in enumerate(WEEKDAY_NAMES)
        },
    },
)


class HolidaySerializer(serializers.Serializer[Any]):
    date = serializers.DateField()
    name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")


class BusinessHoursSerializer(_FormChecked):
    """Opening hours in a time zone, with holidays: SLA clocks run only while open."""

    time_zone = serializers.CharField(
        max_length=64,
        required=False,
        help_text="An IANA time zone such as Europe/Berlin; new calendars default to the "
        "organisation's",
    )
    weekly_hours = WeeklyHoursSerializer(
        required=False, help_text="New calendars default to Monday to Friday, 09:00-17:00"
    )
    holidays = HolidaySerializer(
        many=True, required=False, help_text="Closed all day; the list replaces the stored one"
    )

    class Meta:
        model = BusinessCalendar
        fields = ["id", "name", "time_zone", "is_default", "weekly_hours", "holidays"]
        extra_kwargs = {
            "name": {"validators": []},
            "is_default": {
                "help_text": "The organisation's hours; the old default steps down",
                "validators": [],
            },
        }

    def page_form(self, attrs: dict[str, Any]) -> CalendarForm:
        calendar = self.instance or BusinessCalendar()
        zone = calendar.time_zone if calendar.pk else settings.TIME_ZONE
        data: dict[str, Any] = {
            "name": attrs.get("name", calendar.name),
            "time_zone": attrs.get("time_zone", zone),
        }
        if attrs.get("is_default", calendar.is_default):
            data["is_default"] = "on"
        weekly = attrs.get("weekly_hours", calendar.weekly_hours)
        for day in range(len(WEEKDAY_NAMES)):
            for slot, (opens, closes) in enumerate(weekly.get(str(day)) or []):
                data[f"d{day}_{slot}_opens"] = opens
                if closes == "24:00":
                    data[f"d{day}_{slot}_midnight"] = "on"
                else:
                    data[f"d{day}_{slot}_closes"] = closes
        if "holidays" in attrs:
            holidays = [(h["date"], h["name"]) for h in attrs["holidays"]]
        else:
            stored = calendar.holidays.all() if calendar.pk else []
            holidays = [(h.date, h.name) for h in stored]
        for n, (day, name) in enumerate(holidays):
            data[f"holidays-{n}-date"] = day.isoformat()
            data[f"holidays-{n}-name"] = name
        return CalendarForm(data, instance=calendar)

    def problems(self, form: BaseForm) -> dict[str, list[str]]:
        assert isinstance(form, CalendarForm)
        grid = {
            f"d{day}_{slot}_{part}": "weekly_hours"
            for day in range(len(WEEKDAY_NAMES))
            for slot in (0, 1)
            for part in ("opens", "closes", "midnight")
        }
        found = form_errors(form, grid)
        found.pop("non_field_errors", None)
        for name, messages in form.problems.items():
            if messages:
                found.setdefault(name, []).extend(messages)
        return found


class BusinessHoursViewSet(_FormSavedViewSet):
    """Business hours (Routing → Business hours): SLA clocks run only while open."""

    serializer_class = BusinessHoursSerializer
    pagination_class = cursor_page("name", "pk")
    queryset = BusinessCalendar.objects.prefetch_related("holidays")
    noun = "Business hours"
    audit_related = ["holidays"]


# --- Departments ---------------------------------------------------------------------------


class DepartmentSerializer(_FormChecked):
    """Where escalations go: a team's queue, an email address or a signed webhook."""

    team = serializers.IntegerField(
        source="team_id",
        allow_null=True,
        required=False,
        help_text="A team's id: in-app escalations land in its queue",
    )
    email = serializers.CharField(
        max_length=254,
        allow_blank=True,
        required=False,
        help_text="Email delivery: escalations are mailed here with a link to answer",
    )
    endpoint = serializers.IntegerField(
        source="endpoint_id",
        allow_null=True,
        required=False,
        help_text="Webhook delivery: a webhook endpoint's id, called signed",
    )

    class Meta:
        model = Department
        fields = ["id", "name", "delivery", "team", "email", "endpoint", "created_at"]
        read_only_fields = ["created_at"]
        extra_kwargs = {
            "name": {"validators": []},
            "delivery": {"help_text": "Only what this delivery uses is kept"},
        }

    def page_form(self, attrs: dict[str, Any]) -> DepartmentForm:
        department = self.instance or Department()
        data = {
            "name": attrs.get("name", department.name),
            "delivery": attrs.get("delivery", department.delivery or DepartmentDelivery.IN_APP),
            "team": _pk(attrs.get("team_id", department.team_id)),
            "email": attrs.get("email", department.email),
            "endpoint": _pk(attrs.get("endpoint_id", department.endpoint_id)),
        }
        return DepartmentForm(data, instance=department)


class DepartmentViewSet(_FormSavedViewSet):
    """Where escalations go: a team's queue, an email address or a signed webhook."""

    serializer_class = DepartmentSerializer
    pagination_class = cursor_page("name", "pk")
    queryset = Department.objects.all()
    noun = "Department"


# --- Escalation paths ----------------------------------------------------------------------


class EscalationLevelSerializer(serializers.ModelSerializer[EscalationLevel]):
    department = serializers.IntegerField(
        source="department_id", allow_null=True, required=False, help_text="A department's id"
    )
    user = serializers.IntegerField(
        source="user_id", allow_null=True, required=False, help_text="An active user's id"
    )

    class Meta:
        model = EscalationLevel
        fields = ["position", "department", "user"]
        read_only_fields = ["position"]


class EscalationPathSerializer(_FormChecked):
    """Levels of departments and people, tried in order."""

    levels = EscalationLevelSerializer(
        many=True,
        required=False,
        help_text="In order; each names a department or a person, not both. The list replaces "
        "the stored one.",
    )
    form_names = {"__all__": "levels"}

    class Meta:
        model = EscalationPath
        fields = ["id", "name", "description", "levels"]
        extra_kwargs: dict[str, dict[str, Any]] = {"name": {"validators": []}}

    def page_form(self, attrs: dict[str, Any]) -> EscalationPathForm:
        path = self.instance or EscalationPath()
        data = {
            "name": attrs.get("name", path.name),
            "description": attrs.get("description", path.description),
        }
        if "levels" in attrs:
            levels = [(lv.get("department_id"), lv.get("user_id")) for lv in attrs["levels"]]
        else:
            stored = path.levels.all() if path.pk else []
            levels = [(lv.department_id, lv.user_id) for lv in stored]
        for n, (department, user) in enumerate(levels):
            target = ""
            if department is not None and user is None:
                target = f"department:{department}"
            elif user is not None and department is None:
                target = f"user:{user}"
            data[f"levels-{n}-target"] = target
        return EscalationPathForm(data, instance=path, catalog=Catalog.load())


class EscalationPathViewSet(_FormSavedViewSet):
    """Escalation paths: levels of departments and people, tried in order."""

    serializer_class = EscalationPathSerializer
    pagination_class = cursor_page("name", "pk")
    queryset = EscalationPath.objects.prefetch_related("levels")
    noun = "Escalation path"
    audit_related = ["levels"]


# --- Auto-assignment capacities -----------------------------------------------------------


class CapacitySerializer(serializers.ModelSerializer[TeamMembership]):
    """A team member's auto-assignment capacity."""

    team_name = serializers.CharField(source="team.name", read_only=True)
    user_name = serializers.SerializerMethodField()
    capacity = serializers.IntegerField(
        allow_null=True,
        min_value=0,
        help_text="The most active conversations the member holds; null for no limit",
    )
    online = serializers.SerializerMethodField(help_text="Seen in the last few minutes")
    active_conversations = serializers.SerializerMethodField(
        help_text="Conversations assigned to the member and not resolved"
    )

    class Meta:
        model = TeamMembership
        fields = [
            "id",
            "team",
            "team_name",
            "user",
            "user_name",
            "capacity",
            "online",
            "active_conversations",
        ]
        read_only_fields = ["team", "user"]

    def get_user_name(self, membership: TeamMembership) -> str:
        return membership.user.get_full_name() or membership.user.username

    def get_online(self, membership: TeamMembership) -> bool:
        return membership.user_id in self.context.get("online", ())

    def get_active_conversations(self, membership: TeamMembership) -> int:
        load: dict[int, int] = self.context.get("load", {})
        return load.get(membership.user_id, 0)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        membership = self.instance
        assert isinstance(membership, TeamMembership)
        name = f"capacity_{membership.pk}"
        capacity = attrs.get("capacity", membership.capacity)
        form = CapacityForm({name: _pk(capacity)}, memberships=[membership])
        if not form.is_valid():
            raise serializers.ValidationError(form_errors(form, {name: "capacity"}))
        self.checked_form = form
        return attrs


class CapacityFilter(django_filters.FilterSet):
    team = django_filters.NumberFilter()
    user = django_filters.NumberFilter()

    class Meta:
        model = TeamMembership
        fields: list[str] = []


class CapacityViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[TeamMembership]
):
    """Auto-assignment (Routing → Auto-assignment): each active team member's capacity, with
    whether they are online and how many conversations they hold now."""

    permission_classes = [IsAdmin]
    serializer_class = CapacitySerializer
    filterset_class = CapacityFilter
    pagination_class = cursor_page("team_id", "pk")
    queryset = TeamMembership.objects.filter(user__is_active=True).select_related("team", "user")
    http_method_names = ["get", "patch"]

    def _data(self, memberships: list[TeamMembership]) -> Any:
        ids = {m.user_id for m in memberships}
        load = agents_load(user_ids=ids)
        context = {
            **self.get_serializer_context(),
            "online": agents_online(user_ids=ids),
            "load": load,
        }
        return CapacitySerializer(memberships, many=True, context=context).data

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        assert page is not None
        return self.get_paginated_response(self._data(list(page)))

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return Response(self._data([self.get_object()])[0])

    @extend_schema(responses=CapacitySerializer)
    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Set the capacity (audited as on the page)."""
        membership = self.get_object()
        serializer = CapacitySerializer(membership, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        serializer.checked_form.save(actor=request_user(request))
        return Response(self._data([membership])[0])
