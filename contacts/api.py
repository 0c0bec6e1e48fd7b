"""API resources of contacts: list, read, create, edit, merge and its undo, CSV export and
import, identities moved between contacts, merge suggestions, and the data-subject export and
erasure. Scoped by ``contacts_visible_to`` like the Contacts pages."""

import csv
from collections.abc import Iterator
from typing import Any

import django_filters
from django.db import transaction
from django.db.models import Q, QuerySet
from django.http import HttpResponse, StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from channels_ingest.platforms import Platform
from contacts.models import (
    Contact,
    ContactImport,
    ContactImportStatus,
    ContactMerge,
    IdentityMove,
    MergeSuggestion,
    MergeSuggestionStatus,
    SocialIdentity,
)
from contacts.selectors import (
    contact_crm_id_taken,
    contact_imports_for,
    contact_list,
    contact_merges_visible_to,
    contacts_export_rows,
    contacts_visible_to,
    identities_visible_to,
    merge_suggestions_visible_to,
)
from contacts.services import (
    ContactData,
    ImportFileError,
    MergeRefused,
    contact_create,
    contact_import_create,
    contact_merge,
    contact_merge_undo,
    contact_update,
    identity_move,
    import_upload_read,
    merge_suggestion_dismiss,
)
from contacts.tasks import import_contacts
from conversations.api import ConversationSerializer
from conversations.selectors import conversations_visible_to
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

# As on the contact form, where each attribute is a "key: value" line.
_MAX_ATTRIBUTE_KEY = 100


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

    def validate_attributes(self, value: dict[str, Any]) -> dict[str, Any]:
        long = [key for key in value if len(key) > _MAX_ATTRIBUTE_KEY]
        if long:
            raise serializers.ValidationError(
                f"A key is at most {_MAX_ATTRIBUTE_KEY} characters: “{long[0][:40]}…” is longer."
            )
        return value

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


class ContactMergeSerializer(serializers.ModelSerializer[ContactMerge]):
    identity_ids = serializers.ListField(
        child=serializers.IntegerField(), read_only=True, help_text="The identities it moved"
    )
    conversation_ids = serializers.ListField(
        child=serializers.IntegerField(), read_only=True, help_text="The conversations it moved"
    )

    class Meta:
        model = ContactMerge
        fields = [
            "id",
            "kept",
            "merged",
            "identity_ids",
            "conversation_ids",
            "merged_by",
            "created_at",
            "undone_at",
            "undone_by",
        ]
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

    @extend_schema(request=MergeSerializer, responses={200: ContactMergeSerializer})
    @action(detail=True, methods=["post"])
    def merge(self, request: Request, pk: str) -> Response:
        """Merge another contact into this one; ``contact-merges/{id}/undo/`` puts it back."""
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
        return Response(ContactMergeSerializer(merge).data)

    @extend_schema(
        responses=ConversationSerializer(many=True),
        parameters=[OpenApiParameter("cursor", str), OpenApiParameter("page_size", int)],
        filters=False,
    )
    @action(
        detail=True,
        methods=["get"],
        filterset_class=None,
        pagination_class=cursor_page("-last_message_at", "-pk"),
    )
    def conversations(self, request: Request, pk: str) -> Response:
        """The contact's history: their conversations on the channels you see, newest first."""
        contact = self.get_object()
        history = (
            conversations_visible_to(user=request_user(request))
            .filter(contact_id=contact.pk)
            .select_related("contact", "channel")
            .prefetch_related("tags")
        )
        paginator = self.paginator
        assert paginator is not None
        page = paginator.paginate_queryset(history, request, view=self)
        return paginator.get_paginated_response(ConversationSerializer(page, many=True).data)

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


# --- CSV imports (managers and admins) --------------------------------------------------


class ImportProblemSerializer(serializers.Serializer[Any]):
    row = serializers.IntegerField(help_text="The row's number in the file; the header is row 1")
    column = serializers.CharField(help_text="The column, or empty for the whole row")
    message = serializers.CharField()


class ContactImportSerializer(serializers.ModelSerializer[ContactImport]):
    status = serializers.ChoiceField(choices=ContactImportStatus.choices, read_only=True)
    percent = serializers.IntegerField(read_only=True, help_text="How far the import got, 0-100")
    ignored_columns = serializers.ListField(
        child=serializers.CharField(),
        read_only=True,
        help_text="Columns of the file this import does not know",
    )
    row_errors = ImportProblemSerializer(
        source="errors",
        many=True,
        read_only=True,
        help_text="The rows not imported and why (the first 1,000)",
    )
    errors_truncated = serializers.BooleanField(
        read_only=True, help_text="There were more problems than listed"
    )
    is_finished = serializers.BooleanField(read_only=True)

    class Meta:
        model = ContactImport
        fields = [
            "id",
            "file_name",
            "status",
            "is_finished",
            "total_rows",
            "processed_rows",
            "percent",
            "created_count",
            "updated_count",
            "unchanged_count",
            "skipped_count",
            "row_errors",
            "errors_truncated",
            "ignored_columns",
            "failure",
            "created_by",
            "created_at",
            "updated_at",
            "finished_at",
        ]
        read_only_fields = fields


class ContactImportUploadSerializer(serializers.Serializer[Any]):
    file = serializers.FileField(
        help_text="A CSV file in UTF-8 with a header row naming at least name or email; "
        "the columns of the contacts export are read back"
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        try:
            attrs["import_file"] = import_upload_read(upload=attrs["file"])
        except ImportFileError as error:
            raise serializers.ValidationError({"file": [str(error)]}) from error
        return attrs


class ContactImportViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet[ContactImport],
):
    """CSV imports of contacts (managers and admins): your own, and for admins everyone's.
    An upload is checked, stored and imported in the background, as on the Import page; read
    it again to follow its progress and, once finished, the rows that were not imported."""

    permission_classes = [IsManagerOrAdmin]
    serializer_class = ContactImportSerializer
    pagination_class = cursor_page("-created_at", "-pk")
    parser_classes = [MultiPartParser]

    def get_queryset(self) -> QuerySet[ContactImport]:
        return contact_imports_for(user=request_user(self.request))

    @extend_schema(request=ContactImportUploadSerializer, responses={201: ContactImportSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        upload = ContactImportUploadSerializer(data=request.data)
        upload.is_valid(raise_exception=True)
        job = contact_import_create(
            file=upload.validated_data["import_file"],
            file_name=upload.validated_data["file"].name or "contacts.csv",
            actor=request_user(request),
        )
        transaction.on_commit(lambda: import_contacts.delay(job.pk))
        return Response(ContactImportSerializer(job).data, status=status.HTTP_201_CREATED)


# --- Merges, identities and merge suggestions ------------------------------------------------


class ContactMergeFilter(django_filters.FilterSet):
    contact = django_filters.NumberFilter(field_name="kept", help_text="The contact kept")
    undone = django_filters.BooleanFilter(
        field_name="undone_at", lookup_expr="isnull", exclude=True, help_text="Undone or not"
    )

    class Meta:
        model = ContactMerge
        fields: list[str] = []


class ContactMergeViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[ContactMerge]
):
    """Merges into the contacts you may see, newest first, with what each moved."""

    serializer_class = ContactMergeSerializer
    filterset_class = ContactMergeFilter
    pagination_class = cursor_page("-created_at", "-pk")

    def get_queryset(self) -> QuerySet[ContactMerge]:
        return contact_merges_visible_to(user=request_user(self.request))

    @extend_schema(request=None, responses=ContactMergeSerializer)
    @action(detail=True, methods=["post"])
    def undo(self, request: Request, pk: str) -> Response:
        """Put the merge back: the identities it moved return with their conversations, and
        the details it filled in are cleared unless changed since."""
        try:
            merge = contact_merge_undo(merge=self.get_object(), actor=request_user(request))
        except MergeRefused as error:
            raise Conflict(str(error)) from error
        return Response(ContactMergeSerializer(merge).data)


class SocialIdentitySerializer(IdentitySerializer):
    class Meta(IdentitySerializer.Meta):
        fields = ["id", "contact", *IdentitySerializer.Meta.fields[1:], "created_at"]
        read_only_fields = fields


class IdentityMoveRequestSerializer(serializers.Serializer[Any]):
    contact = serializers.IntegerField(
        min_value=1, required=False, help_text="The id of the contact it moves to"
    )
    email = serializers.EmailField(
        required=False, help_text="Or that contact's email address (ignoring case)"
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("contact" in attrs) == ("email" in attrs):
            raise serializers.ValidationError("Name the contact by its id or by its email.")
        return attrs


class IdentityMoveSerializer(serializers.ModelSerializer[IdentityMove]):
    conversation_ids = serializers.ListField(
        child=serializers.IntegerField(), read_only=True, help_text="The conversations it took"
    )

    class Meta:
        model = IdentityMove
        fields = [
            "id",
            "identity",
            "from_contact",
            "to_contact",
            "conversation_ids",
            "moved_by",
            "created_at",
        ]
        read_only_fields = fields


class IdentityFilter(django_filters.FilterSet):
    contact = django_filters.NumberFilter()
    platform = django_filters.ChoiceFilter(choices=Platform.choices)

    class Meta:
        model = SocialIdentity
        fields: list[str] = []


class IdentityViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[SocialIdentity]
):
    """Social identities of the contacts you may see; one may move to another contact."""

    serializer_class = SocialIdentitySerializer
    filterset_class = IdentityFilter
    pagination_class = cursor_page("-created_at", "-pk")

    def get_queryset(self) -> QuerySet[SocialIdentity]:
        return identities_visible_to(user=request_user(self.request))

    @extend_schema(request=IdentityMoveRequestSerializer, responses=IdentityMoveSerializer)
    @action(detail=True, methods=["post"])
    def move(self, request: Request, pk: str) -> Response:
        """Attach the identity to another contact you may see, with the conversations in
        which only it wrote to us; shared threads stay where they are."""
        identity = self.get_object()
        data = IdentityMoveRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        visible = contacts_visible_to(user=request_user(request))
        if "contact" in data.validated_data:
            wanted = data.validated_data["contact"]
            target = visible.filter(pk=wanted).first()
            field, shown = "contact", f"#{wanted}"
        else:
            wanted = data.validated_data["email"]
            target = visible.filter(email__iexact=wanted).order_by("pk").first()
            field, shown = "email", wanted
        if target is None:
            raise serializers.ValidationError({field: [f"No contact {shown} that you can see."]})
        try:
            move = identity_move(identity=identity, to=target, actor=request_user(request))
        except MergeRefused as error:
            raise Conflict(str(error)) from error
        return Response(IdentityMoveSerializer(move).data)


class MergeSuggestionSerializer(serializers.ModelSerializer[MergeSuggestion]):
    class Meta:
        model = MergeSuggestion
        fields = ["id", "contact", "other", "reason", "status", "created_at"]
        read_only_fields = fields


class MergeSuggestionFilter(django_filters.FilterSet):
    contact = django_filters.NumberFilter(method="_either", help_text="Either of the two")
    status = django_filters.ChoiceFilter(choices=MergeSuggestionStatus.choices)

    class Meta:
        model = MergeSuggestion
        fields: list[str] = []

    def _either(
        self, queryset: QuerySet[MergeSuggestion], name: str, value: int
    ) -> QuerySet[MergeSuggestion]:
        return queryset.filter(Q(contact_id=value) | Q(other_id=value))


class MergeSuggestionViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet[MergeSuggestion]
):
    """Pairs of contacts you may both see that look like one customer (a shared handle, the
    same name at the same company). Merge them with ``contacts/{id}/merge/``, or dismiss."""

    serializer_class = MergeSuggestionSerializer
    filterset_class = MergeSuggestionFilter
    pagination_class = cursor_page("-created_at", "-pk")

    def get_queryset(self) -> QuerySet[MergeSuggestion]:
        return merge_suggestions_visible_to(user=request_user(self.request))

    @extend_schema(request=None, responses=MergeSuggestionSerializer)
    @action(detail=True, methods=["post"])
    def dismiss(self, request: Request, pk: str) -> Response:
        suggestion = self.get_object()
        if suggestion.status != MergeSuggestionStatus.OPEN:
            state = suggestion.get_status_display().lower()
            raise Conflict(f"This suggestion was already {state}.")
        return Response(
            MergeSuggestionSerializer(merge_suggestion_dismiss(suggestion=suggestion)).data
        )
