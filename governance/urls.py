from django.urls import path

from governance import views

app_name = "governance"

urlpatterns = [path("", views.governance_home, name="home")]
