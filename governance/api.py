"""API resources of governance: the caller, tokens, teams and users (admins), approvals
(managers and named approvers), the audit log (admins, read-only), and for admins the
publishing policies with their test box, and retention: its policies and runs."""

from typing import Any

import django_filters
from django.contrib.auth.models import Group, User
from django.db import transaction
from django.db.models import ProtectedError, Q, QuerySet, RestrictedError
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from channels_ingest.models import ChannelAccount
from governance.access import access_forget
from governance.api_tokens import (
    api_token_create,
    api_token_revocable_by,
    api_token_revoke,
    api_tokens_visible_to,
)
from governance.approvals import (
    ApprovalError,
    NotAnApprover,
    approval_approve,
    approval_reject,
    approvals_decided_for,
    approvals_pending_for,
    is_approver,
)
from governance.audit import audit_change, audit_deletion
from governance.audit_views import AuditFilterForm
from governance.models import (
    ApiToken,
    AuditEntry,
    OutboundApproval,
    PublishingPolicy,
    RetentionAction,
    RetentionPolicy,
    RetentionRun,
    Role,
    Team,
    TeamMembership,
)
from governance.policy import (
    banned_pattern_problems,
    policy_delete,
    policy_for,
    policy_save,
    quiet_hour_clean,
    quiet_hours_problem,
    terms_clean,
)
from governance.policy_forms import MAX_EXPIRY_HOURS
from governance.retention import (
    RetentionPolicyError,
    retention_apply,
    retention_policy_remove,
    retention_policy_save,
)
from governance.roles import role_of
from governance.services import Verdict, outbound_check
from scrm.api import Conflict, IsAdmin, cursor_page, request_user

# --- The caller ---------------------------------------------------------------------------


class MeSerializer(serializers.Serializer[User]):
    id = serializers.IntegerField(read_only=True)
    username = serializers.CharField(read_only=True)
    name = serializers.CharField(source="get_full_name", read_only=True)
    role = serializers.SerializerMethodField()
    teams = serializers.SerializerMethodField()

    @extend_schema_field(serializers.ChoiceField(choices=Role.choices, allow_null=True))
    def get_role(self, user: User) -> str | None:
        role = role_of(user)
        return role.value if role else None

    @extend_schema_field(serializers.ListField(child=serializers.IntegerField()))
    def get_teams(self, user: User) -> list[int]:
        return list(TeamMembership.objects.filter(user=user).values_list("team_id", flat=True))


class MeView(APIView):
    """Who the token or session acts as."""

    @extend_schema(responses=MeSerializer)
    def get(self, request: Request) -> Response:
        return Response(MeSerializer(request_user(request)).data)


# --- Tokens -------------------------------------------------------------------------------


class ApiTokenSerializer(serializers.ModelSerializer[ApiToken]):
    user = serializers.IntegerField(source="user_id", read_only=True)

    class Meta:
        model = ApiToken
        fields = ["id", "user", "name", "prefix", "created_at", "last_used_at", "revoked_at"]
        read_only_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]


class NewApiTokenSerializer(ApiTokenSerializer):
    key = serializers.CharField(read_only=True, help_text="Shown only in this answer")

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "key"]


class ApiTokenViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet[ApiToken],
):
    """Your tokens (admins: everyone's). Creating answers with the key, once; deleting
    revokes."""

    serializer_class = ApiTokenSerializer
    pagination_class = cursor_page("-created_at", "-pk")

    def get_queryset(self) -> QuerySet[ApiToken]:
        return api_tokens_visible_to(user=request_user(self.request))

    @extend_schema(request=ApiTokenSerializer, responses={201: NewApiTokenSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = ApiTokenSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token, key = api_token_create(
            user=request_user(request), name=serializer.validated_data["name"]
        )
        token.key = key  # type: ignore[attr-defined]
        return Response(NewApiTokenSerializer(token).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={204: OpenApiResponse(description="Revoked")})
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        token = self.get_object()
        if not api_token_revocable_by(token=token, user=request_user(request)):
            raise PermissionDenied("You may revoke only your own tokens.")
        api_token_revoke(token=token, actor=request_user(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Teams and users (admins) -------------------------------------------------------------


def _memberships_set(*, user_ids: set[int], team_ids: set[int], keep: set[tuple[int, int]]) -> None:
    """Add and remove single membership rows (their signals write the audit entries)."""
    rows = TeamMembership.objects.filter(user_id__in=user_ids, team_id__in=team_ids)
    for row in rows:
        if (row.team_id, row.user_id) not in keep:
            row.delete()
    present = {(row.team_id, row.user_id) for row in rows}
    for team_id, user_id in keep - present:
        TeamMembership.objects.create(team_id=team_id, user_id=user_id)


class TeamSerializer(serializers.ModelSerializer[Team]):
    members = serializers.PrimaryKeyRelatedField(
        many=True, queryset=User.objects.all(), required=False, help_text="User ids"
    )

    class Meta:
        model = Team
        fields = ["id", "name", "slug", "description", "members", "created_at"]
        read_only_fields = ["created_at"]

    @transaction.atomic
    def create(self, validated_data: dict[str, Any]) -> Team:
        members = validated_data.pop("members", [])
        team = Team(**validated_data)
        with audit_change(team, actor=self.context["request"].user):
            team.save()
        _memberships_set(
            user_ids={u.pk for u in members},
            team_ids={team.pk},
            keep={(team.pk, u.pk) for u in members},
        )
        return team

    @transaction.atomic
    def update(self, instance: Team, validated_data: dict[str, Any]) -> Team:
        members = validated_data.pop("members", None)
        with audit_change(instance, actor=self.context["request"].user):
            for name, value in validated_data.items():
                setattr(instance, name, value)
            instance.save()
        if members is not None:
            current = set(instance.members.values_list("pk", flat=True))
            wanted = {u.pk for u in members}
            _memberships_set(
                user_ids=current | wanted,
                team_ids={instance.pk},
                keep={(instance.pk, pk) for pk in wanted},
            )
        return instance


class TeamViewSet(viewsets.ModelViewSet[Team]):
    permission_classes = [IsAdmin]
    serializer_class = TeamSerializer
    pagination_class = cursor_page("name", "pk")
    queryset = Team.objects.prefetch_related("members")
    http_method_names = ["get", "post", "patch", "delete"]

    def perform_destroy(self, instance: Team) -> None:
        # Escalation departments keep their team (PROTECT): refused with what uses it.
        from conversations.settings_forms import still_used_message

        try:
            with transaction.atomic(), audit_deletion(instance, actor=request_user(self.request)):
                instance.delete()
        except ProtectedError as error:
            users = error.protected_objects
            raise Conflict(still_used_message("Team", instance.name, users)) from error
        except RestrictedError as error:
            users = error.restricted_objects
            raise Conflict(still_used_message("Team", instance.name, users)) from error


class UserSerializer(serializers.ModelSerializer[User]):
    role = serializers.ChoiceField(
        choices=Role.choices, allow_null=True, required=False, help_text="Empty for no role"
    )
    teams = serializers.PrimaryKeyRelatedField(
        many=True, queryset=Team.objects.all(), required=False, help_text="Team ids"
    )

    class Meta:
        model = User
        fields = [
            "id",
            "username",
            "first_name",
            "last_name",
            "email",
            "is_active",
            "role",
            "teams",
            "last_login",
            "date_joined",
        ]
        read_only_fields = ["last_login", "date_joined"]

    def to_representation(self, instance: User) -> dict[str, Any]:
        data = super().to_representation(instance)
        role = role_of(instance)
        data["role"] = role.value if role else None
        return data

    @transaction.atomic
    def create(self, validated_data: dict[str, Any]) -> User:
        role = validated_data.pop("role", None)
        teams = validated_data.pop("teams", [])
        user = User(**validated_data)
        # No password: the user sets one through "forgot password" or an admin sets it.
        user.set_unusable_password()
        user.save()
        self._apply(user, role=role, set_role=True, teams=teams)
        return user

    @transaction.atomic
    def update(self, instance: User, validated_data: dict[str, Any]) -> User:
        set_role = "role" in validated_data
        role = validated_data.pop("role", None)
        teams = validated_data.pop("teams", None)
        for name, value in validated_data.items():
            setattr(instance, name, value)
        instance.save()
        self._apply(instance, role=role, set_role=set_role, teams=teams)
        access_forget(instance)
        return instance

    def _apply(
        self, user: User, *, role: str | None, set_role: bool, teams: list[Team] | None
    ) -> None:
        if set_role:
            groups = list(Group.objects.filter(name=role)) if role else []
            user.groups.remove(*user.groups.filter(name__in=Role.values).exclude(name=role or ""))
            user.groups.add(*groups)
        if teams is not None:
            current = set(user.team_memberships.values_list("team_id", flat=True))
            wanted = {t.pk for t in teams}
            _memberships_set(
                user_ids={user.pk},
                team_ids=current | wanted,
                keep={(pk, user.pk) for pk in wanted},
            )


class UserViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet[User],
):
    """Users, their role and teams. Users are switched off (``is_active``), never deleted:
    the audit log and conversations keep naming them."""

    permission_classes = [IsAdmin]
    serializer_class = UserSerializer
    pagination_class = cursor_page("username", "pk")
    queryset = User.objects.prefetch_related("teams")
    http_method_names = ["get", "post", "patch"]


# --- Approvals ----------------------------------------------------------------------------


class ApprovalSerializer(serializers.ModelSerializer[OutboundApproval]):
    conversation = serializers.IntegerField(source="message.conversation_id", read_only=True)
    channel = serializers.IntegerField(source="message.channel_id", read_only=True)
    body = serializers.CharField(source="message.body", read_only=True)

    class Meta:
        model = OutboundApproval
        fields = [
            "id",
            "message",
            "conversation",
            "channel",
            "body",
            "original_body",
            "requested_by",
            "reasons",
            "status",
            "levels_required",
            "first_approved_by",
            "first_approved_at",
            "decided_by",
            "decided_at",
            "note",
            "created_at",
            "expires_at",
        ]
        read_only_fields = fields


class ApproveSerializer(serializers.Serializer[Any]):
    body = serializers.CharField(
        required=False,
        max_length=10000,
        help_text="The edited text; leave out to approve as written",
    )


class RejectSerializer(serializers.Serializer[Any]):
    note = serializers.CharField(max_length=2000, help_text="Why it cannot go out, for the author")


class ApprovalFilter(django_filters.FilterSet):
    state = django_filters.ChoiceFilter(
        choices=[("pending", "Waiting for me"), ("decided", "Decided")],
        method="_state",
        empty_label=None,
        help_text="pending (the default): waiting for your decision; decided: the history",
    )

    class Meta:
        model = OutboundApproval
        fields: list[str] = []

    def _state(self, queryset: QuerySet[OutboundApproval], name: str, value: str) -> Any:
        return queryset


class ApprovalViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[OutboundApproval]
):
    """Replies held for approval on the channels you may approve (managers, admins and the
    policies' named approvers): the same queue and decisions as the Approvals page."""

    serializer_class = ApprovalSerializer
    filterset_class = ApprovalFilter
    pagination_class = cursor_page("-created_at", "-pk")

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if not is_approver(request_user(request)):
            raise PermissionDenied("Approvals are decided by managers, admins and named approvers.")

    def get_queryset(self) -> QuerySet[OutboundApproval]:
        user = request_user(self.request)
        if self.action == "list" and self.request.query_params.get("state") == "decided":
            return approvals_decided_for(user=user)
        if self.action == "list":
            return approvals_pending_for(user=user)
        # One approval: pending for the user, or decided on their channels.
        pending = approvals_pending_for(user=user).order_by().values("pk")
        decided = approvals_decided_for(user=user).order_by().values("pk")
        return OutboundApproval.objects.filter(Q(pk__in=pending) | Q(pk__in=decided))

    def _decide(self, do: Any) -> Response:
        approval = self.get_object()
        try:
            approval = do(approval)
        except NotAnApprover as error:
            raise PermissionDenied(str(error)) from error
        except ApprovalError as error:
            raise Conflict(str(error)) from error
        return Response(ApprovalSerializer(approval).data)

    @extend_schema(request=ApproveSerializer, responses=ApprovalSerializer)
    @action(detail=True, methods=["post"])
    def approve(self, request: Request, pk: str) -> Response:
        """Approve as written or edited; with a second level, the first approval only."""
        data = ApproveSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return self._decide(
            lambda approval: approval_approve(
                approval=approval,
                approver=request_user(request),
                body=data.validated_data.get("body"),
                request=request,
            )
        )

    @extend_schema(request=RejectSerializer, responses=ApprovalSerializer)
    @action(detail=True, methods=["post"])
    def reject(self, request: Request, pk: str) -> Response:
        data = RejectSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return self._decide(
            lambda approval: approval_reject(
                approval=approval,
                approver=request_user(request),
                note=data.validated_data["note"],
                request=request,
            )
        )


# --- Audit log (admins, read-only) --------------------------------------------------------


class AuditEntrySerializer(serializers.ModelSerializer[AuditEntry]):
    class Meta:
        model = AuditEntry
        fields = [
            "id",
            "at",
            "actor",
            "actor_name",
            "ip",
            "action",
            "object_type",
            "object_id",
            "object_repr",
            "before",
            "after",
            "data",
        ]
        read_only_fields = fields


class AuditEntryFilter(django_filters.FilterSet):
    """The Audit log page's filters (``AuditFilterForm`` applies them)."""

    action = django_filters.CharFilter(help_text="Action starts with", method="_by_form")
    actor = django_filters.CharFilter(help_text="Actor's username", method="_by_form")
    object_type = django_filters.CharFilter(method="_by_form")
    object_id = django_filters.CharFilter(method="_by_form")
    since = django_filters.DateFilter(help_text="From this day", method="_by_form")
    until = django_filters.DateFilter(help_text="Up to this day", method="_by_form")
    q = django_filters.CharFilter(help_text="Object name contains", method="_by_form")

    class Meta:
        model = AuditEntry
        fields: list[str] = []

    def _by_form(self, queryset: QuerySet[AuditEntry], name: str, value: Any) -> Any:
        return queryset

    def filter_queryset(self, queryset: QuerySet[AuditEntry]) -> QuerySet[AuditEntry]:
        used = {k: v for k, v in self.form.cleaned_data.items() if v not in (None, "")}
        return AuditFilterForm(used).entries()


class AuditEntryViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[AuditEntry]
):
    """The audit log, newest first. Nothing can change or delete an entry."""

    permission_classes = [IsAdmin]
    serializer_class = AuditEntrySerializer
    filterset_class = AuditEntryFilter
    pagination_class = cursor_page("-id")
    queryset = AuditEntry.objects.all()


# --- Publishing policies (admins) ---------------------------------------------------------


class _Approvers(serializers.ManyRelatedField):
    """The named approvers; the built-in default policy, never saved, names nobody."""

    def get_attribute(self, instance: PublishingPolicy) -> Any:
        return [] if instance.pk is None else super().get_attribute(instance)


def _active_users() -> QuerySet[User]:
    return User.objects.filter(is_active=True)


class PublishingPolicySerializer(serializers.ModelSerializer[PublishingPolicy]):
    id = serializers.IntegerField(
        read_only=True, allow_null=True, help_text="Null for the built-in default, never saved"
    )
    updated_at = serializers.DateTimeField(read_only=True, allow_null=True)
    channel = serializers.PrimaryKeyRelatedField(
        queryset=ChannelAccount.objects.all(),
        required=False,
        allow_null=True,
        help_text="The channel it governs, given when it is made; null for the default policy",
    )
    approvers = _Approvers(
        child_relation=serializers.PrimaryKeyRelatedField(queryset=_active_users()),
        required=False,
        help_text="Only these users approve; none for the admins and the managers of the "
        "teams that reply on the channel",
    )
    approval_expiry_hours = serializers.IntegerField(
        min_value=1, max_value=MAX_EXPIRY_HOURS, required=False
    )
    banned_terms = serializers.ListField(
        child=serializers.CharField(max_length=200, allow_blank=True),
        required=False,
        help_text="Whole words or phrases, in any case",
    )
    banned_patterns = serializers.ListField(
        child=serializers.CharField(max_length=500, allow_blank=True),
        required=False,
        help_text="Regular expressions, matched in any case",
    )
    quiet_hours_start = serializers.CharField(
        max_length=5, allow_blank=True, required=False, help_text="Local time HH:MM, or empty"
    )
    quiet_hours_end = serializers.CharField(
        max_length=5,
        allow_blank=True,
        required=False,
        help_text="Local time HH:MM, or empty; an end before the start runs past midnight",
    )

    class Meta:
        model = PublishingPolicy
        fields = [
            "id",
            "channel",
            "approval",
            "approvers",
            "second_level",
            "approval_expiry_hours",
            "banned_terms",
            "banned_patterns",
            "banned_action",
            "pii_action",
            "links_action",
            "quiet_hours_start",
            "quiet_hours_end",
            "quiet_hours_action",
            "updated_at",
        ]

    def validate_banned_terms(self, value: list[str]) -> list[str]:
        return terms_clean(value)

    def validate_banned_patterns(self, value: list[str]) -> list[str]:
        patterns = [p.strip() for p in value if p.strip()]
        problems = banned_pattern_problems(patterns)
        if problems:
            raise serializers.ValidationError(problems)
        return patterns

    def _time(self, value: str) -> str:
        try:
            return quiet_hour_clean(value)
        except ValueError as error:
            raise serializers.ValidationError(str(error)) from error

    def validate_quiet_hours_start(self, value: str) -> str:
        return self._time(value)

    def validate_quiet_hours_end(self, value: str) -> str:
        return self._time(value)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        policy = self.instance
        if policy is None:
            channel = attrs.get("channel")
            if channel is None:
                raise serializers.ValidationError(
                    {
                        "channel": [
                            "Choose a channel; the default policy is publishing-policies/default/."
                        ]
                    }
                )
            if PublishingPolicy.objects.filter(channel=channel).exists():
                raise serializers.ValidationError(
                    {"channel": [f"{channel} has a policy of its own already: change that one."]}
                )
        elif "channel" in attrs and getattr(attrs["channel"], "pk", None) != policy.channel_id:
            raise serializers.ValidationError({"channel": ["A policy's channel is fixed."]})

        def value(name: str) -> str:
            return str(attrs.get(name, getattr(policy, name) if policy else ""))

        problem = quiet_hours_problem(value("quiet_hours_start"), value("quiet_hours_end"))
        if problem is not None:
            raise serializers.ValidationError({problem[0]: [problem[1]]})
        return attrs


class PolicyTestRequestSerializer(serializers.Serializer[Any]):
    channel = serializers.PrimaryKeyRelatedField(queryset=ChannelAccount.objects.all())
    sender = serializers.PrimaryKeyRelatedField(
        queryset=_active_users(),
        allow_null=True,
        required=False,
        default=None,
        help_text="The user who would send it; null (the default) for an automatic message",
    )
    text = serializers.CharField(trim_whitespace=False, max_length=100000)


class PolicyTestResultSerializer(serializers.Serializer[Any]):
    verdict = serializers.ChoiceField(choices=[(v.value, v.value) for v in Verdict])
    reasons = serializers.ListField(child=serializers.CharField())
    policy = serializers.IntegerField(
        allow_null=True, help_text="The policy that applies; null for the built-in default"
    )


class PublishingPolicyViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet[PublishingPolicy],
):
    """What may be sent on each channel (admins), as on the Publishing policies page: the
    default policy, each channel's own, and a test of a text against them. Every change is
    audited; deleting a channel's policy makes it follow the default again."""

    permission_classes = [IsAdmin]
    serializer_class = PublishingPolicySerializer
    pagination_class = cursor_page("pk")
    queryset = PublishingPolicy.objects.select_related("channel").prefetch_related("approvers")
    http_method_names = ["get", "post", "patch", "delete"]
    lookup_value_regex = r"\d+"

    def _save(self, serializer: Any, policy: PublishingPolicy) -> None:
        data = dict(serializer.validated_data)
        approvers: Any = data.pop("approvers", None)
        if policy.pk is None:
            policy.channel = data.get("channel")
        data.pop("channel", None)
        for name, value in data.items():
            setattr(policy, name, value)
        if approvers is None:
            approvers = list(policy.approvers.all()) if policy.pk else []
        serializer.instance = policy_save(
            policy=policy,
            approvers=approvers,
            actor=request_user(self.request),
            request=self.request,
        )

    def perform_create(self, serializer: Any) -> None:
        self._save(serializer, PublishingPolicy())

    def perform_update(self, serializer: Any) -> None:
        self._save(serializer, serializer.instance)

    def perform_destroy(self, instance: PublishingPolicy) -> None:
        policy_delete(policy=instance, actor=request_user(self.request), request=self.request)

    @extend_schema(methods=["GET"], responses=PublishingPolicySerializer)
    @extend_schema(
        methods=["PATCH"], request=PublishingPolicySerializer, responses=PublishingPolicySerializer
    )
    @action(detail=False, methods=["get", "patch"], url_path="default", pagination_class=None)
    def default(self, request: Request) -> Response:
        """The policy of channels without their own. Until it is first saved, the built-in
        one applies (``id`` null): everything may be sent but personal data."""
        policy = PublishingPolicy.objects.filter(channel__isnull=True).first() or PublishingPolicy()
        if request.method == "GET":
            return Response(PublishingPolicySerializer(policy).data)
        serializer = PublishingPolicySerializer(policy, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        self._save(serializer, policy)
        return Response(PublishingPolicySerializer(serializer.instance).data)

    @extend_schema(request=PolicyTestRequestSerializer, responses=PolicyTestResultSerializer)
    @action(detail=False, methods=["post"], url_path="test", url_name="test")
    def check_text(self, request: Request) -> Response:
        """Run a text through the gate every outbound message passes, as the sender would
        send it on the channel now. Nothing is sent or recorded."""
        data = PolicyTestRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        channel = data.validated_data["channel"]
        policy = policy_for(channel)
        decision = outbound_check(
            user=data.validated_data["sender"],
            channel=channel,
            text=data.validated_data["text"],
            policy=policy,
        )
        return Response(
            PolicyTestResultSerializer(
                {"verdict": decision.verdict, "reasons": decision.reasons, "policy": policy.pk}
            ).data
        )


# --- Retention (admins) -------------------------------------------------------------------


class RetentionPolicySerializer(serializers.ModelSerializer[RetentionPolicy]):
    channel = serializers.PrimaryKeyRelatedField(
        queryset=ChannelAccount.objects.all(),
        allow_null=True,
        help_text="The channel it applies to, given when it is made; null for the default",
    )
    keep_days = serializers.IntegerField(min_value=1, max_value=36500)
    action = serializers.ChoiceField(
        choices=RetentionAction.choices, help_text="What happens to older message contents"
    )

    class Meta:
        model = RetentionPolicy
        fields = ["id", "channel", "keep_days", "action", "is_active", "updated_at"]
        read_only_fields = ["updated_at"]

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        policy = self.instance
        if policy is None:
            channel = attrs.get("channel")
            if RetentionPolicy.objects.filter(channel=channel).exists():
                whose = f"{channel} has its own retention" if channel else "The default exists"
                raise serializers.ValidationError(
                    {"channel": [f"{whose} already: change that one."]}
                )
        elif "channel" in attrs and getattr(attrs["channel"], "pk", None) != policy.channel_id:
            raise serializers.ValidationError({"channel": ["A policy's channel is fixed."]})
        return attrs


class RetentionRunSerializer(serializers.ModelSerializer[RetentionRun]):
    class Meta:
        model = RetentionRun
        fields = [
            "id",
            "channel",
            "action",
            "cutoff",
            "messages",
            "payloads",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "channel": {"help_text": "Null for payloads of deleted channels"},
            "messages": {"help_text": "Messages anonymised or deleted"},
            "payloads": {"help_text": "Other texts and raw payloads removed"},
        }


class RetentionPolicyViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet[RetentionPolicy],
):
    """How long message contents are kept (admins), as on the Retention page: the default
    (``channel`` null) and each channel's own. A channel without its own follows the default;
    without either, everything is kept. Deleting a channel's own policy makes it follow the
    default again. Every change is audited."""

    permission_classes = [IsAdmin]
    serializer_class = RetentionPolicySerializer
    pagination_class = cursor_page("pk")
    queryset = RetentionPolicy.objects.all()
    http_method_names = ["get", "post", "patch", "delete"]

    def _save(self, serializer: Any, channel: ChannelAccount | None) -> None:
        current = serializer.instance
        data = serializer.validated_data

        def value(name: str, default: Any) -> Any:
            return data.get(name, getattr(current, name) if current else default)

        try:
            serializer.instance = retention_policy_save(
                channel=channel,
                keep_days=value("keep_days", 365),
                action=value("action", RetentionAction.ANONYMISE),
                is_active=value("is_active", True),
                actor=request_user(self.request),
                request=self.request,
            )
        except RetentionPolicyError as error:
            raise serializers.ValidationError({"keep_days": [str(error)]}) from error

    def perform_create(self, serializer: Any) -> None:
        self._save(serializer, serializer.validated_data.get("channel"))

    def perform_update(self, serializer: Any) -> None:
        self._save(serializer, serializer.instance.channel)

    @extend_schema(responses={204: OpenApiResponse(description="The default applies again")})
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        policy = self.get_object()
        if policy.channel is None:
            raise Conflict("The default stays: switch it off (is_active false) to keep everything.")
        retention_policy_remove(
            channel=policy.channel, actor=request_user(request), request=request
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class RetentionRunViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[RetentionRun]
):
    """What each retention run did per channel, newest first (admins)."""

    permission_classes = [IsAdmin]
    serializer_class = RetentionRunSerializer
    pagination_class = cursor_page("-started_at", "-pk")
    queryset = RetentionRun.objects.all()

    @extend_schema(request=None, responses={200: RetentionRunSerializer(many=True)})
    @action(detail=False, methods=["post"], pagination_class=None)
    def run(self, request: Request) -> Response:
        """Apply every channel's retention now, as the nightly task does; answers with this
        run's rows, one per channel it applied to."""
        runs = retention_apply(actor=request_user(request), request=request)
        return Response(RetentionRunSerializer(runs, many=True).data)
