"""KPIs over the API: the same figures as the reports, for managers and admins.

Query parameters are the reports page's (`range` preset or `start`/`end`, `grain`, and the
filters), checked by the same form, so a URL of the dashboard and of the API agree.
"""

from dataclasses import asdict
from datetime import date
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from channels_ingest.platforms import Platform
from governance.audit import audit_change, audit_deletion
from kpis.forms import PRESETS, KpiTargetForm, ReportForm
from kpis.metrics import GRAINS, Summary, agents, backlog_by_age, series, summary
from kpis.models import KpiTarget
from kpis.targets import targets_status, targets_visible_to
from scrm.api import IsManagerOrAdmin, cursor_page, form_errors, request_user

PARAMETERS = [
    OpenApiParameter(
        "range",
        OpenApiTypes.STR,
        enum=[value for value, _ in PRESETS],
        description="A preset (days, this/last month, this quarter) or custom with start/end",
    ),
    OpenApiParameter("start", OpenApiTypes.DATE, description="First day of a custom range"),
    OpenApiParameter("end", OpenApiTypes.DATE, description="Last day of a custom range"),
    OpenApiParameter("channel", OpenApiTypes.INT, description="A channel's id"),
    OpenApiParameter("platform", OpenApiTypes.STR, description="x, facebook, demo, api"),
    OpenApiParameter("team", OpenApiTypes.INT, description="A team's id"),
    OpenApiParameter("agent", OpenApiTypes.INT, description="A user's id"),
    OpenApiParameter("priority", OpenApiTypes.INT, enum=[1, 2, 3, 4]),
    OpenApiParameter("tag", OpenApiTypes.INT, description="A tag's id"),
]
GRAIN = OpenApiParameter("grain", OpenApiTypes.STR, enum=list(GRAINS))


def _form(request: Request) -> ReportForm:
    today = timezone.localdate(timezone.now(), timezone.get_default_timezone())
    form = ReportForm(request.query_params, user=request_user(request), today=today)
    if not form.is_valid():
        raise ValidationError(form.errors.get_json_data())
    return form


class SpreadSerializer(serializers.Serializer[Any]):
    n = serializers.IntegerField()
    median = serializers.FloatField(allow_null=True, help_text="Seconds")
    p90 = serializers.FloatField(allow_null=True, help_text="Seconds")
    mean = serializers.FloatField(allow_null=True, help_text="Seconds")


class SpeedSerializer(serializers.Serializer[Any]):
    first_response = SpreadSerializer()
    first_response_business = SpreadSerializer()
    next_response = SpreadSerializer()
    next_response_business = SpreadSerializer()
    resolution = SpreadSerializer()
    resolution_business = SpreadSerializer()


class CountSerializer(serializers.Serializer[Any]):
    name = serializers.CharField()
    count = serializers.IntegerField()


class OutcomesSerializer(serializers.Serializer[Any]):
    resolved = serializers.IntegerField()
    in_channel = serializers.IntegerField()
    escalated = serializers.IntegerField()
    first_resolved = serializers.IntegerField(help_text="Conversations first resolved in the range")
    reopened = serializers.IntegerField(help_text="Of those first resolved, reopened since")
    in_channel_rate = serializers.FloatField(allow_null=True, help_text="Percent")
    escalation_rate = serializers.FloatField(allow_null=True, help_text="Percent")
    reopen_rate = serializers.FloatField(
        allow_null=True, help_text="Percent of those first resolved in the range"
    )
    by_outcome = CountSerializer(many=True)
    by_department = CountSerializer(many=True)


class SentimentSerializer(serializers.Serializer[Any]):
    positive = serializers.IntegerField()
    neutral = serializers.IntegerField()
    negative = serializers.IntegerField()
    positive_share = serializers.FloatField(allow_null=True)
    neutral_share = serializers.FloatField(allow_null=True)
    negative_share = serializers.FloatField(allow_null=True)
    conversations = serializers.IntegerField(help_text="Resolved, with a first and last score")
    improved = serializers.IntegerField()
    worsened = serializers.IntegerField()
    mean_change = serializers.FloatField(allow_null=True)


class LoyaltySerializer(serializers.Serializer[Any]):
    conversations = serializers.IntegerField()
    contacts = serializers.IntegerField()
    repeat_contacts = serializers.IntegerField()
    returning_30 = serializers.IntegerField()
    returning_90 = serializers.IntegerField()
    returning_30_share = serializers.FloatField(allow_null=True)
    returning_90_share = serializers.FloatField(allow_null=True)
    vip_conversations = serializers.IntegerField()
    vip_answered = serializers.IntegerField()
    vip_coverage = serializers.FloatField(allow_null=True)


class RangeSerializer(serializers.Serializer[Any]):
    start = serializers.DateField()
    end = serializers.DateField()


class SummarySerializer(serializers.Serializer[Any]):
    range = RangeSerializer()
    inbound = serializers.IntegerField()
    outbound = serializers.IntegerField()
    new_conversations = serializers.IntegerField()
    new_contacts = serializers.IntegerField()
    speed = SpeedSerializer()
    first_response_met = serializers.IntegerField()
    first_response_missed = serializers.IntegerField()
    first_response_sla = serializers.FloatField(allow_null=True, help_text="Percent")
    resolution_met = serializers.IntegerField()
    resolution_missed = serializers.IntegerField()
    resolution_sla = serializers.FloatField(allow_null=True, help_text="Percent")
    breaches = serializers.IntegerField()
    outcomes = OutcomesSerializer()
    sentiment = SentimentSerializer()
    loyalty = LoyaltySerializer()
    backlog = serializers.IntegerField()
    unassigned = serializers.IntegerField()


class SummaryPairSerializer(serializers.Serializer[Any]):
    current = SummarySerializer()
    previous = SummarySerializer(help_text="The same length of time just before")


def _summary(s: Summary) -> dict[str, Any]:
    data = asdict(s)
    data["first_response_sla"] = s.first_response_sla
    data["resolution_sla"] = s.resolution_sla
    o = s.outcomes
    data["outcomes"].update(
        in_channel_rate=o.in_channel_rate,
        escalation_rate=o.escalation_rate,
        reopen_rate=o.reopen_rate,
        by_outcome=[{"name": k, "count": n} for k, n in o.by_outcome],
        by_department=[{"name": k, "count": n} for k, n in o.by_department],
    )
    data["sentiment"].update(
        positive_share=s.sentiment.positive_share,
        neutral_share=s.sentiment.neutral_share,
        negative_share=s.sentiment.negative_share,
    )
    data["loyalty"].update(
        returning_30_share=s.loyalty.returning_30_share,
        returning_90_share=s.loyalty.returning_90_share,
        vip_coverage=s.loyalty.vip_coverage,
    )
    return data


class KpiSummaryView(APIView):
    permission_classes = [IsManagerOrAdmin]

    @extend_schema(parameters=PARAMETERS, responses=SummaryPairSerializer)
    def get(self, request: Request) -> Response:
        """Every figure of the range, and of the period before it, in the reports' scope."""
        form = _form(request)
        user, range_, filters = request_user(request), form.date_range, form.filters
        return Response(
            SummaryPairSerializer(
                {
                    "current": _summary(summary(user=user, range_=range_, filters=filters)),
                    "previous": _summary(
                        summary(user=user, range_=range_.previous(), filters=filters)
                    ),
                }
            ).data
        )


class PointSerializer(serializers.Serializer[Any]):
    start = serializers.DateField()
    inbound = serializers.IntegerField()
    outbound = serializers.IntegerField()
    new_conversations = serializers.IntegerField()
    resolved = serializers.IntegerField()
    first_response_median = serializers.FloatField(allow_null=True, help_text="Seconds")
    positive = serializers.IntegerField()
    neutral = serializers.IntegerField()
    negative = serializers.IntegerField()
    by_channel = serializers.DictField(
        child=serializers.IntegerField(), help_text="Inbound messages per channel name"
    )


class KpiSeriesView(APIView):
    permission_classes = [IsManagerOrAdmin]

    @extend_schema(parameters=[*PARAMETERS, GRAIN], responses=PointSerializer(many=True))
    def get(self, request: Request) -> Response:
        """Figures per day, week or month of the range."""
        form = _form(request)
        points = series(
            user=request_user(request),
            range_=form.date_range,
            filters=form.filters,
            grain=form.bucket,
        )
        return Response(PointSerializer([asdict(p) for p in points], many=True).data)


class AgentRowSerializer(serializers.Serializer[Any]):
    agent_id = serializers.IntegerField()
    name = serializers.CharField()
    handled = serializers.IntegerField(help_text="Conversations they resolved")
    responses = serializers.IntegerField()
    first_response_median = serializers.FloatField(allow_null=True, help_text="Seconds")
    resolution_median = serializers.FloatField(allow_null=True, help_text="Seconds")
    sla_met = serializers.IntegerField()
    sla_missed = serializers.IntegerField()
    sla_compliance = serializers.FloatField(allow_null=True, help_text="Percent")


class KpiAgentsView(APIView):
    permission_classes = [IsManagerOrAdmin]

    @extend_schema(parameters=PARAMETERS, responses=AgentRowSerializer(many=True))
    def get(self, request: Request) -> Response:
        """Per agent, for managers and admins."""
        form = _form(request)
        rows = agents(user=request_user(request), range_=form.date_range, filters=form.filters)
        return Response(
            AgentRowSerializer(
                [asdict(r) | {"sla_compliance": r.sla_compliance} for r in rows], many=True
            ).data
        )


class BacklogSerializer(serializers.Serializer[Any]):
    age = serializers.CharField()
    open = serializers.IntegerField()
    unassigned = serializers.IntegerField()


class KpiBacklogView(APIView):
    permission_classes = [IsManagerOrAdmin]

    @extend_schema(parameters=PARAMETERS, responses=BacklogSerializer(many=True))
    def get(self, request: Request) -> Response:
        """Open conversations now, by age (the range does not change it)."""
        form = _form(request)
        rows = backlog_by_age(user=request_user(request), filters=form.filters)
        return Response(
            BacklogSerializer(
                [{"age": a, "open": o, "unassigned": u} for a, o, u in rows], many=True
            ).data
        )


class TargetStatusSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    metric = serializers.CharField()
    title = serializers.CharField()
    period = serializers.CharField()
    scope = serializers.CharField()
    start = serializers.DateField()
    end = serializers.DateField()
    value = serializers.FloatField(allow_null=True, help_text="Minutes, percent or a count")
    target = serializers.FloatField()
    goal = serializers.FloatField(help_text="The target, prorated while a count's period runs")
    previous = serializers.FloatField(allow_null=True, help_text="The whole period before")
    previous_pace = serializers.FloatField(
        allow_null=True,
        help_text="What the trend compares with: the period before, a count prorated to the "
        "share of its period gone by, as the goal is",
    )
    status = serializers.ChoiceField(choices=["met", "at_risk", "missed", "no_data"])


class KpiTargetsView(APIView):
    permission_classes = [IsManagerOrAdmin]

    @extend_schema(responses=TargetStatusSerializer(many=True))
    def get(self, request: Request) -> Response:
        """Every target in force, evaluated over its period so far."""
        today: date = timezone.localdate(timezone.now(), timezone.get_default_timezone())
        rows = [
            {
                "id": s.target.pk,
                "metric": s.target.metric,
                "title": s.target.get_metric_display(),
                "period": s.target.period,
                "scope": s.scope,
                "start": s.range.start,
                "end": s.range.end,
                "value": s.value,
                "target": s.target.value,
                "goal": s.goal,
                "previous": s.previous,
                "previous_pace": s.previous_pace,
                "status": s.status,
            }
            for s in targets_status(user=request_user(request), today=today)
        ]
        return Response(TargetStatusSerializer(rows, many=True).data)


# --- Targets (as on Reports → Targets) --------------------------------------------------------


class KpiTargetSerializer(serializers.ModelSerializer[KpiTarget]):
    """A figure committed to in advance, for a scope and a period."""

    channel = serializers.IntegerField(
        source="channel_id",
        allow_null=True,
        required=False,
        help_text="A channel's id (one you see), or null for every channel",
    )
    platform = serializers.ChoiceField(
        choices=Platform.choices, required=False, allow_blank=True, help_text="Empty: any"
    )
    team = serializers.IntegerField(
        source="team_id", allow_null=True, required=False, help_text="A team's id, or null"
    )
    created_by = serializers.IntegerField(source="created_by_id", read_only=True, allow_null=True)

    class Meta:
        model = KpiTarget
        fields = [
            "id",
            "metric",
            "value",
            "period",
            "channel",
            "platform",
            "team",
            "at_risk_margin",
            "valid_from",
            "note",
            "created_by",
            "created_at",
        ]
        read_only_fields = ["created_at"]

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Checked by the Targets page's form, for the user's channels."""
        target = self.instance or KpiTarget()

        def value(name: str, attname: str | None = None) -> Any:
            attname = attname or name
            found = attrs.get(attname, getattr(target, attname))
            return "" if found is None else found

        data = {
            "metric": value("metric"),
            "value": value("value"),
            "period": value("period"),
            "channel": value("channel", "channel_id"),
            "platform": value("platform"),
            "team": value("team", "team_id"),
            "at_risk_margin": value("at_risk_margin"),
            "valid_from": value("valid_from"),
            "note": value("note"),
        }
        form = KpiTargetForm(data, instance=target, user=self.context["request"].user)
        if not form.is_valid():
            raise serializers.ValidationError(form_errors(form))
        self.checked_form = form
        return attrs


class KpiTargetViewSet(viewsets.ModelViewSet[KpiTarget]):
    """Targets on every channel or on a channel you see: managers and admins set them, as on
    the Targets page (changes audited). Their status is at ``/kpis/targets/``."""

    permission_classes = [IsManagerOrAdmin]
    serializer_class = KpiTargetSerializer
    pagination_class = cursor_page("metric", "period", "pk")
    http_method_names = ["get", "post", "patch", "delete"]

    def get_queryset(self) -> QuerySet[KpiTarget]:
        return targets_visible_to(request_user(self.request))

    def perform_create(self, serializer: Any) -> None:
        serializer.checked_form.instance.created_by = request_user(self.request)
        self.perform_update(serializer)

    def perform_update(self, serializer: Any) -> None:
        form = serializer.checked_form
        with audit_change(form.instance, actor=request_user(self.request), thing="kpi_target"):
            serializer.instance = form.save()

    def perform_destroy(self, instance: KpiTarget) -> None:
        with audit_deletion(instance, actor=request_user(self.request), thing="kpi_target"):
            instance.delete()
