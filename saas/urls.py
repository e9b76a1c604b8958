from __future__ import annotations

from allauth.account.decorators import secure_admin_login
from django.contrib import admin
from django.urls import include, path

from saas import health, views

# The admin signs in through allauth (its rate limits and two-factor step), never with its own form.
admin.site.login = secure_admin_login(admin.site.login)

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("privacy/", views.privacy, name="privacy"),
    path("account/delete/", views.delete_account, name="account_delete"),
    path("accounts/", include("allauth.urls")),
    path("", include("accounts.urls")),
    path("", include("inference.urls")),
    path("", include("billing.urls")),
    path("", include("staff.urls")),
    path("", include("inference.api_urls")),
    path("admin/", admin.site.urls),
]

handler404 = "saas.views.not_found"
handler500 = "saas.views.server_error"
