"""The REST API: ``/api/v1/`` resources, the OpenAPI schema and its browsable docs.

DRF authenticates API requests itself (tokens or the session) and answers 401/403 with the
API's error body, so these routes are exempt from the login middleware's redirect.
"""

from django.contrib.auth.decorators import login_not_required
from django.urls import URLPattern, URLResolver, include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import SimpleRouter

from channels_ingest import api as channels_api
from contacts import api as contacts_api
from conversations import api as conversations_api
from conversations import settings_api as routing_settings_api
from governance import api as governance_api
from kpis import api as kpis_api

router = SimpleRouter(trailing_slash=True)
router.register("contacts", contacts_api.ContactViewSet, basename="contact")
router.register("contact-imports", contacts_api.ContactImportViewSet, basename="contact-import")
router.register("contact-merges", contacts_api.ContactMergeViewSet, basename="merge")
router.register("identities", contacts_api.IdentityViewSet, basename="identity")
router.register(
    "merge-suggestions", contacts_api.MergeSuggestionViewSet, basename="merge-suggestion"
)
router.register("conversations", conversations_api.ConversationViewSet, basename="conversation")
router.register("messages", conversations_api.MessageViewSet, basename="message")
router.register("tags", conversations_api.TagViewSet, basename="tag")
router.register("notifications", conversations_api.NotificationViewSet, basename="notification")
router.register(
    "canned-responses", conversations_api.CannedResponseViewSet, basename="canned-response"
)
router.register("routing-rules", conversations_api.RoutingRuleViewSet, basename="routing-rule")
router.register("sla-policies", conversations_api.SlaPolicyViewSet, basename="sla-policy")
router.register(
    "business-hours", routing_settings_api.BusinessHoursViewSet, basename="business-hours"
)
router.register("departments", routing_settings_api.DepartmentViewSet, basename="department")
router.register(
    "escalation-paths", routing_settings_api.EscalationPathViewSet, basename="escalation-path"
)
router.register("capacities", routing_settings_api.CapacityViewSet, basename="capacity")
router.register(
    "webhook-endpoints", conversations_api.WebhookEndpointViewSet, basename="webhook-endpoint"
)
router.register("webhook-calls", conversations_api.WebhookCallViewSet, basename="webhook-call")
router.register("channels", channels_api.ChannelViewSet, basename="channel")
router.register("dead-letters", channels_api.DeadLetterViewSet, basename="dead-letter")
router.register("teams", governance_api.TeamViewSet, basename="team")
router.register("users", governance_api.UserViewSet, basename="user")
router.register("approvals", governance_api.ApprovalViewSet, basename="approval")
router.register("audit-log", governance_api.AuditEntryViewSet, basename="audit-entry")
router.register("tokens", governance_api.ApiTokenViewSet, basename="api-token")
router.register("kpi-targets", kpis_api.KpiTargetViewSet, basename="kpi-target")
router.register(
    "publishing-policies", governance_api.PublishingPolicyViewSet, basename="publishing-policy"
)
router.register(
    "retention-policies", governance_api.RetentionPolicyViewSet, basename="retention-policy"
)
router.register("retention-runs", governance_api.RetentionRunViewSet, basename="retention-run")


def _open(patterns: list[URLPattern | URLResolver]) -> list[URLPattern | URLResolver]:
    for pattern in patterns:
        if isinstance(pattern, URLPattern):
            login_not_required(pattern.callback)
    return patterns


urlpatterns = _open(
    [
        *router.urls,
        path("me/", governance_api.MeView.as_view(), name="me"),
        path("kpis/summary/", kpis_api.KpiSummaryView.as_view(), name="kpi-summary"),
        path("kpis/series/", kpis_api.KpiSeriesView.as_view(), name="kpi-series"),
        path("kpis/agents/", kpis_api.KpiAgentsView.as_view(), name="kpi-agents"),
        path("kpis/backlog/", kpis_api.KpiBacklogView.as_view(), name="kpi-backlog"),
        path("kpis/targets/", kpis_api.KpiTargetsView.as_view(), name="kpi-targets"),
        path(
            "inbound/<int:channel_id>/messages/",
            channels_api.InboundMessagesView.as_view(),
            name="inbound",
        ),
    ]
)

schema_urlpatterns = _open(
    [
        path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
        path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    ]
)

api_patterns: list[URLPattern | URLResolver] = [
    path("v1/", include((urlpatterns, "api"), namespace="api")),
    *schema_urlpatterns,
]
