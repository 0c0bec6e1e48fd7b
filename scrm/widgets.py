"""Form widgets that write their HTML in Python.

Django renders a select through a template per option; a report's filter form (channels,
teams, agents, tags) renders hundreds of options on every page, which cost more than the rest
of a cached page. ``Select`` writes the same HTML as Django's own (the tests compare the two)
without the templates.
"""

from typing import Any

from django import forms
from django.utils.html import conditional_escape
from django.utils.safestring import SafeString, mark_safe


def _text(value: Any) -> str:
    """What ``{{ value|stringformat:'s' }}`` writes."""
    return str(conditional_escape(f"{value}"))


def _attrs(attrs: dict[str, Any]) -> str:
    """What ``django/forms/widgets/attrs.html`` writes."""
    return "".join(
        f" {conditional_escape(name)}" + ("" if value is True else f'="{_text(value)}"')
        for name, value in attrs.items()
        if value is not False
    )


class Select(forms.Select):
    def render(
        self, name: str, value: Any, attrs: dict[str, Any] | None = None, renderer: Any = None
    ) -> SafeString:
        widget = self.get_context(name, value, attrs)["widget"]
        parts = [f'<select name="{conditional_escape(widget["name"])}"{_attrs(widget["attrs"])}>']
        for group_name, options, _ in widget["optgroups"]:
            if group_name:
                parts.append(f'\n  <optgroup label="{conditional_escape(group_name)}">')
            for option in options:
                parts.append(
                    f'\n  <option value="{_text(option["value"])}"{_attrs(option["attrs"])}>'
                    f"{conditional_escape(option['label'])}</option>\n"  # the option template's end
                )
            if group_name:
                parts.append("\n  </optgroup>")
        parts.append("\n</select>")
        return mark_safe("".join(parts))  # every value above is escaped
