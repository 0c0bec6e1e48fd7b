from django.urls import path

from conversations import settings_views as views

app_name = "routing"

urlpatterns = [
    path("", views.rule_list, name="rules"),
    path("rules/new/", views.rule_edit, name="rule_new"),
    path("rules/<int:pk>/", views.rule_edit, name="rule_edit"),
    path("rules/<int:pk>/move/", views.rule_move, name="rule_move"),
    path("rules/<int:pk>/toggle/", views.rule_toggle, name="rule_toggle"),
    path("rules/<int:pk>/delete/", views.rule_delete, name="rule_delete"),
    path("dry-run/", views.dry_run, name="dry_run"),
    path("sla/", views.sla_list, name="sla"),
    path("sla/new/", views.sla_edit, name="sla_new"),
    path("sla/<int:pk>/", views.sla_edit, name="sla_edit"),
    path("sla/<int:pk>/delete/", views.sla_delete, name="sla_delete"),
    path("hours/", views.calendar_list, name="hours"),
    path("hours/new/", views.calendar_edit, name="hours_new"),
    path("hours/<int:pk>/", views.calendar_edit, name="hours_edit"),
    path("hours/<int:pk>/delete/", views.calendar_delete, name="hours_delete"),
    path("departments/", views.department_list, name="departments"),
    path("departments/new/", views.department_edit, name="department_new"),
    path("departments/<int:pk>/", views.department_edit, name="department_edit"),
    path("departments/<int:pk>/delete/", views.department_delete, name="department_delete"),
    path("paths/", views.path_list, name="paths"),
    path("paths/new/", views.path_edit, name="path_new"),
    path("paths/<int:pk>/", views.path_edit, name="path_edit"),
    path("paths/<int:pk>/delete/", views.path_delete, name="path_delete"),
    path("endpoints/", views.endpoint_list, name="endpoints"),
    path("endpoints/new/", views.endpoint_edit, name="endpoint_new"),
    path("endpoints/<int:pk>/", views.endpoint_edit, name="endpoint_edit"),
    path("endpoints/<int:pk>/delete/", views.endpoint_delete, name="endpoint_delete"),
    path("endpoints/<int:pk>/calls/", views.endpoint_calls, name="endpoint_calls"),
    path("calls/<int:pk>/redeliver/", views.webhook_call_redeliver_view, name="call_redeliver"),
    path("assignment/", views.assignment, name="assignment"),
]
