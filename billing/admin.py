from __future__ import annotations

from django.contrib import admin, messages

from billing.models import BillingCustomer, Plan, QuotaPeriod, Subscription, UsageRecord, WebhookEvent
from billing.services import plan_stripe_sync


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = (
        "name", "slug", "price_cents", "monthly_token_allowance", "max_new_tokens",
        "max_concurrent_jobs", "queue_priority", "api_access", "is_default", "is_public", "is_active", "order",
    )  # fmt: skip
    list_editable = ("order",)
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = ("stripe_price_id", "stripe_product_id")

    def save_model(self, request, obj, form, change) -> None:
        super().save_model(request, obj, form, change)
        # A paid plan gets its Stripe Product and Price (a new Price when the amount changes).
        try:
            plan_stripe_sync(plan=obj)
        except Exception as exc:
            self.message_user(request, f"Saved, but Stripe could not be updated: {exc}", level=messages.ERROR)


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


@admin.register(BillingCustomer)
class BillingCustomerAdmin(admin.ModelAdmin):
    list_display = ("user", "stripe_customer_id", "created_at")
    list_select_related = ("user",)
    search_fields = ("user__email", "stripe_customer_id")
    raw_id_fields = ("user",)


@admin.register(WebhookEvent)
class WebhookEventAdmin(admin.ModelAdmin):
    list_display = ("received_at", "type", "stripe_event_id", "status", "attempts")
    list_filter = ("status", "type")
    search_fields = ("stripe_event_id",)
    readonly_fields = ("stripe_event_id", "type", "stripe_created_at", "payload", "status", "error", "attempts")
