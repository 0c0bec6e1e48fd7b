import json
from typing import Any

from django import forms
from django.core.files.uploadedfile import UploadedFile

from contacts.models import Contact
from contacts.selectors import contact_crm_id_taken
from contacts.services import ContactData, ImportFile, ImportFileError, import_upload_read


def _attribute_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def attributes_as_text(attributes: dict[str, Any]) -> str:
    return "\n".join(f"{key}: {_attribute_text(value)}" for key, value in attributes.items())


class ContactForm(forms.Form):
    """A contact's details as a person edits them; custom attributes as "key: value" lines."""

    name = forms.CharField(max_length=200, required=False)
    email = forms.EmailField(
        required=False,
        widget=forms.TextInput(attrs={"inputmode": "email", "autocomplete": "off"}),
    )
    phone = forms.CharField(
        max_length=50, required=False, widget=forms.TextInput(attrs={"inputmode": "tel"})
    )
    company = forms.CharField(max_length=200, required=False)
    is_vip = forms.BooleanField(label="VIP", required=False)
    external_crm_id = forms.CharField(label="External CRM id", max_length=100, required=False)
    external_crm_url = forms.URLField(
        label="External CRM link",
        required=False,
        assume_scheme="https",
        widget=forms.TextInput(attrs={"inputmode": "url"}),
    )
    attributes = forms.CharField(
        label="Custom attributes",
        required=False,
        widget=forms.Textarea(attrs={"rows": 5, "placeholder": "plan: gold\nregion: EMEA"}),
        help_text="One per line, as key: value.",
    )

    def __init__(self, *args: Any, contact: Contact | None = None, **kwargs: Any) -> None:
        self.contact = contact
        if contact is not None:
            kwargs.setdefault(
                "initial",
                {
                    "name": contact.name,
                    "email": contact.email,
                    "phone": contact.phone,
                    "company": contact.company,
                    "is_vip": contact.is_vip,
                    "external_crm_id": contact.external_crm_id,
                    "external_crm_url": contact.external_crm_url,
                    "attributes": attributes_as_text(contact.attributes or {}),
                },
            )
        super().__init__(*args, **kwargs)

    def clean_external_crm_id(self) -> str:
        crm_id: str = self.cleaned_data["external_crm_id"].strip()
        if contact_crm_id_taken(
            external_crm_id=crm_id, exclude_pk=self.contact.pk if self.contact else None
        ):
            raise forms.ValidationError("Another contact already has this CRM id.")
        return crm_id

    def clean_attributes(self) -> dict[str, Any]:
        stored = (self.contact.attributes or {}) if self.contact else {}
        attributes: dict[str, Any] = {}
        problems = []
        for number, line in enumerate(self.cleaned_data["attributes"].splitlines(), start=1):
            if not line.strip():
                continue
            key, colon, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if not colon or not key:
                problems.append(f"Line {number}: write key: value.")
            elif len(key) > 100:
                problems.append(f"Line {number}: the key is longer than 100 characters.")
            elif key in attributes:
                problems.append(f"Line {number}: “{key}” is already set above.")
            elif key in stored and _attribute_text(stored[key]) == value:
                # Unchanged: keep numbers and lists that came from an import as they were.
                attributes[key] = stored[key]
            else:
                attributes[key] = value
        if problems:
            raise forms.ValidationError(problems)
        return attributes

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        # A field that failed its own checks is missing here but was not left empty.
        if (
            not self.has_error("name")
            and not self.has_error("email")
            and not cleaned.get("name", "").strip()
            and not cleaned.get("email")
        ):
            self.add_error("name", "Give a name or an email address.")
        return cleaned

    def contact_data(self) -> ContactData:
        data = self.cleaned_data
        return ContactData(
            name=data["name"].strip(),
            email=data["email"],
            phone=data["phone"].strip(),
            company=data["company"].strip(),
            is_vip=data["is_vip"],
            external_crm_id=data["external_crm_id"],
            external_crm_url=data["external_crm_url"],
            attributes=data["attributes"],
        )


class ContactImportForm(forms.Form):
    file = forms.FileField(
        label="CSV file",
        widget=forms.ClearableFileInput(attrs={"accept": ".csv,text/csv"}),
    )

    import_file: ImportFile

    def clean_file(self) -> UploadedFile:
        upload: UploadedFile = self.cleaned_data["file"]
        try:
            self.import_file = import_upload_read(upload=upload)
        except ImportFileError as exc:
            raise forms.ValidationError(str(exc)) from exc
        return upload
