from typing import Any

from django import forms

from channels_ingest.models import ChannelAccount
from channels_ingest.services import CREDENTIAL_FIELDS, credential_hint

_SECRET_LABELS = {
    "bearer_token": "Bearer token",
    "consumer_key": "API key (consumer key)",
    "consumer_secret": "API key secret (consumer secret)",
    "access_token": "Access token",
    "access_token_secret": "Access token secret",
    "page_access_token": "Page access token",
    "app_secret": "App secret",
    "verify_token": "Webhook verify token",
    "inbound_key": "Inbound key (sent as a Bearer token by the posting system)",
}


class ChannelForm(forms.ModelForm[ChannelAccount]):
    """A channel's settings; secrets are write-only and kept when left empty."""

    keywords = forms.CharField(
        required=False,
        help_text="Brand terms to search for, separated by commas (X keyword search).",
    )
    search_query = forms.CharField(
        required=False, help_text="A raw X search query; overrides the keywords when set."
    )
    monitor_unactionable = forms.BooleanField(
        required=False,
        label="Monitor posts that ask nothing",
        help_text="Mentions without a question, complaint or watched keyword go to Monitoring "
        "until the customer asks something.",
    )
    monitor_only = forms.BooleanField(
        required=False,
        label="Monitoring only",
        help_text="Keep new conversations out of the work views (listen-only channels always are).",
    )

    class Meta:
        model = ChannelAccount
        fields = [
            "platform",
            "name",
            "handle",
            "external_account_id",
            "mode",
            "is_active",
            "poll_interval_seconds",
            "default_team",
        ]
        labels = {
            "external_account_id": "Account id on the platform",
            "is_active": "Active (poll this channel)",
            "poll_interval_seconds": "Poll every (seconds)",
        }
        help_texts = {
            "external_account_id": "The X user id, or the Facebook Page id.",
            "poll_interval_seconds": "How often to look for new posts.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = self.instance.settings or {}
        self.fields["keywords"].initial = ", ".join(settings.get("keywords", []))
        self.fields["search_query"].initial = settings.get("search_query", "")
        self.fields["monitor_only"].initial = bool(settings.get("monitor_only", False))
        self.fields["monitor_unactionable"].initial = bool(
            settings.get("monitor_unactionable", False)
        )
        stored = self.instance.credentials or {} if self.instance.pk else {}
        for names in CREDENTIAL_FIELDS.values():
            for name in names:
                if name in self.fields:
                    continue
                self.fields[name] = forms.CharField(
                    label=_SECRET_LABELS[name],
                    required=False,
                    widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
                    help_text=credential_hint(stored.get(name)),
                )
        if self.instance.pk:
            # Changing platform would orphan the channel's posts and identities.
            self.fields["platform"].disabled = True

    def clean_poll_interval_seconds(self) -> int:
        value = int(self.cleaned_data["poll_interval_seconds"])
        if value < 10:
            raise forms.ValidationError("Poll at most every 10 seconds.")
        return value

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        platform = data.get("platform") or self.instance.platform
        stored = self.instance.credentials or {} if self.instance.pk else {}
        required = {"x": ("consumer_secret",), "facebook": ("page_access_token", "app_secret")}
        for name in required.get(platform, ()):
            if not data.get(name) and not stored.get(name):
                self.add_error(name, "Needed to connect this platform.")
        if platform == "x" and not (data.get("bearer_token") or stored.get("bearer_token")):
            self.add_error("bearer_token", "Needed to read mentions and searches.")
        return data

    def credentials(self) -> dict[str, str]:
        return {
            name: self.cleaned_data.get(name) or ""
            for names in CREDENTIAL_FIELDS.values()
            for name in names
        }

    def settings_value(self) -> dict[str, Any]:
        settings = dict(self.instance.settings or {})
        keywords = [k.strip() for k in self.cleaned_data["keywords"].split(",") if k.strip()]
        for key, value in (
            ("keywords", keywords),
            ("search_query", self.cleaned_data["search_query"].strip()),
            ("monitor_only", self.cleaned_data["monitor_only"]),
            ("monitor_unactionable", self.cleaned_data["monitor_unactionable"]),
        ):
            if value:
                settings[key] = value
            else:
                settings.pop(key, None)
        return settings

    def secret_names(self) -> set[str]:
        return {name for names in CREDENTIAL_FIELDS.values() for name in names}
