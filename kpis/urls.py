from django.urls import path

from kpis import views

app_name = "kpis"

urlpatterns = [
    path("", views.reports, name="overview"),
    path("channels/", views.channel_report, name="channels"),
    path("teams/", views.team_report, name="teams"),
    path("agents/", views.agent_report, name="agents"),
    path("targets/", views.target_list, name="targets"),
    path("targets/new/", views.target_edit, name="target_new"),
    path("targets/<int:pk>/", views.target_edit, name="target_edit"),
    path("targets/<int:pk>/delete/", views.target_delete, name="target_delete"),
    # One address per report, so each can be linked to and guarded on its own.
    *(
        path(f"export/{report}.csv", views.export_csv, {"report": report}, name=f"export_{report}")
        for report in views.EXPORTS
    ),
]
