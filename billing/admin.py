from __future__ import annotations

from django.contrib import admin

from billing.models import Plan, QuotaPeriod, Subscription, UsageRecord


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = (
        "name", "slug", "price_cents", "monthly_token_allowance", "max_new_tokens",
        "max_concurrent_jobs", "queue_priority", "api_access", "is_default", "is_public", "is_active", "order",
    )  # fmt: skip
    list_editable = ("order",)
    prepopulated_fields = {"slug": ("name",)}


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = ("user", "plan", "status", "current_period_end", "cancel_at_period_end")
    list_filter = ("status", "plan")
    list_select_related = ("user", "plan")
    search_fields = ("user__email", "stripe_subscription_id")
    raw_id_fields = ("user",)


@admin.register(QuotaPeriod)
class QuotaPeriodAdmin(admin.ModelAdmin):
    list_display = ("user", "period_start", "period_end", "allowance", "reserved", "used")
    list_select_related = ("user",)
    search_fields = ("user__email",)
    raw_id_fields = ("user",)


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = ("created_at", "user", "model", "status", "prompt_tokens", "completion_tokens", "tokens_charged")
    list_filter = ("status", "model", "plan_slug")
    list_select_related = ("user",)
    search_fields = ("user__email",)
    raw_id_fields = ("user", "job", "quota_period")
