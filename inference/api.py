"""REST API v1 (DRF): InputSerializer -> service -> OutputSerializer."""

from __future__ import annotations

from datetime import timedelta

from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.workspaces import Permission, allows
from billing.selectors import entitlements_for, quota_snapshot
from core.api import JSONParser
from core.errors import ApplicationError
from inference.models import GenerationJob, JobSource, JobStatus
from inference.selectors import job_history, jobs_of, member_usage_lines, usage_by_day
from inference.services import CHAT_ROLES, job_cancel, job_submit, rate_limit_status, request_hash_of


def request_entitlements(membership):
    """The entitlements the key authentication read for this request, or fresh ones."""
    return getattr(membership, "request_entitlements", None) or entitlements_for(membership.workspace)


def api_headers(membership) -> dict[str, str]:
    """Rate-limit and quota headers (the workspace's), on every API response of a known member."""
    entitlements = request_entitlements(membership)
    quota = quota_snapshot(membership.workspace, entitlements=entitlements)
    return {
        **rate_limit_status(membership.workspace, entitlements.requests_per_minute),
        "x-quota-limit-tokens": str(quota.allowance),
        "x-quota-remaining-tokens": str(quota.remaining),
        "x-quota-reset": entitlements.period_end.isoformat(),
    }


class InkwellAPIView(APIView):
    # Bodies are JSON only, read by core.api.parse_json: bounded nesting, no NaN, no lone
    # surrogates, a clear 400 for anything else.
    parser_classes = [JSONParser]

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        # The user as authentication left it (reading request.user would authenticate again).
        user = getattr(request, "_user", None)
        membership = getattr(request._request, "membership", None)
        if user is not None and user.is_authenticated and membership is not None:
            try:
                for name, value in api_headers(membership).items():
                    response[name] = value
            except ApplicationError:
                pass
        return response


class ErrorDetailSerializer(serializers.Serializer):
    message = serializers.CharField()
    type = serializers.CharField()
    param = serializers.CharField(allow_null=True)
    code = serializers.CharField()


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


def errors(*codes: int) -> dict:
    """The documented error responses of an operation, all in the one envelope."""
    return {code: ErrorSerializer for code in (401, 403, 429, *codes)}


class StrictSerializer(serializers.Serializer):
    """Unknown fields are an error, not silence."""

    def validate(self, attrs):
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({unknown[0]: f"Unknown field {unknown[0]!r}."})
        return attrs


class NumberField(serializers.FloatField):
    """A JSON number: a string or a boolean is refused, not converted."""

    def to_internal_value(self, data):
        if isinstance(data, bool | str):
            self.fail("invalid")
        return super().to_internal_value(data)


class WholeNumberField(serializers.IntegerField):
    """A JSON integer: a string or a boolean is refused, not converted."""

    def to_internal_value(self, data):
        if isinstance(data, bool | str):
            self.fail("invalid")
        return super().to_internal_value(data)


class TextField(serializers.CharField):
    """A JSON string: a number or a boolean is refused, not converted ("model": 5 is not the model
    named "5")."""

    default_error_messages = {"not_a_string": "Must be a string."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("not_a_string")
        return super().to_internal_value(data)


class MessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=list(CHAT_ROLES))
    content = TextField(allow_blank=True, trim_whitespace=False)


class JobCreateSerializer(StrictSerializer):
    model = TextField(required=False, help_text="A model of your plan; the plan's first model if omitted.")
    prompt = TextField(required=False, allow_blank=True, trim_whitespace=False)
    messages = MessageSerializer(many=True, required=False)
    max_new_tokens = WholeNumberField(
        required=False, min_value=1, help_text="1 to your plan's cap; min(256, the cap) if omitted."
    )
    temperature = NumberField(
        required=False,
        default=1.0,
        help_text="0 to 2. 0 is greedy decoding (the most likely token each step, the same text every time); "
        "any value below 0.01 counts as 0 and is stored as 0.",
    )
    top_p = NumberField(required=False, default=1.0, help_text="0.01 to 1.")
    top_k = WholeNumberField(required=False, default=0, help_text="0 (off) to 1000.")
    repetition_penalty = NumberField(required=False, default=1.0, help_text="0.5 to 2.")
    stop = serializers.ListField(child=TextField(trim_whitespace=False), required=False, max_length=4)
    seed = WholeNumberField(
        required=False,
        allow_null=True,
        default=None,
        help_text="0 to 2^63-1: the same seed and settings, the same text.",
    )


class JobFilterSerializer(serializers.Serializer):
    q = serializers.CharField(required=False, allow_blank=True, max_length=500)
    status = serializers.ChoiceField(choices=JobStatus.values, required=False, allow_blank=True)
    model = serializers.CharField(required=False, allow_blank=True, max_length=100)
    page = serializers.IntegerField(required=False, min_value=1)


class JobSerializer(serializers.ModelSerializer):
    # The texts are sealed columns: read through the instance, which opens them.
    prompt = serializers.CharField()
    messages = serializers.JSONField(allow_null=True)
    stop = serializers.ListField(child=serializers.CharField())
    text = serializers.CharField(source="output_text")
    error = serializers.CharField(source="error_message")
    stream_url = serializers.SerializerMethodField()

    class Meta:
        model = GenerationJob
        fields = [
            "id", "status", "model", "prompt", "messages", "text", "finish_reason", "error",
            "prompt_tokens", "completion_tokens", "tokens_charged", "max_new_tokens", "temperature", "top_p",
            "top_k", "repetition_penalty", "stop", "seed", "source", "created_at", "started_at", "finished_at",
            "stream_url",
        ]  # fmt: skip

    def get_stream_url(self, job) -> str:
        return f"/api/v1/jobs/{job.pk}/stream"


class JobListCreateView(InkwellAPIView, GenericAPIView):
    serializer_class = JobSerializer

    @extend_schema(
        parameters=[
            OpenApiParameter("status", str, enum=JobStatus.values),
            OpenApiParameter("model", str),
            OpenApiParameter("q", str, description="Text in the prompt or output"),
        ],
        responses={200: JobSerializer(many=True), **errors(400, 404)},
    )
    def get(self, request):
        filters = JobFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        jobs = job_history(
            request.membership,
            query=filters.validated_data.get("q", ""),
            status=filters.validated_data.get("status", ""),
            model=filters.validated_data.get("model", ""),
        )
        page = self.paginate_queryset(jobs)
        return self.get_paginated_response(JobSerializer(page, many=True).data)

    @extend_schema(
        request=JobCreateSerializer,
        responses={201: JobSerializer, 200: JobSerializer, **errors(400, 402, 404, 409, 422, 503)},
        parameters=[OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER)],
    )
    def post(self, request):
        serializer = JobCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        if "messages" in data:
            data["messages"] = [dict(m) for m in data["messages"]]
        key = request.headers.get("Idempotency-Key", "")[:255]
        digest = request_hash_of(data) if key else ""
        # A retry with the same key gets the job its first request made (200), not a second one.
        job = job_submit(
            member=request.membership, source=JobSource.API, idempotency_key=key, request_hash=digest, **data
        )
        return Response(JobSerializer(job).data, status=status.HTTP_200_OK if job.replayed else status.HTTP_201_CREATED)


class JobDetailView(InkwellAPIView):
    @extend_schema(responses={200: JobSerializer, **errors(404)})
    def get(self, request, job_id):
        return Response(JobSerializer(get_object_or_404(jobs_of(request.membership), pk=job_id)).data)


class JobCancelView(InkwellAPIView):
    @extend_schema(request=None, responses={200: JobSerializer, **errors(404)})
    def post(self, request, job_id):
        job = job_cancel(job=get_object_or_404(jobs_of(request.membership), pk=job_id))
        return Response(JobSerializer(job).data)


class PingSerializer(serializers.Serializer):
    ok = serializers.BooleanField()


class PingView(InkwellAPIView):
    """Checks a key: authenticated, plan allows the API. Does nothing else."""

    @extend_schema(responses={200: PingSerializer, **errors()})
    def get(self, request):
        return Response({"ok": True})


class UsageDaySerializer(serializers.Serializer):
    date = serializers.DateField()
    tokens = serializers.IntegerField()


class MemberUsageSerializer(serializers.Serializer):
    email = serializers.EmailField()
    role = serializers.CharField(allow_blank=True, help_text="Blank for someone no longer a member.")
    tokens = serializers.IntegerField(help_text="Tokens charged this period.")
    jobs = serializers.IntegerField()
    monthly_token_cap = serializers.IntegerField(allow_null=True)


class UsageSerializer(serializers.Serializer):
    workspace = serializers.CharField(help_text="The workspace's slug: the pool below is its.")
    plan = serializers.CharField()
    period_start = serializers.DateTimeField()
    period_end = serializers.DateTimeField()
    allowance = serializers.IntegerField()
    used = serializers.IntegerField()
    reserved = serializers.IntegerField()
    remaining = serializers.IntegerField()
    seats = serializers.IntegerField()
    member = MemberUsageSerializer(help_text="The caller's own usage and cap this period.")
    days = UsageDaySerializer(many=True, help_text="The caller's own tokens per day this period.")
    members = MemberUsageSerializer(
        many=True, required=False, help_text="Every member's usage this period: for owners and admins only."
    )


class UsageView(InkwellAPIView):
    @extend_schema(responses={200: UsageSerializer, **errors()})
    def get(self, request):
        membership = request.membership
        workspace = membership.workspace
        entitlements = request_entitlements(membership)
        quota = quota_snapshot(workspace, entitlements=entitlements)
        end = min(entitlements.period_end, timezone.now() + timedelta(days=1))
        days = usage_by_day(workspace, user=membership.user, start=entitlements.period_start, end=end)
        members = member_usage_lines(workspace, start=entitlements.period_start, end=entitlements.period_end)
        body = {
            "workspace": workspace.slug,
            "plan": entitlements.plan.slug,
            "period_start": entitlements.period_start,
            "period_end": entitlements.period_end,
            "allowance": quota.allowance,
            "used": quota.used,
            "reserved": quota.reserved,
            "remaining": quota.remaining,
            "seats": entitlements.seats,
            "member": next(line for line in members if line["email"] == membership.user.email),
            "days": [{"date": day, "tokens": tokens} for day, tokens in days],
        }
        if allows(membership, Permission.USAGE_ALL):
            body["members"] = members
        return Response(UsageSerializer(body).data)
