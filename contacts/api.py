"""API resources of contacts: list, read, create, edit, merge, CSV export, and the
data-subject export and erasure. Scoped by ``contacts_visible_to`` like the Contacts pages."""

import csv
from collections.abc import Iterator
from typing import Any

import django_filters
from django.db.models import QuerySet
from django.http import HttpResponse, StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from contacts.models import Contact, ContactMerge, SocialIdentity
from contacts.selectors import (
    contact_crm_id_taken,
    contact_list,
    contacts_export_rows,
    contacts_visible_to,
)
from contacts.services import (
    ContactData,
    MergeRefused,
    contact_create,
    contact_merge,
    contact_update,
)
from governance.audit import audit_record
from governance.subject_rights import contact_data_export, contact_erase, erase_confirmation_errors
from scrm.api import (
    BlankableUrlField,
    Conflict,
    IsManagerOrAdmin,
    cursor_page,
    json_without_nul,
    request_user,
)


class IdentitySerializer(serializers.ModelSerializer[SocialIdentity]):
    profile_url = BlankableUrlField(read_only=True)

    class Meta:
        model = SocialIdentity
        fields = [
            "id",
            "platform",
            "platform_user_id",
            "handle",
            "display_name",
            "profile_url",
            "followers_count",
            "verified",
        ]
        read_only_fields = fields


class ContactSerializer(serializers.ModelSerializer[Contact]):
    identities = IdentitySerializer(many=True, read_only=True)
    external_crm_url = BlankableUrlField(required=False, max_length=200)
    attributes = serializers.DictField(
        required=False, help_text="Custom attributes", validators=[json_without_nul]
    )

    class Meta:
        model = Contact
        fields = [
            "id",
            "name",
            "email",
            "phone",
            "company",
            "is_vip",
            "external_crm_id",
            "external_crm_url",
            "attributes",
            "source",
            "identities",
            "first_seen_at",
            "last_seen_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            "source",
            "first_seen_at",
            "last_seen_at",
            "created_at",
            "updated_at",
        ]

    def validate_external_crm_id(self, value: str) -> str:
        value = value.strip()
        if contact_crm_id_taken(
            external_crm_id=value, exclude_pk=self.instance.pk if self.instance else None
        ):
            raise serializers.ValidationError("Another contact already has this CRM id.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        name = attrs.get("name", self.instance.name if self.instance else "")
        email = attrs.get("email", self.instance.email if self.instance else "")
        if not name.strip() and not email:
            raise serializers.ValidationError({"name": ["Give a name or an email address."]})
        return attrs

    def contact_data(self) -> ContactData:
        """The instance's values with the request's over them (PATCH changes what it names)."""
        current = self.instance
        data = self.validated_data

        def value(name: str, default: Any) -> Any:
            return data.get(name, getattr(current, name) if current else default)

        return ContactData(
            name=value("name", "").strip(),
            email=value("email", ""),
            phone=value("phone", "").strip(),
            company=value("company", "").strip(),
            is_vip=value("is_vip", False),
            external_crm_id=value("external_crm_id", ""),
            external_crm_url=value("external_crm_url", ""),
            attributes=value("attributes", {}),
        )


class MergeSerializer(serializers.Serializer[Any]):
    other = serializers.IntegerField(
        min_value=1, help_text="The contact merged into this one (it disappears into it)"
    )


class MergeResultSerializer(serializers.ModelSerializer[ContactMerge]):
    class Meta:
        model = ContactMerge
        fields = ["id", "kept", "merged", "identity_ids", "conversation_ids", "created_at"]
        read_only_fields = fields


class EraseSerializer(serializers.Serializer[Any]):
    confirm = serializers.CharField(
        max_length=300, help_text="The contact's name, or ERASE <id>, exactly"
    )
    understood = serializers.BooleanField(help_text="That this cannot be undone: must be true")


class ContactFilter(django_filters.FilterSet):
    q = django_filters.CharFilter(
        method="_search", help_text="Name, email, company, handle or display name contains"
    )
    external_crm_id = django_filters.CharFilter()
    is_vip = django_filters.BooleanFilter()
    updated_since = django_filters.IsoDateTimeFilter(field_name="updated_at", lookup_expr="gte")

    class Meta:
        model = Contact
        fields: list[str] = []

    def _search(self, queryset: QuerySet[Contact], name: str, value: str) -> QuerySet[Contact]:
        matching = contact_list(user=request_user(self.request), search=value.strip()[:200])
        return queryset.filter(pk__in=matching.values("pk"))


class _Echo:
    def write(self, value: str) -> str:
        return value


class ContactViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet[Contact],
):
    """Customers with their social identities: those with a conversation on a channel your
    teams see, and those added by hand or imported."""

    serializer_class = ContactSerializer
    filterset_class = ContactFilter
    pagination_class = cursor_page("-updated_at", "-pk")
    http_method_names = ["get", "post", "patch"]

    def get_queryset(self) -> QuerySet[Contact]:
        return contacts_visible_to(user=request_user(self.request)).prefetch_related("identities")

    def perform_create(self, serializer: Any) -> None:
        serializer.instance = contact_create(
            data=serializer.contact_data(), actor=request_user(self.request)
        )

    def perform_update(self, serializer: Any) -> None:
        contact_update(
            contact=serializer.instance,
            data=serializer.contact_data(),
            actor=request_user(self.request),
        )

    @extend_schema(request=MergeSerializer, responses={200: MergeResultSerializer})
    @action(detail=True, methods=["post"])
    def merge(self, request: Request, pk: str) -> Response:
        """Merge another contact into this one; undone in the browser."""
        kept = self.get_object()
        data = MergeSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        merged = self.get_queryset().filter(pk=data.validated_data["other"]).first()
        if merged is None:
            raise NotFound("No such contact.")
        try:
            merge = contact_merge(merged=merged, kept=kept, actor=request_user(request))
        except MergeRefused as error:
            raise Conflict(str(error)) from error
        return Response(MergeResultSerializer(merge).data)

    @extend_schema(
        parameters=[OpenApiParameter("q", str, description="Only contacts matching this")],
        responses={(200, "text/csv"): OpenApiTypes.STR},
    )
    @action(
        detail=False,
        methods=["get"],
        permission_classes=[IsManagerOrAdmin],
        filterset_class=None,
        pagination_class=None,
    )
    def export(self, request: Request) -> StreamingHttpResponse:
        """All contacts you may see as CSV, the columns an import reads back (managers and
        admins)."""
        search = request.query_params.get("q", "").strip()[:200]
        rows = contacts_export_rows(user=request_user(request), search=search)
        audit_record(
            action="contacts.exported",
            actor=request_user(request),
            request=request,
            search=search,
            rows=contact_list(user=request_user(request), search=search).count(),
        )
        writer = csv.writer(_Echo())

        def lines() -> Iterator[str]:
            for row in rows:
                yield writer.writerow(row)

        response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
        filename = f"contacts-{timezone.localdate():%Y-%m-%d}.csv"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response

    @extend_schema(request=None, responses={(200, "application/zip"): OpenApiTypes.BINARY})
    @action(
        detail=True, methods=["post"], url_path="export-data", permission_classes=[IsManagerOrAdmin]
    )
    def export_data(self, request: Request, pk: str) -> HttpResponse:
        """Everything held about the person, as a ZIP (data-subject access; audited)."""
        contact = self.get_object()
        archive = contact_data_export(contact=contact, actor=request_user(request), request=request)
        response = HttpResponse(archive, content_type="application/zip")
        filename = f"contact-{contact.pk}-data-{timezone.localdate():%Y-%m-%d}.zip"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response

    @extend_schema(request=EraseSerializer, responses={204: OpenApiResponse(description="Erased")})
    @action(detail=True, methods=["post"], permission_classes=[IsManagerOrAdmin])
    def erase(self, request: Request, pk: str) -> Response:
        """Erase the person everywhere, irreversibly. Confirm as on the page: type the name
        (or ERASE <id>) and say you understand."""
        contact = self.get_object()
        data = EraseSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        errors = erase_confirmation_errors(
            contact=contact,
            typed=data.validated_data["confirm"],
            understood=data.validated_data["understood"],
        )
        if errors:
            raise serializers.ValidationError({"confirm": errors})
        contact_erase(contact=contact, actor=request_user(request), request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)
