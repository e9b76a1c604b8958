from __future__ import annotations

from django.urls import path

from inference import views

app_name = "inference"

urlpatterns = [
    path("generate/", views.generate, name="generate"),
    path("generate/count/", views.count_tokens, name="count-tokens"),
    path("jobs/", views.history, name="history"),
    path("jobs/<uuid:job_id>/", views.job_detail, name="job"),
    path("jobs/<uuid:job_id>/status/", views.job_status, name="job-status"),
    path("jobs/<uuid:job_id>/cancel/", views.job_cancel_view, name="job-cancel"),
    path("jobs/<uuid:job_id>/delete/", views.job_delete_view, name="job-delete"),
    path("jobs/<uuid:job_id>/download.<str:extension>", views.job_download, name="job-download"),
    path("jobs/<uuid:job_id>/stream", views.job_stream, name="job-stream"),
    path("usage/", views.usage, name="usage"),
    path("usage/export.csv", views.usage_export, name="usage-export"),
]
