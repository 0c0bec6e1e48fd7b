from datetime import datetime, timedelta
from typing import Any

from django import forms
from django.contrib.auth.models import User
from django.utils import timezone

from conversations.models import Priority, Status, Tag


class ReplyForm(forms.Form):
    body = forms.CharField(
        label="Reply",
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "Write a reply to the customer…"}),
        max_length=8000,
    )
    # Set when the agent confirmed replying to a conversation a colleague is assigned to.
    confirm_not_assignee = forms.BooleanField(required=False)


class NoteForm(forms.Form):
    body = forms.CharField(
        label="Internal note",
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "Only your colleagues see notes"}),
        max_length=8000,
    )


class StatusForm(forms.Form):
    # Escalating says to whom and why: it goes through the escalation panel instead.
    status = forms.ChoiceField(choices=[c for c in Status.choices if c[0] != Status.ESCALATED])


class PriorityForm(forms.Form):
    priority = forms.TypedChoiceField(choices=Priority.choices, coerce=int)


class AssignForm(forms.Form):
    """Assign to a colleague, or to nobody (an empty choice)."""

    assignee = forms.ModelChoiceField(queryset=User.objects.none(), required=False)

    def __init__(self, *args: Any, agents: list[User], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["assignee"]
        assert isinstance(field, forms.ModelChoiceField)
        field.queryset = User.objects.filter(pk__in=[a.pk for a in agents])


class TagForm(forms.Form):
    name = forms.CharField(max_length=50)
    remove = forms.BooleanField(required=False)

    def clean_name(self) -> str:
        return str(self.cleaned_data["name"]).strip().lower()

    def tag(self) -> Tag:
        return Tag.objects.get_or_create(name=self.cleaned_data["name"])[0]


SNOOZE_CHOICES = [
    ("1h", "1 hour"),
    ("4h", "4 hours"),
    ("tomorrow", "Tomorrow 9:00"),
    ("week", "Next week"),
]


class SnoozeForm(forms.Form):
    preset = forms.ChoiceField(choices=SNOOZE_CHOICES, required=False)
    until = forms.DateTimeField(
        required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"})
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        until = data.get("until") or _preset_time(data.get("preset") or "")
        if until is None:
            raise forms.ValidationError("Choose how long to snooze.")
        if until <= timezone.now():
            raise forms.ValidationError("Snooze until a time in the future.")
        data["until"] = until
        return data


def _preset_time(preset: str) -> datetime | None:
    """Presets: hours counted in real time (UTC, so a clock change does not stretch them),
    days at 9:00 in the organisation's time zone."""
    now = timezone.localtime()
    nine = now.replace(hour=9, minute=0, second=0, microsecond=0)
    return {
        "1h": timezone.now() + timedelta(hours=1),
        "4h": timezone.now() + timedelta(hours=4),
        "tomorrow": nine + timedelta(days=1),
        "week": nine + timedelta(days=7 - now.weekday()),
    }.get(preset)
