"""API resources of channels (admins): channel accounts, whose secrets are write-only and
whose teams' access is set with them, dead letters with retry and discard, and the inbound API
channel's endpoint."""

import json
from typing import Any

import django_filters
from django.db import transaction
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from channels_ingest.connectors.api import inbound_key_is_valid, inbound_messages_parse
from channels_ingest.models import ChannelAccount, DeadLetter, DeadLetterStatus
from channels_ingest.platforms import Platform
from channels_ingest.services import (
    CREDENTIAL_FIELDS,
    channel_save,
    credential_hint,
    dead_letter_discard,
    dead_letter_retry,
)
from channels_ingest.webhooks import webhook_receive
from governance.models import ChannelAccess
from governance.services import channel_access_set
from scrm.api import Conflict, IsAdmin, cursor_page, json_without_nul, request_user


class ChannelAccessSerializer(serializers.ModelSerializer[ChannelAccess]):
    class Meta:
        model = ChannelAccess
        fields = ["team", "can_reply"]
        extra_kwargs = {"can_reply": {"help_text": "Whether the team may reply, or only see"}}


class ChannelSerializer(serializers.ModelSerializer[ChannelAccount]):
    credentials = serializers.DictField(
        child=serializers.CharField(allow_blank=True, max_length=2000),
        write_only=True,
        required=False,
        help_text="Secrets by name; names left out or empty keep their stored value",
    )
    credentials_set = serializers.SerializerMethodField(
        help_text="Each secret's state (set, and how it ends), never the secret"
    )
    access = ChannelAccessSerializer(
        many=True,
        required=False,
        help_text="The teams that see the channel (admins see every channel); sent, it "
        "replaces the whole list",
    )

    class Meta:
        model = ChannelAccount
        fields = [
            "id",
            "platform",
            "name",
            "handle",
            "external_account_id",
            "mode",
            "settings",
            "is_active",
            "poll_interval_seconds",
            "default_team",
            "credentials",
            "credentials_set",
            "access",
            "health",
            "last_error",
            "rate_limited_until",
            "last_polled_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            "health",
            "last_error",
            "rate_limited_until",
            "last_polled_at",
            "created_at",
            "updated_at",
        ]
        extra_kwargs = {
            "poll_interval_seconds": {"min_value": 10},
            "settings": {"validators": [json_without_nul]},
        }

    @extend_schema_field(serializers.DictField(child=serializers.CharField()))
    def get_credentials_set(self, channel: ChannelAccount) -> dict[str, str]:
        stored = channel.credentials or {}
        return {
            name: credential_hint(stored.get(name))
            for name in CREDENTIAL_FIELDS.get(channel.platform, ())
        }

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if self.instance is not None and attrs.get("platform", self.instance.platform) != (
            self.instance.platform
        ):
            raise serializers.ValidationError({"platform": ["A channel's platform is fixed."]})
        platform = attrs.get("platform", self.instance.platform if self.instance else "")
        unknown = set(attrs.get("credentials", {})) - set(CREDENTIAL_FIELDS.get(platform, ()))
        if unknown:
            raise serializers.ValidationError(
                {"credentials": [f"Not a secret of this platform: {', '.join(sorted(unknown))}."]}
            )
        teams = [row["team"] for row in attrs.get("access", [])]
        repeated = sorted({team.name for team in teams if teams.count(team) > 1})
        if repeated:
            raise serializers.ValidationError(
                {"access": [f"Name each team once: {', '.join(repeated)} more than once."]}
            )
        return attrs


class ChannelViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet[ChannelAccount],
):
    """Channel accounts. Secrets are accepted, encrypted at rest and never returned."""

    permission_classes = [IsAdmin]
    serializer_class = ChannelSerializer
    pagination_class = cursor_page("name", "pk")
    queryset = ChannelAccount.objects.prefetch_related("access")
    http_method_names = ["get", "post", "patch"]

    @transaction.atomic
    def _save(self, serializer: Any, channel: ChannelAccount) -> None:
        data = dict(serializer.validated_data)
        credentials = data.pop("credentials", {})
        access = data.pop("access", None)
        for name, value in data.items():
            setattr(channel, name, value)
        actor = request_user(self.request)
        serializer.instance = channel_save(channel=channel, credentials=credentials, actor=actor)
        if access is not None:
            channel_access_set(
                channel=channel,
                access={row["team"]: row.get("can_reply", True) for row in access},
                actor=actor,
            )

    def perform_create(self, serializer: Any) -> None:
        self._save(serializer, ChannelAccount())

    def perform_update(self, serializer: Any) -> None:
        self._save(serializer, serializer.instance)


class DeadLetterSerializer(serializers.ModelSerializer[DeadLetter]):
    class Meta:
        model = DeadLetter
        fields = [
            "id",
            "channel",
            "source",
            "raw",
            "context",
            "error",
            "status",
            "created_at",
            "resolved_at",
        ]
        read_only_fields = fields


class DeadLetterFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=DeadLetterStatus.choices)
    channel = django_filters.NumberFilter()

    class Meta:
        model = DeadLetter
        fields: list[str] = []


class DeadLetterViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[DeadLetter]
):
    """Payloads that could not be read, kept whole: retry reads one again, discard drops it."""

    permission_classes = [IsAdmin]
    serializer_class = DeadLetterSerializer
    filterset_class = DeadLetterFilter
    pagination_class = cursor_page("-created_at", "-pk")
    queryset = DeadLetter.objects.all()

    def _new(self) -> DeadLetter:
        letter = self.get_object()
        if letter.status != DeadLetterStatus.NEW:
            raise Conflict(f"Dead letter #{letter.pk} was already {letter.status}.")
        return letter

    @extend_schema(request=None, responses=DeadLetterSerializer)
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str) -> Response:
        """Read the payload again; if it still cannot be read, the letter stays, with the new
        reason."""
        letter = dead_letter_retry(letter=self._new(), actor=request_user(request))
        return Response(DeadLetterSerializer(letter).data)

    @extend_schema(request=None, responses=DeadLetterSerializer)
    @action(detail=True, methods=["post"])
    def discard(self, request: Request, pk: str) -> Response:
        letter = dead_letter_discard(letter=self._new(), actor=request_user(request))
        return Response(DeadLetterSerializer(letter).data)


# --- The inbound API channel --------------------------------------------------------------


class InboundRejectedSerializer(serializers.Serializer[Any]):
    error = serializers.CharField()


class InboundResultSerializer(serializers.Serializer[Any]):
    delivery = serializers.IntegerField(help_text="The stored delivery's id")
    accepted = serializers.IntegerField(help_text="Messages read (those seen before are ignored)")
    rejected = InboundRejectedSerializer(many=True, help_text="Kept as dead letters")


class InboundMessagesView(APIView):
    """Post messages into the channel's inbox, as another connector: authenticated with the
    channel's inbound key (``Authorization: Bearer <key>``, set on the channel), not with a
    user's token. The body is stored before the answer, so nothing is lost; each message is
    stored once however often it is posted (by ``external_id``); messages that cannot be read
    are kept as dead letters."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(
        request=OpenApiTypes.OBJECT,
        responses={202: InboundResultSerializer},
        parameters=[
            OpenApiParameter(
                "Authorization",
                str,
                OpenApiParameter.HEADER,
                required=True,
                description="Bearer <the channel's inbound key>",
            )
        ],
        auth=[],
    )
    def post(self, request: Request, channel_id: int) -> Response:
        channel = get_object_or_404(ChannelAccount, pk=channel_id, platform=Platform.API)
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not inbound_key_is_valid(channel, key.strip()):
            raise AuthenticationFailed("Send the channel's inbound key as a Bearer token.")
        if not channel.is_active:
            raise Conflict("This channel is switched off.")
        raw = request.body
        try:
            parsed = inbound_messages_parse(json.loads(raw))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            parsed = None
        with transaction.atomic():
            # Kept whatever it holds: an unreadable body becomes a dead letter when processed.
            delivery = webhook_receive(channel=channel, body=raw)
        if parsed is None:
            return Response(
                {
                    "code": "invalid",
                    "detail": "The body is not JSON; it was kept as a dead letter.",
                    "fields": {"non_field_errors": ["The body is not JSON."]},
                },
                status=status.HTTP_400_BAD_REQUEST,
            )
        return Response(
            {
                "delivery": delivery.pk,
                "accepted": len(parsed.posts),
                "rejected": [{"error": r.error} for r in parsed.rejected],
            },
            status=status.HTTP_202_ACCEPTED,
        )

    def get_authenticate_header(self, request: Request) -> str:
        return "Bearer"
