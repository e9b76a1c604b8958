from __future__ import annotations

from django.conf import settings
from django.contrib import admin, messages
from django.utils.html import format_html

from billing.models import (
    BillingCustomer,
    Plan,
    QuotaPeriod,
    QuotaTopUp,
    Subscription,
    UsageRecord,
    WebhookEvent,
    WebhookStatus,
)
from billing.services.plans import plan_stripe_sync
from billing.services.webhooks import webhook_event_replay


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = (
        "name", "slug", "price_cents", "monthly_token_allowance", "max_new_tokens",
        "max_concurrent_jobs", "queue_priority", "api_access", "retention_days", "is_default", "is_public",
        "is_active", "order",
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
    """A read-only mirror of Stripe: change subscriptions in Stripe, and they follow here."""

    list_display = (
        "workspace",
        "plan",
        "status",
        "is_comp",
        "current_period_end",
        "cancel_at_period_end",
        "stripe_link",
    )
    list_filter = ("status", "plan", "is_comp", "cancel_at_period_end")
    list_select_related = ("workspace", "plan")
    search_fields = ("workspace__slug", "workspace__name", "stripe_subscription_id", "stripe_customer_id")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="Stripe")
    def stripe_link(self, obj):
        if not obj.stripe_subscription_id:
            return "comp" if obj.is_comp else "—"
        return format_html(
            '<a href="{}/subscriptions/{}" target="_blank" rel="noopener">open</a>',
            settings.STRIPE_DASHBOARD_URL,
            obj.stripe_subscription_id,
        )


@admin.register(QuotaPeriod)
class QuotaPeriodAdmin(admin.ModelAdmin):
    list_display = ("workspace", "period_start", "period_end", "allowance", "reserved", "used")
    list_select_related = ("workspace",)
    search_fields = (
        "workspace__slug",
        "workspace__name",
    )
    raw_id_fields = ("workspace",)
    # The ledger moves only through its services (reserve, settle, grant, top-up): editing a
    # count by hand would break "reserved returns to 0". Staff grant tokens with the user's Top-up.
    readonly_fields = ("workspace", "period_start", "period_end", "allowance", "reserved", "used", "created_at")

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "workspace",
        "user",
        "model",
        "status",
        "prompt_tokens",
        "completion_tokens",
        "tokens_charged",
    )
    list_filter = ("status", "model", "plan_slug")
    list_select_related = ("workspace", "user")
    search_fields = ("user__email", "workspace__slug")
    raw_id_fields = ("user", "job", "quota_period")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # usage is billing history, written once when a job ends


@admin.register(BillingCustomer)
class BillingCustomerAdmin(admin.ModelAdmin):
    list_display = ("workspace", "stripe_customer_id", "created_at")
    list_select_related = ("workspace",)
    search_fields = ("workspace__slug", "workspace__name", "stripe_customer_id")
    raw_id_fields = ("workspace",)


@admin.register(WebhookEvent)
class WebhookEventAdmin(admin.ModelAdmin):
    list_display = ("received_at", "type", "stripe_event_id", "status", "attempts", "error")
    list_filter = ("status", "type")
    search_fields = ("stripe_event_id",)
    readonly_fields = ("stripe_event_id", "type", "stripe_created_at", "payload", "status", "error", "attempts")
    actions = ["replay"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Replay (failed events only)")
    def replay(self, request, queryset):
        for event in queryset.filter(status=WebhookStatus.FAILED):
            try:
                webhook_event_replay(event=event, actor=request.user)
            except Exception as exc:
                self.message_user(request, f"{event.stripe_event_id} failed again: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"{event.stripe_event_id} applied.")


@admin.register(QuotaTopUp)
class QuotaTopUpAdmin(admin.ModelAdmin):
    list_display = ("created_at", "workspace", "tokens", "reason", "granted_by")
    list_select_related = ("workspace", "granted_by")
    search_fields = ("workspace__slug", "workspace__name", "reason")

    def has_add_permission(self, request) -> bool:
        return False  # through the user admin's action, which writes the audit entry
