from __future__ import annotations

from django.urls import path

from inference import views

app_name = "inference"

urlpatterns = [
    path("jobs/<uuid:job_id>/stream", views.job_stream, name="job-stream"),
]
