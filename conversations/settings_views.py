"""The routing settings pages for admins: rules and their dry run, SLA policies, business
hours, departments, escalation paths, webhook endpoints and auto-assignment capacities."""

from collections.abc import Callable, Iterable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Model, Prefetch, ProtectedError, RestrictedError
from django.http import HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from channels_ingest.platforms import Platform
from conversations.models import (
    BusinessCalendar,
    Department,
    Direction,
    EscalationLevel,
    EscalationPath,
    Message,
    RoutingRule,
    SlaPolicy,
    WebhookCall,
    WebhookEndpoint,
)
from conversations.presence import agents_online
from conversations.routing import agents_load
from conversations.rules import CONDITION_FIELDS, EVENTS, KINDS, PRIORITIES, Facts
from conversations.selectors import messages_visible_to
from conversations.settings_forms import (
    NEW_ACTION,
    NEW_CONDITION,
    NONE_SHOWN,
    OP_LABELS,
    CalendarForm,
    CapacityForm,
    Catalog,
    DepartmentForm,
    DryRunForm,
    EscalationPathForm,
    RuleForm,
    RuleMoveForm,
    SlaPolicyForm,
    WebhookEndpointForm,
    action_view,
    condition_view,
    minutes_display,
    rule_summary,
    rules_dry_run,
    rules_naming,
    still_used_message,
    weekly_summary,
)
from conversations.webhook_calls import webhook_call_redeliver
from governance.audit import audit_change, audit_deletion
from governance.models import TeamMembership
from governance.roles import is_admin
from scrm.types import AuthedRequest

View = Callable[..., HttpResponse]

TABS = [
    ("rules", "Rules", "routing:rules"),
    ("dry_run", "Dry run", "routing:dry_run"),
    ("sla", "SLA policies", "routing:sla"),
    ("hours", "Business hours", "routing:hours"),
    ("departments", "Departments", "routing:departments"),
    ("paths", "Escalation paths", "routing:paths"),
    ("endpoints", "Webhooks", "routing:endpoints"),
    ("assignment", "Auto-assignment", "routing:assignment"),
]


def admins_only(view: View) -> View:
    @wraps(view)
    def guarded(request: AuthedRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not is_admin(request.user):
            raise PermissionDenied("Routing, SLAs and escalation are managed by admins.")
        return view(request, *args, **kwargs)

    return guarded


def _page(request: AuthedRequest, template: str, tab: str, **context: Any) -> HttpResponse:
    context["tabs"] = [(key == tab, label, reverse(name)) for key, label, name in TABS]
    return render(request, f"conversations/settings/{template}", context)


def _delete(
    request: AuthedRequest,
    thing: Model,
    *,
    noun: str,
    back: str,
    tab: str,
    warnings: Iterable[str] = (),
) -> HttpResponse:
    """Ask first; on POST delete, or say what still uses the thing."""
    name = str(thing)
    if request.method == "POST":
        try:
            with audit_deletion(thing, actor=request.user):
                thing.delete()
        except ProtectedError as error:
            messages.error(request, still_used_message(noun, name, error.protected_objects))
            return redirect(back)
        except RestrictedError as error:
            messages.error(request, still_used_message(noun, name, error.restricted_objects))
            return redirect(back)
        messages.success(request, f"{noun} “{name}” deleted.")
        return redirect(back)
    return _page(
        request,
        "confirm_delete.html",
        tab,
        noun=noun,
        name=name,
        back=back,
        warnings=list(warnings),
    )


def _rules_warning(kind: str, pk: int) -> list[str]:
    rules = rules_naming(kind, pk)
    if not rules:
        return []
    names = ", ".join(f"“{rule.name}”" for rule in rules)
    meanwhile = "They skip that part until you edit them"
    if kind == "calendar":
        meanwhile = (
            "Their business-hours conditions use the default business hours until you edit them"
            if BusinessCalendar.objects.filter(is_default=True).exclude(pk=pk).exists()
            else "Their business-hours conditions take every hour as open until you edit them"
        )
    return [
        f"Routing rules that name it: {names}. {meanwhile}, "
        "and cannot be saved again until you choose something else."
    ]


def _default_hours_warning(calendar: BusinessCalendar) -> list[str]:
    """Deleting the default business hours also changes the rules whose business-hours
    condition names no calendar: they use the default hours, and none would be left."""
    if not calendar.is_default:  # there is one default at most
        return []
    rules = rules_naming("default-calendar", calendar.pk)
    if not rules:
        return []
    names = ", ".join(f"“{rule.name}”" for rule in rules)
    return [
        f"Routing rules that use the default business hours: {names}. With no default hours "
        "left, their business-hours conditions take every hour as open: make other hours the "
        "default first, or edit those rules."
    ]


# --- Rules -----------------------------------------------------------------------------


@admins_only
def rule_list(request: AuthedRequest) -> HttpResponse:
    names = Catalog.load().names()
    rules = list(RoutingRule.objects.order_by("position", "id"))
    return _page(
        request,
        "rules.html",
        "rules",
        rules=[(rule, rule_summary(rule, names)) for rule in rules],
    )


@admins_only
def rule_edit(request: AuthedRequest, pk: int | None = None) -> HttpResponse:
    rule = get_object_or_404(RoutingRule, pk=pk) if pk else RoutingRule()
    catalog = Catalog.load()
    form = RuleForm(
        request.POST if request.method == "POST" else None, instance=rule, catalog=catalog
    )
    if request.method == "POST" and form.is_valid():
        with audit_change(rule, actor=request.user):
            rule = form.save(actor=request.user)
        messages.success(request, f"Rule “{rule.name}” saved.")
        return redirect("routing:rules")
    conditions = form.condition_rows()
    actions = form.action_rows()
    return _page(
        request,
        "rule_form.html",
        "rules",
        form=form,
        rule=rule,
        options=catalog.options(),
        conditions=conditions,
        actions=actions,
        next_condition=len(conditions),
        next_action=len(actions),
        new_condition=condition_view("conditions-__index__", NEW_CONDITION),
        new_action=action_view("actions-__index__", NEW_ACTION),
        condition_templates=[
            condition_view("conditions-__index__", {"field": name, "op": ops[0], "value": None})
            for name, ops in CONDITION_FIELDS.items()
        ],
        action_templates=[
            action_view("actions-__index__", {"type": kind, "value": None})
            for kind, _ in catalog.options()["action"]
        ],
        operators={
            name: [(op, OP_LABELS[op]) for op in ops] for name, ops in CONDITION_FIELDS.items()
        },
    )


@require_POST
@admins_only
def rule_move(request: AuthedRequest, pk: int) -> HttpResponse:
    rule = get_object_or_404(RoutingRule, pk=pk)
    form = RuleMoveForm(request.POST)
    if form.is_valid():
        with audit_change(rule, actor=request.user):
            form.save(rule=rule, actor=request.user)
    return redirect("routing:rules")


@require_POST
@admins_only
def rule_toggle(request: AuthedRequest, pk: int) -> HttpResponse:
    """Sets the state the button showed, rather than flipping it: a second click on the same
    button, or one from a page opened before another admin's change, changes nothing."""
    rule = get_object_or_404(RoutingRule, pk=pk)
    wanted = request.POST.get("active")
    if wanted not in ("0", "1"):
        return HttpResponseBadRequest("Say which state the rule should be in: active=0 or 1.")
    if rule.is_active != (wanted == "1"):
        rule.is_active = wanted == "1"
        with audit_change(rule, actor=request.user):
            rule.save(update_fields=["is_active", "updated_at"])
    state = "active" if rule.is_active else "inactive"
    messages.success(request, f"Rule “{rule.name}” is {state}.")
    return redirect("routing:rules")


@admins_only
def rule_delete(request: AuthedRequest, pk: int) -> HttpResponse:
    rule = get_object_or_404(RoutingRule, pk=pk)
    return _delete(request, rule, noun="Rule", back=reverse("routing:rules"), tab="rules")


@admins_only
def dry_run(request: AuthedRequest) -> HttpResponse:
    """What the active rules would do with an event, in order; nothing is written."""
    form = DryRunForm(request.POST if request.method == "POST" else None, user=request.user)
    context: dict[str, Any] = {"form": form, "recent": _recent_messages(request)}
    if request.method == "POST" and form.is_valid():
        facts = form.facts()
        catalog = Catalog.load()
        run = rules_dry_run(facts=facts, catalog=catalog)
        results = [
            {"rule": row.rule, "summary": row.summary, "state": row.state, "by": row.by}
            for row in run.rows
        ]
        context["results"] = results
        context["facts"] = _facts_shown(facts, catalog)
        context["outcome"] = {
            "matched": run.matched,
            "priority": PRIORITIES.get(run.priority, str(run.priority)),
            "tags": [catalog.tags.get(t, f"#{t}") for t in run.added_tags],
        }
    return _page(request, "dry_run.html", "dry_run", **context)


def _facts_shown(facts: Facts, catalog: Catalog) -> list[tuple[str, str]]:
    def maybe(value: Any) -> str:
        return NONE_SHOWN if value is None or value == "" else str(value)

    tags = ", ".join(catalog.tags.get(t, f"#{t}") for t in sorted(facts.tag_ids))
    return [
        ("Event", EVENTS.get(facts.event, facts.event)),
        ("Channel", catalog.channels.get(facts.channel_id, NONE_SHOWN)),
        ("Platform", dict(Platform.choices).get(facts.platform, maybe(facts.platform))),
        ("Message kind", KINDS.get(facts.kind, maybe(facts.kind))),
        ("Sentiment", NONE_SHOWN if facts.sentiment is None else f"{facts.sentiment:.2f}"),
        ("Language", maybe(facts.language)),
        ("VIP contact", "yes" if facts.is_vip else "no"),
        ("Followers", maybe(facts.followers)),
        ("Open escalation", "yes" if facts.has_open_escalation else "no"),
        ("Tags", tags or NONE_SHOWN),
        ("Priority", PRIORITIES.get(facts.priority, str(facts.priority))),
        ("At", timezone.localtime(facts.at).strftime("%Y-%m-%d %H:%M %Z")),
    ]


def _recent_messages(request: AuthedRequest) -> list[Message]:
    return list(
        messages_visible_to(user=request.user)
        .filter(direction=Direction.IN)
        .order_by("-created_at", "-id")
        .only("id", "body")[:30]
    )


# --- SLA policies ------------------------------------------------------------------------


@admins_only
def sla_list(request: AuthedRequest) -> HttpResponse:
    policies = [
        (
            policy,
            [
                minutes_display(policy.first_response_minutes),
                minutes_display(policy.next_response_minutes),
                minutes_display(policy.resolution_minutes),
            ],
        )
        for policy in SlaPolicy.objects.select_related("channel", "calendar")
    ]
    return _page(request, "sla_list.html", "sla", policies=policies)


@admins_only
def sla_edit(request: AuthedRequest, pk: int | None = None) -> HttpResponse:
    policy = get_object_or_404(SlaPolicy, pk=pk) if pk else SlaPolicy()
    form = SlaPolicyForm(request.POST or None, instance=policy)
    if request.method == "POST" and form.is_valid():
        with audit_change(policy, actor=request.user):
            policy = form.save()
        messages.success(request, f"SLA policy “{policy.name}” saved.")
        return redirect("routing:sla")
    return _page(request, "sla_form.html", "sla", form=form, policy=policy)


@admins_only
def sla_delete(request: AuthedRequest, pk: int) -> HttpResponse:
    policy = get_object_or_404(SlaPolicy, pk=pk)
    return _delete(request, policy, noun="SLA policy", back=reverse("routing:sla"), tab="sla")


# --- Business hours ------------------------------------------------------------------------


@admins_only
def calendar_list(request: AuthedRequest) -> HttpResponse:
    calendars = [
        (calendar, weekly_summary(calendar.weekly_hours))
        for calendar in BusinessCalendar.objects.annotate(holiday_count=Count("holidays"))
    ]
    return _page(request, "calendar_list.html", "hours", calendars=calendars)


@admins_only
def calendar_edit(request: AuthedRequest, pk: int | None = None) -> HttpResponse:
    calendar = get_object_or_404(BusinessCalendar, pk=pk) if pk else BusinessCalendar()
    form = CalendarForm(request.POST if request.method == "POST" else None, instance=calendar)
    if request.method == "POST" and form.is_valid():
        with audit_change(calendar, actor=request.user, related=["holidays"]):
            calendar = form.save()
        messages.success(request, f"Business hours “{calendar.name}” saved.")
        return redirect("routing:hours")
    return _page(request, "calendar_form.html", "hours", form=form, calendar=calendar)


@admins_only
def calendar_delete(request: AuthedRequest, pk: int) -> HttpResponse:
    calendar = get_object_or_404(BusinessCalendar, pk=pk)
    return _delete(
        request,
        calendar,
        noun="Business hours",
        back=reverse("routing:hours"),
        tab="hours",
        warnings=[*_rules_warning("calendar", calendar.pk), *_default_hours_warning(calendar)],
    )


# --- Departments ---------------------------------------------------------------------------


@admins_only
def department_list(request: AuthedRequest) -> HttpResponse:
    departments = Department.objects.select_related("team", "endpoint")
    return _page(request, "department_list.html", "departments", departments=departments)


@admins_only
def department_edit(request: AuthedRequest, pk: int | None = None) -> HttpResponse:
    department = get_object_or_404(Department, pk=pk) if pk else Department()
    form = DepartmentForm(request.POST or None, instance=department)
    if request.method == "POST" and form.is_valid():
        with audit_change(department, actor=request.user):
            department = form.save()
        messages.success(request, f"Department “{department.name}” saved.")
        return redirect("routing:departments")
    return _page(request, "department_form.html", "departments", form=form, department=department)


@admins_only
def department_delete(request: AuthedRequest, pk: int) -> HttpResponse:
    department = get_object_or_404(Department, pk=pk)
    return _delete(
        request,
        department,
        noun="Department",
        back=reverse("routing:departments"),
        tab="departments",
        warnings=_rules_warning("department", department.pk),
    )


# --- Escalation paths ----------------------------------------------------------------------


@admins_only
def path_list(request: AuthedRequest) -> HttpResponse:
    paths = EscalationPath.objects.prefetch_related(
        Prefetch("levels", queryset=EscalationLevel.objects.select_related("department", "user"))
    )
    return _page(request, "path_list.html", "paths", paths=paths)


@admins_only
def path_edit(request: AuthedRequest, pk: int | None = None) -> HttpResponse:
    path = get_object_or_404(EscalationPath, pk=pk) if pk else EscalationPath()
    form = EscalationPathForm(
        request.POST if request.method == "POST" else None, instance=path, catalog=Catalog.load()
    )
    if request.method == "POST" and form.is_valid():
        with audit_change(path, actor=request.user, related=["levels"]):
            path = form.save()
        messages.success(request, f"Escalation path “{path.name}” saved.")
        return redirect("routing:paths")
    return _page(request, "path_form.html", "paths", form=form, path=path)


@admins_only
def path_delete(request: AuthedRequest, pk: int) -> HttpResponse:
    path = get_object_or_404(EscalationPath, pk=pk)
    return _delete(
        request,
        path,
        noun="Escalation path",
        back=reverse("routing:paths"),
        tab="paths",
        warnings=_rules_warning("path", path.pk),
    )


# --- Webhook endpoints ---------------------------------------------------------------------


@admins_only
def endpoint_list(request: AuthedRequest) -> HttpResponse:
    endpoints = WebhookEndpoint.objects.all()
    return _page(request, "endpoint_list.html", "endpoints", endpoints=endpoints)


@admins_only
def endpoint_edit(request: AuthedRequest, pk: int | None = None) -> HttpResponse:
    endpoint = get_object_or_404(WebhookEndpoint, pk=pk) if pk else WebhookEndpoint()
    form = WebhookEndpointForm(request.POST or None, instance=endpoint)
    if request.method == "POST" and form.is_valid():
        with audit_change(endpoint, actor=request.user):
            endpoint = form.save()
        messages.success(request, f"Webhook endpoint “{endpoint.name}” saved.")
        return redirect("routing:endpoints")
    return _page(request, "endpoint_form.html", "endpoints", form=form, endpoint=endpoint)


@admins_only
def endpoint_delete(request: AuthedRequest, pk: int) -> HttpResponse:
    endpoint = get_object_or_404(WebhookEndpoint, pk=pk)
    return _delete(
        request,
        endpoint,
        noun="Webhook endpoint",
        back=reverse("routing:endpoints"),
        tab="endpoints",
        warnings=_rules_warning("endpoint", endpoint.pk),
    )


@admins_only
def endpoint_calls(request: AuthedRequest, pk: int) -> HttpResponse:
    """The delivery log of one endpoint: each call, its attempts and the last answer."""
    endpoint = get_object_or_404(WebhookEndpoint, pk=pk)
    calls = endpoint.calls.order_by("-created_at", "-pk")[:200]
    return _page(request, "endpoint_calls.html", "endpoints", endpoint=endpoint, calls=calls)


@require_POST
@admins_only
def webhook_call_redeliver_view(request: AuthedRequest, pk: int) -> HttpResponse:
    call = get_object_or_404(WebhookCall, pk=pk)
    webhook_call_redeliver(call=call, actor=request.user)
    messages.success(request, f"Delivery #{call.pk} is being sent again.")
    return redirect("routing:endpoint_calls", pk=call.endpoint_id)


# --- Auto-assignment -----------------------------------------------------------------------


@admins_only
def assignment(request: AuthedRequest) -> HttpResponse:
    memberships = list(
        TeamMembership.objects.filter(user__is_active=True)
        .select_related("team", "user")
        .order_by("team__name", "user__first_name", "user__username")
    )
    form = CapacityForm(request.POST if request.method == "POST" else None, memberships=memberships)
    if request.method == "POST" and form.is_valid():
        changed = form.save(actor=request.user)
        messages.success(request, f"Capacities saved ({changed} changed).")
        return redirect("routing:assignment")
    user_ids = {m.user_id for m in memberships}
    online = agents_online(user_ids=user_ids)
    load = agents_load(user_ids=user_ids)
    teams = [
        (
            team,
            [(m, field, m.user_id in online, load.get(m.user_id, 0)) for m, field in members],
        )
        for team, members in form.by_team()
    ]
    return _page(request, "assignment.html", "assignment", form=form, teams=teams)
