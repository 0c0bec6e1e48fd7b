from django.urls import path

from governance import approval_views, audit_views, policy_views, retention_views, views

app_name = "governance"

urlpatterns = [
    path("", views.governance_home, name="home"),
    path("audit/", audit_views.audit_log, name="audit"),
    path("audit/export.csv", audit_views.audit_export, name="audit_export"),
    path("approvals/", approval_views.approvals_queue, name="approvals"),
    path("approvals/decided/", approval_views.approvals_decided, name="approvals_decided"),
    path(
        "approvals/<int:pk>/approve/", approval_views.approval_approve_view, name="approval_approve"
    ),
    path("approvals/<int:pk>/reject/", approval_views.approval_reject_view, name="approval_reject"),
    path("check/<int:pk>/", approval_views.reply_check, name="reply_check"),
    path("policies/", policy_views.policy_list, name="policies"),
    path("policies/test/", policy_views.policy_test, name="policy_test"),
    path("policies/default/", policy_views.policy_default_edit, name="policy_default"),
    path("policies/new/", policy_views.policy_new, name="policy_new"),
    path("policies/<int:pk>/", policy_views.policy_edit, name="policy_edit"),
    path("policies/<int:pk>/delete/", policy_views.policy_delete_view, name="policy_delete"),
    path("retention/", retention_views.retention_settings_view, name="retention"),
    path("retention/run/", retention_views.retention_run_view, name="retention_run"),
    path(
        "retention/channels/<int:pk>/default/",
        retention_views.retention_policy_remove_view,
        name="retention_remove",
    ),
]
