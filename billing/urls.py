from __future__ import annotations

from django.urls import path

from billing import views

app_name = "billing"

urlpatterns = [
    path("pricing/", views.pricing, name="pricing"),
    path("billing/", views.billing_home, name="home"),
    path("billing/subscribe/<slug:slug>/", views.subscribe, name="subscribe"),
    path("billing/success/", views.checkout_success, name="success"),
    path("billing/cancel/", views.checkout_cancel, name="cancel"),
    path("billing/status/", views.billing_status, name="status"),
    path("billing/portal/", views.portal, name="portal"),
    path("billing/seats/", views.seats, name="seats"),
    path("billing/webhook/", views.webhook, name="webhook"),
    path("billing/sandbox/checkout/<str:token>/", views.sandbox_checkout, name="sandbox-checkout"),
    path("billing/sandbox/portal/<str:token>/", views.sandbox_portal, name="sandbox-portal"),
]
