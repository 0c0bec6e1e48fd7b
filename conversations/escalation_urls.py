from django.urls import path

from conversations import escalation_views as views

app_name = "escalations"

urlpatterns = [
    path("<int:pk>/escalate/", views.conversation_escalate, name="escalate"),
    path("<int:pk>/raise/", views.escalation_raise_view, name="raise"),
    path("<int:pk>/withdraw/", views.escalation_withdraw_view, name="withdraw"),
    path("<int:pk>/answer/", views.escalation_answer_view, name="answer"),
    path("answer/<str:token>/", views.escalation_answer_link, name="answer_link"),
]
