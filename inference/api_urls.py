from __future__ import annotations

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from inference import api, openai_api

urlpatterns = [
    path("api/v1/jobs", api.JobListCreateView.as_view(), name="api-jobs"),
    path("api/v1/jobs/<uuid:job_id>", api.JobDetailView.as_view(), name="api-job"),
    path("api/v1/jobs/<uuid:job_id>/cancel", api.JobCancelView.as_view(), name="api-job-cancel"),
    path("api/v1/jobs/<uuid:job_id>/stream", openai_api.api_job_stream, name="api-job-stream"),
    path("api/v1/usage", api.UsageView.as_view(), name="api-usage"),
    path("api/v1/ping", api.PingView.as_view(), name="api-ping"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("v1/models", openai_api.models, name="openai-models"),
    path("v1/completions", openai_api.completions, name="openai-completions"),
    path("v1/chat/completions", openai_api.chat_completions, name="openai-chat-completions"),
]
