from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.urls import include, path
from django.views.generic import RedirectView

from governance import api_token_views, security_views
from scrm.api_urls import api_patterns
from scrm.health import healthz

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="conversations:inbox"), name="home"),
    path("healthz", healthz, name="healthz"),
    path(
        "accounts/login/",
        login_not_required(auth_views.LoginView.as_view(redirect_authenticated_user=True)),
        name="login",
    ),
    # Signed in by password, held here until the second factor is given (TwoFactorMiddleware).
    path("accounts/login/verify/", security_views.two_factor_verify, name="two_factor_verify"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/security/", security_views.security_page, name="security"),
    path(
        "accounts/security/two-factor/enable/",
        security_views.two_factor_enable,
        name="two_factor_enable",
    ),
    path(
        "accounts/security/two-factor/disable/",
        security_views.two_factor_disable,
        name="two_factor_disable",
    ),
    path(
        "accounts/security/recovery-codes/",
        security_views.recovery_codes_regenerate,
        name="recovery_codes",
    ),
    path("accounts/security/policy/", security_views.security_policy, name="security_policy"),
    path("accounts/api-tokens/", api_token_views.api_tokens, name="api_tokens"),
    path(
        "accounts/api-tokens/<int:pk>/revoke/",
        api_token_views.api_token_revoke_view,
        name="api_token_revoke",
    ),
    path(
        "accounts/password/",
        auth_views.PasswordChangeView.as_view(),
        name="password_change",
    ),
    path(
        "accounts/password/done/",
        auth_views.PasswordChangeDoneView.as_view(),
        name="password_change_done",
    ),
    path("inbox/", include("conversations.urls")),
    path("escalations/", include("conversations.escalation_urls")),
    path("contacts/", include("contacts.urls")),
    path("reports/", include("kpis.urls")),
    path("governance/", include("governance.urls")),
    path("channels/", include("channels_ingest.urls")),
    path("routing/", include("conversations.settings_urls")),
    path("webhooks/", include("channels_ingest.webhook_urls")),
    path("api/", include(api_patterns)),
    path("admin/", admin.site.urls),
]
