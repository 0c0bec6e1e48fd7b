"""Forms of the publishing policy pages: a policy, and the "test a message" box."""

from typing import Any, cast

from django import forms
from django.contrib.auth.models import User
from django.db.models import QuerySet

from channels_ingest.models import ChannelAccount
from governance.models import PublishingPolicy
from governance.policy import (
    banned_pattern_problems,
    quiet_hour_clean,
    quiet_hours_problem,
    terms_clean,
)

MAX_EXPIRY_HOURS = 24 * 30


def _lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip()]


class ApproverField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, obj: Any) -> str:
        return str(obj.get_full_name() or obj.get_username())


class PolicyForm(forms.ModelForm[PublishingPolicy]):
    """A policy's settings. A new channel policy also names its channel; the default and an
    existing policy keep theirs."""

    channel = forms.ModelChoiceField(
        queryset=ChannelAccount.objects.none(),
        required=True,
        empty_label="Choose a channel…",
        help_text="Channels without a policy of their own follow the default.",
    )
    approvers = ApproverField(
        label="Named approvers",
        queryset=User.objects.filter(is_active=True).order_by("username"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=(
            "Only these people approve. Leave all unticked for the admins and the managers "
            "of the teams that reply on the channel."
        ),
    )
    banned_terms = forms.CharField(
        label="Banned terms",
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="One per line (or separated by commas); whole words, any case.",
    )
    banned_patterns = forms.CharField(
        label="Banned patterns",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
        help_text="Regular expressions, one per line, matched in any case.",
    )
    quiet_hours_start = forms.CharField(
        label="Quiet hours from",
        required=False,
        max_length=5,
        widget=forms.TextInput(attrs={"placeholder": "22:00", "class": "narrow"}),
    )
    quiet_hours_end = forms.CharField(
        label="Quiet hours until",
        required=False,
        max_length=5,
        widget=forms.TextInput(attrs={"placeholder": "07:00", "class": "narrow"}),
        help_text="Local time, 24-hour HH:MM; an end before the start runs past midnight.",
    )
    approval_expiry_hours = forms.IntegerField(
        label="Approval expires after (hours)",
        min_value=1,
        max_value=MAX_EXPIRY_HOURS,
        widget=forms.NumberInput(attrs={"class": "narrow"}),
    )

    class Meta:
        model = PublishingPolicy
        fields = [
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
        ]
        labels = {
            "approval": "Who needs approval",
            "banned_action": "When a banned term or pattern is found",
            "pii_action": "When personal data is found (cards, bank accounts, ids, phones, emails)",
            "links_action": "When a link is found",
            "quiet_hours_action": "During quiet hours",
        }
        widgets = {
            "approval": forms.RadioSelect,
        }

    def __init__(self, *args: Any, channels: QuerySet[ChannelAccount] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        policy = self.instance
        if channels is None:
            del self.fields["channel"]
        else:
            cast(forms.ModelChoiceField, self.fields["channel"]).queryset = channels
        self.initial["banned_terms"] = "\n".join(policy.banned_terms or [])
        self.initial["banned_patterns"] = "\n".join(policy.banned_patterns or [])

    def clean_banned_terms(self) -> list[str]:
        raw = self.cleaned_data.get("banned_terms") or ""
        return terms_clean(term for line in raw.splitlines() for term in line.split(","))

    def clean_banned_patterns(self) -> list[str]:
        patterns = _lines(self.cleaned_data.get("banned_patterns") or "")
        problems = banned_pattern_problems(patterns)
        if problems:
            raise forms.ValidationError(problems)
        return patterns

    def _clean_time(self, name: str) -> str:
        try:
            return quiet_hour_clean(self.cleaned_data.get(name) or "")
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from exc

    def clean_quiet_hours_start(self) -> str:
        return self._clean_time("quiet_hours_start")

    def clean_quiet_hours_end(self) -> str:
        return self._clean_time("quiet_hours_end")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        start, end = cleaned.get("quiet_hours_start"), cleaned.get("quiet_hours_end")
        if "quiet_hours_start" in cleaned and "quiet_hours_end" in cleaned:
            problem = quiet_hours_problem(start or "", end or "")
            if problem is not None:
                self.add_error(*problem)
        return cleaned


class PolicyTestForm(forms.Form):
    """A message to run through the gate as a chosen sender would send it."""

    AUTOMATIC = "automatic"

    channel = forms.ModelChoiceField(
        queryset=ChannelAccount.objects.order_by("name"), empty_label=None
    )
    sender = forms.ChoiceField(label="Sent by")
    text = forms.CharField(label="Message", widget=forms.Textarea(attrs={"rows": 3}), strip=False)

    def __init__(self, *args: Any, users: QuerySet[User], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._users = {str(u.pk): u for u in users}
        cast(forms.ChoiceField, self.fields["sender"]).choices = [
            (self.AUTOMATIC, "An automatic message (routing rule)"),
            *((pk, u.get_full_name() or u.get_username()) for pk, u in self._users.items()),
        ]

    def sender_user(self) -> User | None:
        value = self.cleaned_data["sender"]
        return None if value == self.AUTOMATIC else self._users[value]
