from __future__ import annotations

from django.urls import path

from accounts import views

urlpatterns = [
    path("account/", views.profile, name="account_profile"),
    path("account/api/", views.api_keys, name="account_api_keys"),
    path("account/api/<int:key_id>/revoke/", views.api_key_revoke_view, name="account_api_key_revoke"),
]
