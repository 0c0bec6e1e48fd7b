"""API resources of conversations: the inbox (its filters, via django-filter), one
conversation's actions with optimistic concurrency, messages (replies through governance,
notes), tags, and the admins' routing rules, SLA policies and outbound webhooks.

Everything starts from ``conversations_visible_to`` / ``messages_visible_to`` and calls the
services the browser's views call.
"""

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from typing import Any, TypeVar, cast

import django_filters
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Field, Model, ProtectedError, QuerySet, RestrictedError
from django.utils import timezone
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

from channels_ingest.platforms import Platform
from conversations import services
from conversations.escalations import (
    ANSWER_OUTCOMES,
    SUPPORT_STEERS,
    escalation_answer,
    escalation_answerable_by,
    escalation_is_addressed_to,
    escalation_open,
    escalation_raise,
    escalation_steerable_by,
    escalation_withdraw,
)
from conversations.models import (
    CannedResponse,
    Conversation,
    Department,
    Direction,
    Escalation,
    EscalationPath,
    EscalationStatus,
    EscalationTrigger,
    Message,
    MessageKind,
    Notification,
    Priority,
    RoutingRule,
    SlaPolicy,
    SlaState,
    Status,
    Tag,
    WebhookCall,
    WebhookCallStatus,
    WebhookEndpoint,
)
from conversations.presence import agent_seen, presence_report
from conversations.rules import EVENTS, KINDS, PRIORITIES, RuleError, rule_validate
from conversations.selectors import (
    INBOX_VIEWS,
    SORTS,
    InboxFilters,
    assignable_agents,
    canned_responses_usable_by,
    conversation_for_user,
    conversation_takeable_by,
    conversations_visible_to,
    inbox_beyond,
    inbox_cursor,
    inbox_queryset,
    inbox_sorted,
    messages_visible_to,
    notifications_for,
)
from conversations.settings_forms import (
    DRY_RUN_STATES,
    SLA_TARGET_MAX_MINUTES,
    SLA_TARGETS,
    Catalog,
    DryRunForm,
    RuleMoveForm,
    endpoint_needed,
    endpoint_secret_needed,
    rule_position_take,
    rules_dry_run,
    sla_policy_problems,
)
from conversations.webhook_calls import webhook_call_redeliver
from conversations.webhook_events import WEBHOOK_EVENTS
from conversations.webhook_guard import webhook_address_problem
from governance.approvals import reply_retry, reply_submit
from governance.audit import audit_change, audit_deletion
from governance.models import Role
from scrm.api import (
    Conflict,
    CursorPage,
    IsAdmin,
    cursor_page,
    etag_of,
    form_errors,
    json_without_nul,
    precondition_check,
    request_user,
)

# --- Conversations ------------------------------------------------------------------------


class ContactBriefSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    name = serializers.CharField()
    is_vip = serializers.BooleanField()
    external_crm_id = serializers.CharField()
    external_crm_url = serializers.CharField()


class ConversationSerializer(serializers.ModelSerializer[Conversation]):
    contact = ContactBriefSerializer(read_only=True)
    platform = serializers.CharField(source="channel.platform", read_only=True)
    tags = serializers.SlugRelatedField[Tag](many=True, read_only=True, slug_field="name")
    sla_state = serializers.SerializerMethodField()
    last_message_direction = serializers.ChoiceField(
        choices=Direction.choices, allow_blank=True, read_only=True
    )
    version = serializers.SerializerMethodField(
        help_text="The ETag: send it back as If-Match to change the conversation safely"
    )

    class Meta:
        model = Conversation
        fields = [
            "id",
            "subject",
            "status",
            "priority",
            "channel",
            "platform",
            "team",
            "assignee",
            "contact",
            "tags",
            "is_monitoring",
            "sentiment",
            "message_count",
            "last_message_preview",
            "last_message_direction",
            "last_message_at",
            "waiting_since",
            "first_response_at",
            "resolved_at",
            "snoozed_until",
            "sla_state",
            "sla_due_at",
            "created_at",
            "updated_at",
            "version",
        ]
        read_only_fields = fields

    @extend_schema_field(
        serializers.ChoiceField(choices=[("", "No target running"), *SlaState.choices])
    )
    def get_sla_state(self, conversation: Conversation) -> str:
        return conversation.sla_state()

    def get_version(self, conversation: Conversation) -> str:
        return conversation_etag(conversation)


def conversation_etag(conversation: Conversation) -> str:
    """Changes with every write to the conversation, tags included."""
    tags = sorted(tag.pk for tag in conversation.tags.all())
    return etag_of(conversation.pk, conversation.updated_at.isoformat(), tags)


def _choices(values: dict[str, str]) -> list[tuple[str, str]]:
    return list(values.items())


class ConversationFilter(django_filters.FilterSet):
    """The inbox's filters; ``inbox_queryset`` applies them, as on the Inbox page."""

    view = django_filters.ChoiceFilter(choices=_choices(INBOX_VIEWS), method="_inbox")
    status = django_filters.ChoiceFilter(choices=Status.choices, method="_inbox")
    channel = django_filters.NumberFilter(method="_inbox")
    platform = django_filters.ChoiceFilter(choices=Platform.choices, method="_inbox")
    team = django_filters.NumberFilter(method="_inbox")
    assignee = django_filters.CharFilter(method="_inbox", help_text="A user id, or 'none'")
    priority = django_filters.TypedChoiceFilter(
        choices=Priority.choices, coerce=int, method="_inbox"
    )
    sentiment = django_filters.ChoiceFilter(
        choices=[("positive", "Positive"), ("neutral", "Neutral"), ("negative", "Negative")],
        method="_inbox",
    )
    tag = django_filters.CharFilter(method="_inbox", max_length=50)
    sla = django_filters.ChoiceFilter(choices=SlaState.choices, method="_inbox")
    since = django_filters.DateFilter(method="_inbox", help_text="Last activity on or after")
    until = django_filters.DateFilter(method="_inbox", help_text="Last activity on or before")
    q = django_filters.CharFilter(
        method="_inbox", max_length=200, help_text="Message bodies, contact names and handles"
    )
    sort = django_filters.ChoiceFilter(
        choices=_choices(SORTS),
        method="_inbox",
        help_text="The order, as on the Inbox page: newest activity first (the default), "
        "waiting longest, priority, or SLA due soonest",
    )

    class Meta:
        model = Conversation
        fields: list[str] = []

    def _inbox(self, queryset: QuerySet[Conversation], name: str, value: Any) -> Any:
        return queryset

    def filter_queryset(self, queryset: QuerySet[Conversation]) -> QuerySet[Conversation]:
        data = self.form.cleaned_data
        assignee = data.get("assignee") or ""
        if assignee and assignee != "none" and not assignee.isdigit():
            raise serializers.ValidationError({"assignee": ["A user id, or 'none'."]})
        filters = InboxFilters(
            view=data.get("view") or "all",
            status=data.get("status") or "",
            channel=data.get("channel") and int(data["channel"]),
            platform=data.get("platform") or "",
            team=data.get("team") and int(data["team"]),
            assignee=assignee,
            priority=data.get("priority") or None,
            sentiment=data.get("sentiment") or "",
            tag=(data.get("tag") or "").strip(),
            sla=data.get("sla") or "",
            since=data.get("since"),
            until=data.get("until"),
            search=(data.get("q") or "").strip(),
        )
        return (
            inbox_queryset(user=request_user(self.request), filters=filters)
            .select_related("contact", "channel")
            .prefetch_related("tags")
        )


class InboxCursorPage(CursorPage):
    """The Inbox page's keyset pages, in the order its ``sort`` names: deep pages cost as much
    as the first, and rows that share a priority or a due time are never skipped or repeated."""

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> list[Any]:
        self.request = request
        self.base_url = request.build_absolute_uri()
        self.page_size = self.get_page_size(request) or self.page_size
        self.sort = request.query_params.get("sort") or "newest"
        if self.sort not in SORTS:
            raise serializers.ValidationError({"sort": [f"Choose one of {', '.join(SORTS)}."]})
        conversations = inbox_sorted(queryset, sort=self.sort)
        encoded = request.query_params.get(self.cursor_query_param, "")
        backwards, position = False, ""
        if encoded:
            backwards, position = self._read_cursor(encoded)
            beyond = inbox_beyond(
                conversations, sort=self.sort, cursor=position, backwards=backwards
            )
            if beyond is None:
                raise serializers.ValidationError(
                    {"cursor": ["This cursor is not valid for this sort."]}
                )
            conversations = beyond.reverse() if backwards else beyond
        rows = list(conversations[: self.page_size + 1])
        more = len(rows) > self.page_size
        self.page = rows[: self.page_size]
        if backwards:
            self.page.reverse()
        self.has_next = more if not backwards else True
        self.has_previous = more if backwards else bool(position)
        self.display_page_controls = self.has_next or self.has_previous
        return self.page

    def _read_cursor(self, encoded: str) -> tuple[bool, str]:
        try:
            raw = json.loads(base64.urlsafe_b64decode(encoded.encode()))
            direction, position = raw["d"], raw["k"]
        except (ValueError, TypeError, KeyError, binascii.Error, UnicodeDecodeError):
            raise serializers.ValidationError({"cursor": ["This cursor is not valid."]}) from None
        if direction not in ("next", "previous") or not isinstance(position, str):
            raise serializers.ValidationError({"cursor": ["This cursor is not valid."]})
        return direction == "previous", position

    def _link(self, direction: str, row: Conversation) -> str:
        raw = json.dumps({"d": direction, "k": inbox_cursor(sort=self.sort, row=row)})
        encoded = base64.urlsafe_b64encode(raw.encode()).decode()
        return replace_query_param(self.base_url or "", self.cursor_query_param, encoded)

    def get_next_link(self) -> str | None:
        return self._link("next", self.page[-1]) if self.has_next and self.page else None

    def get_previous_link(self) -> str | None:
        return self._link("previous", self.page[0]) if self.has_previous and self.page else None


class _Precondition(serializers.Serializer[Any]):
    updated_at = serializers.DateTimeField(
        required=False,
        help_text="The updated_at you read; a newer one is answered 409 (or use If-Match)",
    )


class AssignSerializer(_Precondition):
    assignee = serializers.IntegerField(
        allow_null=True, help_text="A user id who may reply on the channel, or null to unassign"
    )


class StatusSerializer(_Precondition):
    status = serializers.ChoiceField(
        choices=[c for c in Status.choices if c[0] != Status.ESCALATED],
        help_text="Escalating goes through the escalate action",
    )


class PrioritySerializer(_Precondition):
    priority = serializers.ChoiceField(choices=Priority.choices)


class TagsSerializer(_Precondition):
    add = serializers.ListField(
        child=serializers.CharField(max_length=50), required=False, max_length=50
    )
    remove = serializers.ListField(
        child=serializers.CharField(max_length=50), required=False, max_length=50
    )


class SnoozeSerializer(_Precondition):
    until = serializers.DateTimeField()


class EscalateSerializer(_Precondition):
    reason = serializers.CharField(max_length=2000, help_text="The department reads this first")
    path = serializers.IntegerField(required=False, allow_null=True)
    department = serializers.IntegerField(required=False, allow_null=True)
    user = serializers.IntegerField(required=False, allow_null=True, help_text="A manager or admin")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        targets = {
            "path": EscalationPath.objects.all(),
            "department": Department.objects.all(),
            "user": User.objects.filter(is_active=True).filter(
                groups__name__in=[Role.MANAGER, Role.ADMIN]
            )
            | User.objects.filter(is_active=True, is_superuser=True),
        }
        chosen = {name: attrs.get(name) for name in targets if attrs.get(name) is not None}
        if len(chosen) != 1:
            raise serializers.ValidationError("Choose one escalation path, department or person.")
        name, pk = next(iter(chosen.items()))
        target = targets[name].filter(pk=pk).first()
        if target is None:
            raise serializers.ValidationError({name: ["No such choice."]})
        attrs[name] = target
        return attrs


class EscalationSerializer(serializers.ModelSerializer[Escalation]):
    target = serializers.CharField(
        source="target_name", read_only=True, help_text="The department or person it waits on"
    )

    class Meta:
        model = Escalation
        fields = [
            "id",
            "conversation",
            "status",
            "path",
            "level",
            "department",
            "user",
            "target",
            "trigger",
            "reason",
            "created_by",
            "created_at",
            "previous_assignee",
            "previous_team",
            "answer",
            "answered_by",
            "answered_by_name",
            "returned_at",
            "outcome",
            "closed_at",
        ]
        read_only_fields = fields


class EscalationRaiseSerializer(_Precondition):
    reason = serializers.CharField(
        max_length=2000,
        required=False,
        allow_blank=True,
        default="",
        help_text="Why it goes further: the next level reads it after the first reason",
    )
    level = serializers.IntegerField(
        min_value=0,
        required=False,
        allow_null=True,
        default=None,
        help_text="The level the client saw (0 for the first): raised since, by someone else "
        "or the SLA, the request is refused rather than raise it a level further",
    )


class EscalationAnswerSerializer(_Precondition):
    answer = serializers.CharField(max_length=5000, help_text="Added to the conversation as a note")
    outcome = serializers.ChoiceField(
        choices=ANSWER_OUTCOMES,
        required=False,
        allow_blank=True,
        default="",
        help_text="Empty: support answers the customer in the channel; otherwise the department "
        "settled the matter and the escalation closes",
    )


class CannedResponseSerializer(serializers.ModelSerializer[CannedResponse]):
    shared_with = serializers.SerializerMethodField(
        help_text="personal: yours alone; team: your team's; everyone: every colleague's"
    )

    class Meta:
        model = CannedResponse
        fields = ["id", "title", "body", "shared_with", "team", "owner", "created_at"]
        read_only_fields = fields

    @extend_schema_field(
        serializers.ChoiceField(
            choices=[("personal", "Personal"), ("team", "A team's"), ("everyone", "Everyone's")]
        )
    )
    def get_shared_with(self, canned: CannedResponse) -> str:
        if canned.owner_id is not None:
            return "personal"
        return "team" if canned.team_id is not None else "everyone"


class CannedTextSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField(help_text="The canned response")
    title = serializers.CharField()
    text = serializers.CharField(help_text="Its body with the placeholders filled in")


class BulkSerializer(serializers.Serializer[Any]):
    ids = serializers.ListField(
        # Bounded as the database's ids are: a larger number was a server error, not a 400.
        child=serializers.IntegerField(min_value=1, max_value=2**63 - 1),
        min_length=1,
        max_length=services.BULK_LIMIT,
        help_text=f"The conversations, at most {services.BULK_LIMIT}",
    )
    action = serializers.ChoiceField(choices=list(services.BULK_ACTIONS.items()))
    status = serializers.ChoiceField(
        choices=[(s.value, s.label) for s in services.BULK_STATUSES],
        required=False,
        help_text="For the status action",
    )
    tag = serializers.CharField(max_length=50, required=False, help_text="For the tag action")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        for needed in ("status", "tag"):
            if attrs["action"] == needed and not attrs.get(needed):
                raise serializers.ValidationError({needed: [f"Required for the {needed} action."]})
        return attrs


class BulkItemSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField(source="conversation_id")
    done = serializers.BooleanField()
    code = serializers.ChoiceField(
        source="problem",
        choices=[("", "Done"), ("not_found", "Not found"), ("forbidden", "Not allowed")],
        allow_blank=True,
    )
    detail = serializers.CharField(allow_blank=True)


class BulkResultSerializer(serializers.Serializer[Any]):
    done = serializers.IntegerField(help_text="How many conversations the action was applied to")
    failed = serializers.IntegerField()
    results = BulkItemSerializer(many=True, help_text="One per id, in the order given")


class PresenceSerializer(serializers.Serializer[Any]):
    typing = serializers.BooleanField(default=False, help_text="Whether you are writing a reply")


class ColleaguePresenceSerializer(serializers.Serializer[Any]):
    user = serializers.IntegerField(source="user_id")
    name = serializers.CharField()
    typing = serializers.BooleanField()


class PresenceReportSerializer(serializers.Serializer[Any]):
    others = ColleaguePresenceSerializer(
        many=True, help_text="Colleagues who have the conversation open now"
    )


class MessageSerializer(serializers.ModelSerializer[Message]):
    approval = serializers.SerializerMethodField()

    class Meta:
        model = Message
        fields = [
            "id",
            "conversation",
            "channel",
            "direction",
            "kind",
            "external_id",
            "in_reply_to_external_id",
            "author_identity",
            "author_user",
            "body",
            "language",
            "sentiment",
            "delivery_status",
            "error",
            "created_at",
            "sent_at",
            "approval",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_approval(self, message: Message) -> int | None:
        approval = getattr(message, "approval", None)
        return approval.pk if approval is not None else None


class MessageCreateSerializer(serializers.Serializer[Any]):
    kind = serializers.ChoiceField(
        choices=[("reply", "A reply to the customer"), ("note", "An internal note")],
        default="reply",
    )
    body = serializers.CharField(max_length=8000)
    confirm_not_assignee = serializers.BooleanField(
        default=False, help_text="Reply although a colleague is assigned"
    )


class ReplyOutcomeSerializer(serializers.Serializer[Any]):
    message = MessageSerializer()
    held_for_approval = serializers.BooleanField()
    approval = serializers.IntegerField(allow_null=True)
    reasons = serializers.ListField(child=serializers.CharField())


_Result = TypeVar("_Result")


def _locked_change(
    request: Request,
    conversation_id: int,
    serializer_class: type[_Precondition],
    do: Callable[[Conversation, dict[str, Any]], _Result],
) -> _Result:
    """Check the input, then lock the conversation, compare the version the client read
    (If-Match or updated_at) with the stored one, and apply the change in one transaction."""
    data = serializer_class(data=request.data)
    data.is_valid(raise_exception=True)
    with transaction.atomic():
        locked = Conversation.objects.select_for_update().get(pk=conversation_id)
        precondition_check(request, conversation_etag(locked))
        read_at: datetime | None = data.validated_data.get("updated_at")
        if read_at is not None and read_at != locked.updated_at:
            raise Conflict("The conversation changed since you read it: read it again.")
        return do(locked, data.validated_data)


class ConversationViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[Conversation]
):
    """The inbox: conversations on channels your teams see (and those escalated to you),
    with the Inbox page's filters and sorts (newest activity first unless ``sort`` says)."""

    serializer_class = ConversationSerializer
    filterset_class = ConversationFilter
    pagination_class = InboxCursorPage

    def get_queryset(self) -> QuerySet[Conversation]:
        return (
            conversations_visible_to(user=request_user(self.request))
            .select_related("contact", "channel")
            .prefetch_related("tags")
        )

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        conversation = self._conversation()
        return self._answer(conversation)

    def _conversation(self) -> Conversation:
        pk = self.kwargs["pk"]
        conversation = (
            conversation_for_user(user=request_user(self.request), pk=int(pk))
            if pk.isdigit()
            else None
        )
        if conversation is None:
            raise NotFound("No such conversation.")
        return conversation

    def _answer(self, conversation: Conversation, code: int = 200) -> Response:
        response = Response(ConversationSerializer(conversation).data, status=code)
        response["ETag"] = conversation_etag(conversation)
        return response

    def _change(
        self,
        request: Request,
        serializer_class: type[_Precondition],
        do: Callable[[Conversation, dict[str, Any]], object],
    ) -> Response:
        conversation = self._conversation()
        _locked_change(request, conversation.pk, serializer_class, do)
        return self._answer(self._conversation())

    @extend_schema(request=AssignSerializer, responses=ConversationSerializer)
    @action(detail=True, methods=["post"])
    def assign(self, request: Request, pk: str) -> Response:
        """Assign to a colleague who may reply on the channel (or yourself), or unassign."""

        def do(conversation: Conversation, data: dict[str, Any]) -> None:
            assignee = None
            if data["assignee"] is not None:
                assignee = next(
                    (
                        u
                        for u in assignable_agents(conversation=conversation)
                        if u.pk == data["assignee"]
                    ),
                    None,
                )
                if assignee is None:
                    raise serializers.ValidationError(
                        {"assignee": ["That colleague cannot take conversations on this channel."]}
                    )
            services.conversation_assign(
                conversation=conversation, assignee=assignee, actor=request_user(request)
            )

        return self._change(request, AssignSerializer, do)

    @extend_schema(request=_Precondition, responses=ConversationSerializer)
    @action(detail=True, methods=["post"])
    def claim(self, request: Request, pk: str) -> Response:
        """Take the conversation yourself: for those whose teams may reply on its channel."""
        conversation = self._conversation()
        user = request_user(request)
        if not conversation_takeable_by(conversation=conversation, user=user):
            raise PermissionDenied("Your teams may only view this channel, not take conversations.")
        return self._change(
            request,
            _Precondition,
            lambda c, data: services.conversation_assign(conversation=c, assignee=user, actor=user),
        )

    @extend_schema(request=BulkSerializer, responses=BulkResultSerializer, filters=False)
    @action(detail=False, methods=["post"], filterset_class=None, pagination_class=None)
    def bulk(self, request: Request) -> Response:
        """One action on several conversations, as the inbox's bulk bar: each is changed on
        its own, and those that could not be are reported by id (not found, not allowed)."""
        data = BulkSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        outcomes = services.conversations_bulk_apply(
            user=request_user(request),
            ids=data.validated_data["ids"],
            action=data.validated_data["action"],
            status=data.validated_data.get("status", ""),
            tag=data.validated_data.get("tag", ""),
        )
        done = sum(outcome.done for outcome in outcomes)
        result = {"done": done, "failed": len(outcomes) - done, "results": outcomes}
        return Response(BulkResultSerializer(result).data)

    @extend_schema(request=PresenceSerializer, responses=PresenceReportSerializer)
    @action(detail=True, methods=["post"])
    def presence(self, request: Request, pk: str) -> Response:
        """Say you have the conversation open (and whether you are typing), every few seconds
        while you do, as the conversation page does; the answer lists who else has it open."""
        conversation = self._conversation()
        data = PresenceSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = request_user(request)
        agent_seen(user_id=user.pk)
        others = presence_report(
            conversation_id=conversation.pk,
            user_id=user.pk,
            name=user.get_full_name() or user.get_username(),
            typing=data.validated_data["typing"],
        )
        return Response(PresenceReportSerializer({"others": others}).data)

    @extend_schema(request=StatusSerializer, responses=ConversationSerializer)
    @action(detail=True, methods=["post"], url_path="status")
    def set_status(self, request: Request, pk: str) -> Response:
        return self._change(
            request,
            StatusSerializer,
            lambda c, data: services.conversation_status_set(
                conversation=c, status=data["status"], actor=request_user(request)
            ),
        )

    @extend_schema(request=_Precondition, responses=ConversationSerializer)
    @action(detail=True, methods=["post"])
    def resolve(self, request: Request, pk: str) -> Response:
        return self._change(
            request,
            _Precondition,
            lambda c, data: services.conversation_status_set(
                conversation=c, status=Status.RESOLVED, actor=request_user(request)
            ),
        )

    @extend_schema(request=PrioritySerializer, responses=ConversationSerializer)
    @action(detail=True, methods=["post"])
    def priority(self, request: Request, pk: str) -> Response:
        return self._change(
            request,
            PrioritySerializer,
            lambda c, data: services.conversation_priority_set(
                conversation=c, priority=int(data["priority"]), actor=request_user(request)
            ),
        )

    @extend_schema(request=TagsSerializer, responses=ConversationSerializer)
    @action(detail=True, methods=["post"])
    def tags(self, request: Request, pk: str) -> Response:
        """Add and remove tags by name; unknown names are created, as in the browser."""

        def do(conversation: Conversation, data: dict[str, Any]) -> None:
            for names, add in ((data.get("add", []), True), (data.get("remove", []), False)):
                for name in {n.strip().lower() for n in names} - {""}:
                    tag = Tag.objects.get_or_create(name=name)[0] if add else None
                    tag = tag or Tag.objects.filter(name=name).first()
                    if tag is not None:
                        services.conversation_tag(
                            conversation=conversation, tag=tag, actor=request_user(request), add=add
                        )
            # Tags live in their own table: mark the conversation changed for its version.
            Conversation.objects.filter(pk=conversation.pk).update(updated_at=timezone.now())

        return self._change(request, TagsSerializer, do)

    @extend_schema(request=SnoozeSerializer, responses=ConversationSerializer)
    @action(detail=True, methods=["post"])
    def snooze(self, request: Request, pk: str) -> Response:
        def do(conversation: Conversation, data: dict[str, Any]) -> None:
            try:
                services.conversation_snooze(
                    conversation=conversation, until=data["until"], actor=request_user(request)
                )
            except ValueError as error:
                raise Conflict(str(error)) from error

        return self._change(request, SnoozeSerializer, do)

    @extend_schema(request=EscalateSerializer, responses=ConversationSerializer)
    @action(detail=True, methods=["post"])
    def escalate(self, request: Request, pk: str) -> Response:
        """Hand the conversation to an escalation path, a department or a person."""

        def do(conversation: Conversation, data: dict[str, Any]) -> None:
            if not escalation_steerable_by(conversation=conversation, user=request_user(request)):
                raise PermissionDenied(SUPPORT_STEERS)
            try:
                escalation_open(
                    conversation=conversation,
                    trigger=EscalationTrigger.AGENT,
                    actor=request_user(request),
                    reason=data["reason"],
                    path=data.get("path"),
                    department=data.get("department"),
                    user=data.get("user"),
                )
            except ValueError as error:
                raise Conflict(str(error)) from error

        return self._change(request, EscalateSerializer, do)

    @extend_schema(
        responses=EscalationSerializer(many=True),
        parameters=[OpenApiParameter("cursor", str), OpenApiParameter("page_size", int)],
        filters=False,
    )
    @action(
        detail=True,
        methods=["get"],
        filterset_class=None,
        pagination_class=cursor_page("-created_at", "-pk"),
    )
    def escalations(self, request: Request, pk: str) -> Response:
        """The conversation's escalations, the current one first."""
        conversation = self._conversation()
        rows = Escalation.objects.filter(conversation_id=conversation.pk)
        paginator = self.paginator
        assert paginator is not None
        page = paginator.paginate_queryset(rows, request, view=self)
        return paginator.get_paginated_response(EscalationSerializer(page, many=True).data)

    def _escalation(self, *, answering: bool = False) -> Escalation:
        """The conversation's current escalation (the open one, else the last). Those it waits
        on may answer it even where their teams do not see the channel, as in the browser."""
        pk = self.kwargs["pk"]
        if not pk.isdigit():
            raise NotFound("No such conversation.")
        user = request_user(self.request)
        escalation = (
            Escalation.objects.filter(conversation_id=int(pk))
            .select_related("department", "user")
            .order_by("-created_at", "-pk")
            .first()
        )
        if not conversations_visible_to(user=user).filter(pk=int(pk)).exists() and not (
            answering
            and escalation is not None
            and escalation_is_addressed_to(escalation=escalation, user=user)
        ):
            raise NotFound("No such conversation.")
        if escalation is None:
            raise Conflict("This conversation was never escalated.")
        return escalation

    def _steerable(self) -> Escalation:
        escalation = self._escalation()
        if not escalation_steerable_by(
            conversation=escalation.conversation, user=request_user(self.request)
        ):
            raise PermissionDenied(SUPPORT_STEERS)
        return escalation

    def _escalation_answer(self, escalation: Escalation) -> Response:
        fresh = Escalation.objects.get(pk=escalation.pk)
        response = Response(EscalationSerializer(fresh).data)
        conversation = Conversation.objects.prefetch_related("tags").get(pk=fresh.conversation_id)
        response["ETag"] = conversation_etag(conversation)
        return response

    @extend_schema(request=EscalationRaiseSerializer, responses=EscalationSerializer)
    @action(detail=True, methods=["post"], url_path="escalation/raise", url_name="escalation-raise")
    def escalation_raise(self, request: Request, pk: str) -> Response:
        """Move the open escalation to the next level of its path (support's side only)."""
        escalation = self._steerable()

        def do(conversation: Conversation, data: dict[str, Any]) -> Escalation:
            try:
                return escalation_raise(
                    escalation=escalation,
                    actor=request_user(request),
                    reason=data["reason"],
                    from_level=data["level"],
                )
            except ValueError as error:
                raise Conflict(str(error)) from error

        return self._escalation_answer(
            _locked_change(request, escalation.conversation_id, EscalationRaiseSerializer, do)
        )

    @extend_schema(request=_Precondition, responses=EscalationSerializer)
    @action(
        detail=True,
        methods=["post"],
        url_path="escalation/withdraw",
        url_name="escalation-withdraw",
    )
    def escalation_withdraw(self, request: Request, pk: str) -> Response:
        """Take the conversation back before the department answered (support's side only)."""
        escalation = self._steerable()

        def do(conversation: Conversation, data: dict[str, Any]) -> Escalation:
            try:
                return escalation_withdraw(escalation=escalation, actor=request_user(request))
            except ValueError as error:
                raise Conflict(str(error)) from error

        return self._escalation_answer(
            _locked_change(request, escalation.conversation_id, _Precondition, do)
        )

    @extend_schema(request=EscalationAnswerSerializer, responses=EscalationSerializer)
    @action(
        detail=True, methods=["post"], url_path="escalation/answer", url_name="escalation-answer"
    )
    def escalation_answer(self, request: Request, pk: str) -> Response:
        """Record the department's answer: by its team, the person escalated to, or a manager
        (for a department that answered by phone, say). The conversation goes back to support."""
        escalation = self._escalation(answering=True)
        user = request_user(request)
        if escalation.status != EscalationStatus.OPEN:
            raise Conflict("This escalation was already answered or taken back.")
        if not escalation_answerable_by(escalation=escalation, user=user):
            raise PermissionDenied(
                f"Only {escalation.target_name} or a manager answers this escalation."
            )

        def do(conversation: Conversation, data: dict[str, Any]) -> Escalation:
            try:
                return escalation_answer(
                    escalation=escalation,
                    answer=data["answer"],
                    outcome=data["outcome"],
                    answered_by=user,
                    level=escalation.level,  # as checked above
                )
            except ValueError as error:
                raise Conflict(str(error)) from error

        return self._escalation_answer(
            _locked_change(request, escalation.conversation_id, EscalationAnswerSerializer, do)
        )

    @extend_schema(
        responses=CannedTextSerializer,
        parameters=[OpenApiParameter("canned_id", int, OpenApiParameter.PATH)],
        filters=False,
    )
    @action(
        detail=True,
        methods=["get"],
        url_path=r"canned-responses/(?P<canned_id>[0-9]+)",
        url_name="canned-text",
        filterset_class=None,
        pagination_class=None,
    )
    def canned_text(self, request: Request, pk: str, canned_id: str) -> Response:
        """A canned response you may use, filled in for this conversation (names, channel)."""
        conversation = self._conversation()
        user = request_user(request)
        canned = canned_responses_usable_by(user=user).filter(pk=int(canned_id)).first()
        if canned is None:
            raise NotFound("No such canned response.")
        text = services.canned_render(canned=canned, conversation=conversation, agent=user)
        return Response(
            CannedTextSerializer({"id": canned.pk, "title": canned.title, "text": text}).data
        )

    @extend_schema(
        methods=["GET"],
        responses=MessageSerializer(many=True),
        parameters=[OpenApiParameter("cursor", str), OpenApiParameter("page_size", int)],
        filters=False,
    )
    @extend_schema(
        methods=["POST"],
        request=MessageCreateSerializer,
        responses={
            201: ReplyOutcomeSerializer,
            202: ReplyOutcomeSerializer,
            422: OpenApiResponse(description="Refused by the publishing policy"),
        },
        filters=False,
    )
    @action(
        detail=True,
        methods=["get", "post"],
        filterset_class=None,
        pagination_class=cursor_page("created_at", "pk"),
    )
    def messages(self, request: Request, pk: str) -> Response:
        """GET: the thread, oldest first, notes included. POST: a reply (checked by the
        publishing policy and held for approval when it says so, as in the browser) or an
        internal note."""
        conversation = self._conversation()
        if request.method == "GET":
            thread = conversation.messages.select_related("approval").order_by("created_at", "pk")
            paginator = self.paginator
            assert paginator is not None
            page = paginator.paginate_queryset(thread, request, view=self)
            return paginator.get_paginated_response(MessageSerializer(page, many=True).data)
        data = MessageCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        body, kind = data.validated_data["body"], data.validated_data["kind"]
        if kind == "note":
            note = services.conversation_note_add(
                conversation=conversation, author=request_user(request), body=body
            )
            outcome = {"message": note, "held_for_approval": False, "approval": None, "reasons": []}
            return Response(ReplyOutcomeSerializer(outcome).data, status=status.HTTP_201_CREATED)
        if (
            conversation.assignee_id not in (None, request_user(request).pk)
            and not data.validated_data["confirm_not_assignee"]
        ):
            raise Conflict(
                f"{conversation.assignee} is assigned to this conversation: "
                "send confirm_not_assignee to reply anyway."
            )
        submitted = reply_submit(conversation=conversation, author=request_user(request), body=body)
        reasons = submitted.decision.reasons
        if submitted.message is None:
            return Response(
                {"code": "refused", "detail": " ".join(reasons), "fields": {"body": reasons}},
                status=status.HTTP_422_UNPROCESSABLE_ENTITY,
            )
        held = submitted.approval is not None
        outcome = {
            "message": submitted.message,
            "held_for_approval": held,
            "approval": submitted.approval.pk if submitted.approval else None,
            "reasons": reasons,
        }
        return Response(
            ReplyOutcomeSerializer(outcome).data,
            status=status.HTTP_202_ACCEPTED if held else status.HTTP_201_CREATED,
        )

    @extend_schema(
        request=None,
        responses={
            202: MessageSerializer,
            422: OpenApiResponse(description="Refused by the publishing policy"),
        },
        parameters=[OpenApiParameter("message_id", int, OpenApiParameter.PATH)],
        filters=False,
    )
    @action(
        detail=True,
        methods=["post"],
        url_path=r"messages/(?P<message_id>[0-9]+)/retry",
        url_name="message-retry",
        filterset_class=None,
        pagination_class=None,
    )
    def message_retry(self, request: Request, pk: str, message_id: str) -> Response:
        """Send a failed reply again. Sending again is sending: the reply is checked as a new
        one would be (listen-only channel, reply rights, the policy)."""
        conversation = self._conversation()
        message = (
            conversation.messages.filter(pk=int(message_id), direction=Direction.OUT)
            .exclude(kind=MessageKind.NOTE)
            .select_related("channel", "approval")
            .first()
        )
        if message is None:
            raise NotFound("No such reply in this conversation.")
        retried = reply_retry(message=message, user=request_user(request))
        reasons = retried.decision.reasons
        if not retried.decision.allowed:
            return Response(
                {"code": "refused", "detail": " ".join(reasons), "fields": {"body": reasons}},
                status=status.HTTP_422_UNPROCESSABLE_ENTITY,
            )
        if not retried.queued:
            raise Conflict("Only a failed reply can be sent again.")
        message.refresh_from_db()
        return Response(MessageSerializer(message).data, status=status.HTTP_202_ACCEPTED)


# --- Messages -----------------------------------------------------------------------------


class MessageFilter(django_filters.FilterSet):
    conversation = django_filters.NumberFilter()
    direction = django_filters.ChoiceFilter(choices=Direction.choices)
    kind = django_filters.ChoiceFilter(choices=MessageKind.choices)
    since = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")

    class Meta:
        model = Message
        fields: list[str] = []


class MessageViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[Message]
):
    """Messages and notes on the channels your teams see, newest first."""

    serializer_class = MessageSerializer
    filterset_class = MessageFilter
    pagination_class = cursor_page("-created_at", "-pk")

    def get_queryset(self) -> QuerySet[Message]:
        return messages_visible_to(user=request_user(self.request)).select_related("approval")


class CannedResponseViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[CannedResponse]
):
    """Canned responses you may use: your own, your teams' and everyone's, by title. Fill one
    in for a conversation with ``/conversations/{id}/canned-responses/{canned_id}/``."""

    serializer_class = CannedResponseSerializer
    pagination_class = cursor_page("title", "pk")

    def get_queryset(self) -> QuerySet[CannedResponse]:
        return canned_responses_usable_by(user=request_user(self.request))


# --- Notifications (mentions) -----------------------------------------------------------------


class NotificationSerializer(serializers.ModelSerializer[Notification]):
    class Meta:
        model = Notification
        fields = ["id", "conversation", "actor", "text", "created_at", "read_at"]
        read_only_fields = fields


class NotificationFilter(django_filters.FilterSet):
    unread = django_filters.BooleanFilter(
        field_name="read_at", lookup_expr="isnull", help_text="Only unread (true) or read (false)"
    )

    class Meta:
        model = Notification
        fields: list[str] = []


class NotificationsReadSerializer(serializers.Serializer[Any]):
    marked = serializers.IntegerField(help_text="How many were unread")


class NotificationViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[Notification]
):
    """Your mentions and other notifications, newest first, on conversations you may still
    see (the Mentions page). Reading one here does not mark it read; ``read`` does, as opening
    it in the browser does."""

    serializer_class = NotificationSerializer
    filterset_class = NotificationFilter
    pagination_class = cursor_page("-created_at", "-pk")

    def get_queryset(self) -> QuerySet[Notification]:
        return notifications_for(user=request_user(self.request))

    @extend_schema(request=None, responses=NotificationSerializer)
    @action(detail=True, methods=["post"])
    def read(self, request: Request, pk: str) -> Response:
        notification = self.get_object()
        services.notifications_mark_read(
            notifications=Notification.objects.filter(pk=notification.pk)
        )
        notification.refresh_from_db(fields=["read_at"])
        return Response(NotificationSerializer(notification).data)

    @extend_schema(request=None, responses=NotificationsReadSerializer, filters=False)
    @action(detail=False, methods=["post"], url_path="read-all", filterset_class=None)
    def read_all(self, request: Request) -> Response:
        marked = services.notifications_mark_read(notifications=self.get_queryset())
        return Response(NotificationsReadSerializer({"marked": marked}).data)


class TagSerializer(serializers.ModelSerializer[Tag]):
    class Meta:
        model = Tag
        fields = ["id", "name", "color"]
        read_only_fields = fields


class TagViewSet(mixins.ListModelMixin, viewsets.GenericViewSet[Tag]):
    serializer_class = TagSerializer
    pagination_class = cursor_page("name", "pk")
    queryset = Tag.objects.all()


# --- Admin settings: routing rules and SLA policies ----------------------------------------

# The events rules run on: one enum in the schema (ENUM_NAME_OVERRIDES names it).
EVENT_CHOICES = list(EVENTS.items())


class _AuditedAdminViewSet(viewsets.ModelViewSet[Any]):
    """Admins' settings: every change audited, a delete of something still in use is 409."""

    permission_classes = [IsAdmin]
    http_method_names = ["get", "post", "patch", "delete"]

    def perform_create(self, serializer: Any) -> None:
        instance = serializer.Meta.model()
        with audit_change(instance, actor=request_user(self.request)):
            for name, value in serializer.validated_data.items():
                setattr(instance, name, value)
            self.before_save(instance, created=True)
            instance.save()
        serializer.instance = instance

    def perform_update(self, serializer: Any) -> None:
        instance = serializer.instance
        with audit_change(instance, actor=request_user(self.request)):
            for name, value in serializer.validated_data.items():
                setattr(instance, name, value)
            self.before_save(instance, created=False)
            instance.save()

    def before_save(self, instance: Any, *, created: bool) -> None:
        return None

    def perform_destroy(self, instance: Model) -> None:
        try:
            with transaction.atomic(), audit_deletion(instance, actor=request_user(self.request)):
                instance.delete()
        except (ProtectedError, RestrictedError) as error:
            raise Conflict(f"“{instance}” is still in use: change what uses it first.") from error


class RoutingRuleSerializer(serializers.ModelSerializer[RoutingRule]):
    events = serializers.ListField(child=serializers.ChoiceField(choices=EVENT_CHOICES))
    conditions = serializers.ListField(
        child=serializers.DictField(),
        required=False,
        help_text="{field, op, value} items",
        validators=[json_without_nul],
    )
    actions = serializers.ListField(
        child=serializers.DictField(),
        help_text="{type, value} items",
        validators=[json_without_nul],
    )

    class Meta:
        model = RoutingRule
        fields = [
            "id",
            "name",
            "position",
            "is_active",
            "events",
            "match",
            "conditions",
            "actions",
            "stop_processing",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]
        extra_kwargs = {
            "position": {
                "help_text": "The running order, lowest first. Given, the rule goes there and "
                "the rules from there on move down one (rules are numbered 0..); left out, a "
                "new rule goes last. The move action swaps a rule with its neighbour as the "
                "Rules page does"
            }
        }

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        def value(name: str, default: Any) -> Any:
            return attrs.get(name, getattr(self.instance, name) if self.instance else default)

        # A change that leaves the definition alone (its name, switching it off, its place)
        # is not refused because a team or tag it names was deleted since, as on the page.
        if self.instance is not None and not _RULE_DEFINITION.intersection(attrs):
            return attrs
        try:
            rule_validate(
                events=value("events", []),
                match=value("match", "all"),
                conditions=value("conditions", []),
                actions=value("actions", []),
                known=Catalog.load().known(),
            )
        except RuleError as error:
            raise serializers.ValidationError(error.messages) from None
        return attrs


_RULE_DEFINITION = frozenset({"events", "match", "conditions", "actions"})


class RuleMoveSerializer(serializers.Serializer[Any]):
    direction = serializers.ChoiceField(
        choices=[("up", "Run one place earlier"), ("down", "Run one place later")]
    )


class DryRunSerializer(serializers.Serializer[Any]):
    """The facts of an event, typed or taken from a stored customer message."""

    message = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        help_text="A stored customer message you can see: its facts replace the typed ones; "
        "only the event (and the time, if given) are used",
    )
    text = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    event = serializers.ChoiceField(
        choices=EVENT_CHOICES,
        help_text="A conversation created or reopened also raises message_received after it, "
        "as the ingest does",
    )
    channel = serializers.IntegerField(required=False, allow_null=True, help_text="A channel's id")
    platform = serializers.ChoiceField(
        choices=Platform.choices,
        required=False,
        allow_blank=True,
        help_text="Used when no channel is given",
    )
    kind = serializers.ChoiceField(choices=list(KINDS.items()), default="mention")
    sentiment = serializers.FloatField(
        required=False,
        allow_null=True,
        min_value=-1,
        max_value=1,
        help_text="-1 to 1; null: computed from the text",
    )
    language = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=2,
        help_text="Two letters such as en; empty: detected",
    )
    followers = serializers.IntegerField(required=False, allow_null=True, min_value=0)
    priority = serializers.ChoiceField(
        choices=list(PRIORITIES.items()), default=2, help_text="The priority before the rules"
    )
    tags = serializers.ListField(
        child=serializers.IntegerField(),
        required=False,
        max_length=100,
        help_text="Tag ids before the rules",
    )
    vip = serializers.BooleanField(default=False, help_text="A VIP contact")
    open_escalation = serializers.BooleanField(
        default=False, help_text="The contact has an open escalation"
    )
    at = serializers.DateTimeField(
        required=False, allow_null=True, help_text="For business-hours conditions; null: now"
    )


class DryRunFactsSerializer(serializers.Serializer[Any]):
    event = serializers.ChoiceField(choices=EVENT_CHOICES)
    channel = serializers.IntegerField(allow_null=True)
    platform = serializers.CharField()
    kind = serializers.CharField()
    text = serializers.CharField()
    sentiment = serializers.FloatField(allow_null=True)
    language = serializers.CharField()
    is_vip = serializers.BooleanField()
    followers = serializers.IntegerField(allow_null=True)
    has_open_escalation = serializers.BooleanField()
    tags = serializers.ListField(child=serializers.IntegerField())
    priority = serializers.IntegerField()
    at = serializers.DateTimeField()


class RuleSummarySerializer(serializers.Serializer[Any]):
    events = serializers.ListField(child=serializers.CharField())
    conditions = serializers.ListField(child=serializers.CharField())
    actions = serializers.ListField(child=serializers.CharField())
    joiner = serializers.ChoiceField(choices=[("and", "and"), ("or", "or")])


class DryRunRuleSerializer(serializers.Serializer[Any]):
    rule = serializers.IntegerField()
    name = serializers.CharField()
    position = serializers.IntegerField()
    state = serializers.ChoiceField(choices=list(DRY_RUN_STATES.items()))
    stopped_by = serializers.CharField(
        help_text="For a rule not run: the rule that stopped processing"
    )
    stop_processing = serializers.BooleanField()
    summary = RuleSummarySerializer(help_text="The rule in words, as the Rules page shows it")


class DryRunOutcomeSerializer(serializers.Serializer[Any]):
    matched = serializers.IntegerField(help_text="How many rules would apply")
    priority = serializers.IntegerField(help_text="The priority after the rules")
    priority_label = serializers.CharField()
    tags = serializers.ListField(child=serializers.IntegerField(), help_text="Tag ids added")
    tag_names = serializers.ListField(child=serializers.CharField())


class DryRunResultSerializer(serializers.Serializer[Any]):
    facts = DryRunFactsSerializer(help_text="The facts the rules saw")
    rules = DryRunRuleSerializer(many=True, help_text="Every active rule, in running order")
    outcome = DryRunOutcomeSerializer()


class RoutingRuleViewSet(_AuditedAdminViewSet):
    """Routing rules, run in ``position`` order; checked when saved, as on the Routing page."""

    serializer_class = RoutingRuleSerializer
    pagination_class = cursor_page("position", "pk")
    queryset = RoutingRule.objects.all()

    def perform_create(self, serializer: Any) -> None:
        with transaction.atomic():  # the other rules stay locked until this one is saved
            super().perform_create(serializer)

    def perform_update(self, serializer: Any) -> None:
        with transaction.atomic():
            super().perform_update(serializer)

    def before_save(self, instance: RoutingRule, *, created: bool) -> None:
        if created:
            instance.created_by = request_user(self.request)
        if created or "position" in self.request.data:
            # A position given puts the rule there, moving the others down: no two share one.
            at = instance.position if "position" in self.request.data else None
            instance.position = rule_position_take(
                None if created else instance, at, actor=request_user(self.request)
            )

    @extend_schema(request=RuleMoveSerializer, responses=RoutingRuleSerializer)
    @action(detail=True, methods=["post"])
    def move(self, request: Request, pk: str) -> Response:
        """Swap the rule with its neighbour in the running order, as the Rules page's arrows
        do; all rules are numbered 0.. again."""
        rule = self.get_object()
        data = RuleMoveSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        form = RuleMoveForm(data.validated_data)
        if not form.is_valid():
            raise serializers.ValidationError(form_errors(form))
        with audit_change(rule, actor=request_user(request)):
            form.save(rule=rule, actor=request_user(request))
        rule.refresh_from_db()
        return Response(RoutingRuleSerializer(rule).data)

    @extend_schema(request=DryRunSerializer, responses=DryRunResultSerializer)
    @action(detail=False, methods=["post"], url_path="dry-run", pagination_class=None)
    def dry_run(self, request: Request) -> Response:
        """What the active rules would do with an event, in order; nothing is written."""
        data = DryRunSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        form = DryRunForm(
            {k: v for k, v in data.validated_data.items() if v is not None},
            user=request_user(request),
        )
        if not form.is_valid():
            raise serializers.ValidationError(form_errors(form))
        facts = form.facts()
        catalog = Catalog.load()
        run = rules_dry_run(facts=facts, catalog=catalog)
        result = {
            "facts": {
                **asdict(facts),
                "channel": facts.channel_id or None,
                "is_vip": facts.is_vip,
                "tags": sorted(facts.tag_ids),
            },
            "rules": [
                {
                    "rule": row.rule.pk,
                    "name": row.rule.name,
                    "position": row.rule.position,
                    "state": row.state,
                    "stopped_by": row.by,
                    "stop_processing": row.rule.stop_processing,
                    "summary": row.summary,
                }
                for row in run.rows
            ],
            "outcome": {
                "matched": run.matched,
                "priority": run.priority,
                "priority_label": PRIORITIES.get(run.priority, str(run.priority)),
                "tags": run.added_tags,
                "tag_names": [catalog.tags.get(t, f"#{t}") for t in run.added_tags],
            },
        }
        return Response(DryRunResultSerializer(result).data)


class SlaPolicySerializer(serializers.ModelSerializer[SlaPolicy]):
    class Meta:
        model = SlaPolicy
        fields = [
            "id",
            "name",
            "priority",
            "channel",
            "vip_only",
            "first_response_minutes",
            "next_response_minutes",
            "resolution_minutes",
            "calendar",
            "at_risk_minutes",
            "is_active",
            "created_at",
        ]
        read_only_fields = ["created_at"]
        extra_kwargs = {
            **{
                f"{target}_minutes": {"min_value": 1, "max_value": SLA_TARGET_MAX_MINUTES}
                for target in SLA_TARGETS
            },
            "at_risk_minutes": {
                "help_text": "How long before a due time the conversation shows as at risk; "
                "shorter than the shortest target. Default: 30, or half the shortest target "
                "when that is shorter."
            },
        }

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        def value(name: str) -> Any:
            if name in attrs:
                return attrs[name]
            if self.instance is not None:
                return getattr(self.instance, name)
            return cast(Field, SlaPolicy._meta.get_field(name)).get_default()

        targets = {target: value(f"{target}_minutes") for target in SLA_TARGETS}
        if not any(targets.values()):
            raise serializers.ValidationError(
                "Set at least one target: first response, next response or resolution."
            )
        if self.instance is None and "at_risk_minutes" not in attrs:
            # Not given: the default, or half the shortest target when that is shorter.
            shortest = min(m for m in targets.values() if m)
            attrs["at_risk_minutes"] = min(value("at_risk_minutes"), shortest // 2)
        changed = None
        if self.instance is not None:  # an edit: what it changes, the targets as one
            changed = {n for n, new in attrs.items() if getattr(self.instance, n) != new}
            if changed & {f"{target}_minutes" for target in SLA_TARGETS}:
                changed.add("targets")
        if problems := sla_policy_problems(
            pk=self.instance.pk if self.instance is not None else None,
            priority=value("priority"),
            channel=value("channel"),
            vip_only=bool(value("vip_only")),
            is_active=bool(value("is_active")),
            targets=targets,
            at_risk_minutes=value("at_risk_minutes"),
            changed=changed,
        ):
            raise serializers.ValidationError(problems)
        return attrs


class SlaPolicyViewSet(_AuditedAdminViewSet):
    serializer_class = SlaPolicySerializer
    pagination_class = cursor_page("name", "pk")
    queryset = SlaPolicy.objects.all()


# --- Outbound webhooks (admins) -------------------------------------------------------------


class WebhookEndpointSerializer(serializers.ModelSerializer[WebhookEndpoint]):
    secret = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        max_length=500,
        help_text="Signs each call (HMAC-SHA256); never returned. Empty removes it.",
    )
    has_secret = serializers.SerializerMethodField()
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=list(WEBHOOK_EVENTS.items())),
        required=False,
        help_text="Product events sent to this endpoint",
    )

    class Meta:
        model = WebhookEndpoint
        fields = [
            "id",
            "name",
            "url",
            "is_active",
            "events",
            "allow_private_network",
            "secret",
            "has_secret",
            "created_at",
        ]
        read_only_fields = ["created_at"]

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        url = attrs.get("url", self.instance.url if self.instance else "")
        allow = attrs.get(
            "allow_private_network", self.instance.allow_private_network if self.instance else False
        )
        problem = webhook_address_problem(url, allow_private=allow)
        if problem:
            raise serializers.ValidationError({"url": [problem]})
        endpoint = self.instance
        if attrs.get("secret") == "" and endpoint and (problem := endpoint_secret_needed(endpoint)):
            raise serializers.ValidationError({"secret": [problem]})
        if (
            attrs.get("is_active") is False
            and endpoint is not None
            and endpoint.is_active
            and (problem := endpoint_needed(endpoint))
        ):
            raise serializers.ValidationError({"is_active": [problem]})
        return attrs

    def get_has_secret(self, endpoint: WebhookEndpoint) -> bool:
        return bool(endpoint.secret)


class WebhookEndpointViewSet(_AuditedAdminViewSet):
    """Outside systems we call with signed JSON POSTs (Routing → Webhooks)."""

    serializer_class = WebhookEndpointSerializer
    pagination_class = cursor_page("name", "pk")
    queryset = WebhookEndpoint.objects.all()


class WebhookCallSerializer(serializers.ModelSerializer[WebhookCall]):
    class Meta:
        model = WebhookCall
        fields = [
            "id",
            "endpoint",
            "event",
            "payload",
            "status",
            "attempts",
            "next_attempt_at",
            "response_status",
            "last_error",
            "created_at",
            "delivered_at",
        ]
        read_only_fields = fields


class WebhookCallFilter(django_filters.FilterSet):
    endpoint = django_filters.NumberFilter()
    status = django_filters.ChoiceFilter(choices=WebhookCallStatus.choices)
    event = django_filters.CharFilter()

    class Meta:
        model = WebhookCall
        fields: list[str] = []


class WebhookCallViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[WebhookCall]
):
    """The delivery log: every call, its attempts and the last answer."""

    permission_classes = [IsAdmin]
    serializer_class = WebhookCallSerializer
    filterset_class = WebhookCallFilter
    pagination_class = cursor_page("-created_at", "-pk")
    queryset = WebhookCall.objects.all()

    @extend_schema(request=None, responses=WebhookCallSerializer)
    @action(detail=True, methods=["post"])
    def redeliver(self, request: Request, pk: str) -> Response:
        """Send the call again now, with a fresh round of attempts."""
        call = webhook_call_redeliver(call=self.get_object(), actor=request_user(request))
        return Response(WebhookCallSerializer(call).data)
