"""The select written in Python is Django's select, character for character."""

from datetime import date

import pytest
from django import forms
from django.http import QueryDict

from governance.models import Role
from kpis.forms import ReportForm
from scrm.widgets import Select
from tests.factories import ChannelFactory, TagFactory, TeamFactory, UserFactory

CHOICES = [
    ("", "All <kinds>"),
    ("a&b", 'Quote " and ampersand &'),
    (3, "Three"),
    ("Group", [("g1", "In a group"), ("g2", "Also <b>")]),
]


@pytest.mark.parametrize("value", [None, "", "a&b", 3, "3", "g2", ["g1"]])
@pytest.mark.parametrize(
    "attrs",
    [None, {"id": "id_x", "class": "wide", "disabled": True, "hidden": False, "data-n": 5}],
)
def test_renders_what_djangos_select_renders(value, attrs):
    ours = Select(choices=CHOICES, attrs={"aria-label": 'A "label"'})
    django = forms.Select(choices=CHOICES, attrs={"aria-label": 'A "label"'})
    assert ours.render("kind<", value, attrs) == django.render("kind<", value, attrs)


@pytest.mark.django_db
def test_the_report_forms_selects_render_as_djangos_do():
    TeamFactory(name="Billing & <Returns>")
    TagFactory(name='"vip"')
    ChannelFactory(name="X <main>")
    UserFactory(role=Role.AGENT, first_name="Zoë", last_name="O'Neil")
    admin = UserFactory(role=Role.ADMIN)
    query = QueryDict("range=30&priority=2&grain=week")
    form = ReportForm(query, user=admin, today=date(2026, 1, 15))
    selects = [f for f in form if isinstance(f.field.widget, Select)]
    assert {f.name for f in selects} >= {"range", "channel", "team", "agent", "tag", "priority"}
    for bound in selects:
        ours = str(bound)
        bound.field.widget.__class__ = forms.Select
        assert ours == str(bound), bound.name
