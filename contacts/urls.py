from django.urls import path

from contacts import views

app_name = "contacts"

urlpatterns = [
    path("", views.contact_list_view, name="list"),
    path("new/", views.contact_create_view, name="create"),
    path("export.csv", views.contact_export, name="export"),
    path("imports/", views.contact_import_view, name="import"),
    path("imports/<int:pk>/", views.contact_import_detail, name="import_detail"),
    path("imports/<int:pk>/progress/", views.contact_import_progress, name="import_progress"),
    path("<int:pk>/", views.contact_detail, name="detail"),
    path("<int:pk>/edit/", views.contact_edit, name="edit"),
    path("<int:pk>/merge/", views.contact_merge_view, name="merge"),
    path("<int:pk>/export-data/", views.contact_data_export_view, name="export_data"),
    path("<int:pk>/erase/", views.contact_erase_view, name="erase"),
    path("<int:pk>/erase/confirm/", views.contact_erase_confirm_view, name="erase_confirm"),
    path("merges/<int:pk>/undo/", views.contact_merge_undo_view, name="merge_undo"),
    path("identities/<int:pk>/move/", views.identity_move_view, name="identity_move"),
    path(
        "suggestions/<int:pk>/dismiss/",
        views.merge_suggestion_dismiss_view,
        name="suggestion_dismiss",
    ),
]
