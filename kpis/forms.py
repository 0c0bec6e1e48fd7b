"""What a report is asked for (range, grain, filters) and the targets managers set."""

from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib.auth import get_user_model
from django.http import QueryDict

from channels_ingest.models import ChannelAccount
from channels_ingest.platforms import Platform
from conversations.models import Priority, Tag
from governance.models import Role, Team
from governance.selectors import channels_visible_to
from kpis.metrics import GRAINS, SHARE_METRICS, DateRange, Filters
from kpis.models import KpiTarget
from scrm.types import AnyUser
from scrm.widgets import Select

# Rolling windows of the range picker, in days (also the short links `?days=7`).
ROLLING = (7, 30, 90)
CALENDAR = (
    ("this_month", "This month"),
    ("last_month", "Last month"),
    ("this_quarter", "This quarter"),
)
CUSTOM = "custom"
PRESETS = (
    *((str(days), f"Last {days} days") for days in ROLLING),
    *CALENDAR,
    (CUSTOM, "Custom range"),
)
DEFAULT_PRESET = "30"
# A longer range would make a single page read more than a year of facts at once.
MAX_RANGE_DAYS = 400
FILTER_FIELDS = ("channel", "platform", "team", "agent", "priority", "tag")


def preset_range(preset: str, today: date) -> DateRange:
    if preset.isdigit():
        return DateRange.last(int(preset), today=today)
    month_start = today.replace(day=1)
    if preset == "this_month":
        return DateRange(month_start, today)
    if preset == "last_month":
        end = month_start - timedelta(days=1)
        return DateRange(end.replace(day=1), end)
    if preset == "this_quarter":
        return DateRange(month_start.replace(month=(today.month - 1) // 3 * 3 + 1), today)
    raise ValueError(f"Unknown range {preset!r}")


def default_grain(range_: DateRange) -> str:
    if range_.days <= 62:
        return "day"
    return "week" if range_.days <= 200 else "month"


class _AgentChoice(forms.ModelChoiceField):
    def label_from_instance(self, obj: Any) -> str:
        return obj.get_full_name() or obj.get_username()


class ReportForm(forms.Form):
    """The range, grain and filters of every report page and export, read from the query."""

    range = forms.ChoiceField(choices=PRESETS, required=False, label="Range", widget=Select)
    start = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    end = forms.DateField(
        required=False, label="To", widget=forms.DateInput(attrs={"type": "date"})
    )
    grain = forms.ChoiceField(
        choices=[("", "Automatic"), *((g, g.capitalize()) for g in GRAINS)],
        required=False,
        label="Per",
        widget=Select,
    )
    channel = forms.ModelChoiceField(
        queryset=ChannelAccount.objects.none(),
        required=False,
        empty_label="All channels",
        widget=Select,
    )
    platform = forms.ChoiceField(
        choices=[("", "All platforms"), *Platform.choices], required=False, widget=Select
    )
    team = forms.ModelChoiceField(
        queryset=Team.objects.order_by("name"),
        required=False,
        empty_label="All teams",
        widget=Select,
    )
    agent = _AgentChoice(
        queryset=get_user_model().objects.none(),
        required=False,
        empty_label="All agents",
        widget=Select,
    )
    priority = forms.TypedChoiceField(
        choices=[("", "All priorities"), *Priority.choices],
        coerce=int,
        empty_value=None,
        required=False,
        widget=Select,
    )
    tag = forms.ModelChoiceField(
        queryset=Tag.objects.order_by("name"),
        required=False,
        empty_label="All tags",
        widget=Select,
    )

    def __init__(self, data: QueryDict, *, user: AnyUser, today: date) -> None:
        data = data.copy()
        # The old page's links (`?days=7`) and the range picker's short links.
        if not data.get("range") and data.get("days"):
            data["range"] = str(data.get("days"))
        if not data.get("range") and (data.get("start") or data.get("end")):
            data["range"] = CUSTOM
        if not data.get("range"):
            data["range"] = DEFAULT_PRESET
        super().__init__(data)
        self.today = today
        channel, agent = self.fields["channel"], self.fields["agent"]
        assert isinstance(channel, forms.ModelChoiceField)
        assert isinstance(agent, forms.ModelChoiceField)
        channel.queryset = channels_visible_to(user=user).order_by("name")
        agent.queryset = (
            get_user_model()
            .objects.filter(is_active=True, groups__name__in=[r.value for r in Role])
            .distinct()
            .order_by("first_name", "last_name", "username")
        )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        preset = cleaned.get("range") or DEFAULT_PRESET
        cleaned["range"] = preset
        if preset != CUSTOM:
            range_ = preset_range(preset, self.today)
        else:
            start, end = cleaned.get("start"), cleaned.get("end")
            if "start" in self.errors or "end" in self.errors:
                return cleaned
            if start is None or end is None:
                raise forms.ValidationError("A custom range needs both a start and an end date.")
            if start > end:
                raise forms.ValidationError("The start date must be on or before the end date.")
            range_ = DateRange(start, end)
            if range_.days > MAX_RANGE_DAYS:
                raise forms.ValidationError(
                    f"A range can be at most {MAX_RANGE_DAYS} days long; this one has "
                    f"{range_.days}."
                )
        cleaned["date_range"] = range_
        cleaned["grain"] = cleaned.get("grain") or default_grain(range_)
        return cleaned

    @property
    def date_range(self) -> DateRange:
        return self.cleaned_data["date_range"]

    @property
    def bucket(self) -> str:
        """Day, week or month: what one point of a series covers."""
        return self.cleaned_data["grain"]

    @property
    def filters(self) -> Filters:
        data = self.cleaned_data
        return Filters(
            channel=data["channel"].pk if data.get("channel") else None,
            platform=data.get("platform") or "",
            team=data["team"].pk if data.get("team") else None,
            agent=data["agent"].pk if data.get("agent") else None,
            priority=data.get("priority"),
            tag=data["tag"].pk if data.get("tag") else None,
        )

    def filter_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in FILTER_FIELDS]

    def filter_params(self) -> dict[str, str]:
        """The filters as query parameters, for links that keep them."""
        params = {}
        for name in FILTER_FIELDS:
            value = self.cleaned_data.get(name)
            if value not in (None, ""):
                params[name] = str(getattr(value, "pk", value))
        return params

    def range_params(self) -> dict[str, str]:
        preset = self.cleaned_data["range"]
        if preset == CUSTOM:
            range_ = self.date_range
            return {"start": range_.start.isoformat(), "end": range_.end.isoformat()}
        return {"range": preset}

    def query(self, **changes: Any) -> str:
        """The query string of this report, with some parameters changed (None drops one)."""
        params: dict[str, Any] = {**self.range_params(), **self.filter_params()}
        if self.data.get("grain"):
            params["grain"] = self.bucket
        for name, value in changes.items():
            if value is None:
                params.pop(name, None)
            else:
                params[name] = value
        return urlencode(params)

    def filter_labels(self, hidden: Sequence[str] = ()) -> list[str]:
        """The filters in use, in words; ``hidden``: those a page splits its figures by, and
        so does not apply."""
        labels = []
        for name in FILTER_FIELDS:
            value = self.cleaned_data.get(name) if name not in hidden else None
            if value in (None, ""):
                continue
            field = self.fields[name]
            if isinstance(field, forms.ModelChoiceField):
                labels.append(field.label_from_instance(value))
            elif isinstance(field, forms.ChoiceField):
                names: dict[Any, Any] = dict(field.choices)  # type: ignore[arg-type]
                labels.append(str(names.get(value, value)))
        return labels


class KpiTargetForm(forms.ModelForm):
    class Meta:
        model = KpiTarget
        fields = [
            "metric",
            "value",
            "period",
            "channel",
            "platform",
            "team",
            "at_risk_margin",
            "valid_from",
            "note",
        ]
        labels = {"at_risk_margin": "At risk within (%)", "valid_from": "In force from"}
        widgets = {"valid_from": forms.DateInput(attrs={"type": "date"})}

    def __init__(self, *args: Any, user: AnyUser, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        channel = self.fields["channel"]
        assert isinstance(channel, forms.ModelChoiceField)
        channel.queryset = channels_visible_to(user=user).order_by("name")
        channel.empty_label = "Any channel"
        team = self.fields["team"]
        assert isinstance(team, forms.ModelChoiceField)
        team.queryset = Team.objects.order_by("name")
        team.empty_label = "Any team"
        self.fields["platform"] = forms.ChoiceField(
            choices=[("", "Any platform"), *Platform.choices], required=False
        )
        self.fields["valid_from"].widget.format = "%Y-%m-%d"

    def clean_value(self) -> float:
        value = self.cleaned_data["value"]
        if value < 0:
            raise forms.ValidationError("A target cannot be negative.")
        return value

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        value = cleaned.get("value")
        if cleaned.get("metric") in SHARE_METRICS and value is not None and value > 100:
            self.add_error("value", "This target is a percentage: at most 100.")
        return cleaned

    def clean_at_risk_margin(self) -> float:
        margin = self.cleaned_data["at_risk_margin"]
        if not 0 <= margin <= 100:
            raise forms.ValidationError("The margin is a percentage between 0 and 100.")
        return margin
