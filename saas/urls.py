from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from saas import health, views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", health.healthz, name="healthz"),
    path("privacy/", views.privacy, name="privacy"),
    path("accounts/", include("allauth.urls")),
    path("", include("accounts.urls")),
    path("", include("inference.urls")),
    path("", include("billing.urls")),
    path("", include("inference.api_urls")),
    path("admin/", admin.site.urls),
]

handler404 = "saas.views.not_found"
handler500 = "saas.views.server_error"
