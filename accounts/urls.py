from __future__ import annotations

from django.urls import path

from accounts import views

urlpatterns = [
    path("account/", views.profile, name="account_profile"),
    path("account/delete/", views.delete_account, name="account_delete"),
]
