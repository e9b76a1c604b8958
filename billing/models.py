from __future__ import annotations

import enum

from django.conf import settings
from django.db import models
from django.db.models import Q


class QueuePriority(models.TextChoices):
    HIGH = "gen.high", "High"
    NORMAL = "gen.normal", "Normal"
    LOW = "gen.low", "Low"


class Plan(models.Model):
    """A subscription tier. Plans are data: limits are read through billing.selectors.entitlements_for."""

    name = models.CharField(max_length=80)
    slug = models.SlugField(max_length=40, unique=True)
    price_cents = models.PositiveIntegerField(default=0, help_text="Monthly price shown to customers, in cents.")
    currency = models.CharField(max_length=3, default="usd")
    stripe_price_id = models.CharField(
        max_length=255, blank=True, help_text="Set by saving the plan (Stripe sync); blank for a free plan."
    )
    stripe_product_id = models.CharField(max_length=255, blank=True, editable=False)
    # The amount and currency the current Stripe price was created with: a change makes a new Price.
    stripe_price_cents = models.PositiveIntegerField(null=True, blank=True, editable=False)
    stripe_price_currency = models.CharField(max_length=3, blank=True, editable=False)
    monthly_token_allowance = models.PositiveBigIntegerField(help_text="Prompt + completion tokens per period.")
    max_new_tokens = models.PositiveIntegerField(help_text="Most tokens one job may generate.")
    max_prompt_tokens = models.PositiveIntegerField(help_text="Longest prompt one job may send.")
    max_concurrent_jobs = models.PositiveIntegerField(help_text="Jobs queued or running at once.")
    requests_per_minute = models.PositiveIntegerField(help_text="Generation requests per minute.")
    queue_priority = models.CharField(max_length=20, choices=QueuePriority.choices, default=QueuePriority.NORMAL)
    allowed_models = models.JSONField(
        default=list, blank=True, help_text='Model names from INFERENCE_MODELS, e.g. ["inkwell-demo"].'
    )
    api_access = models.BooleanField(default=False)
    per_seat = models.BooleanField(
        default=False,
        help_text="Priced per seat: the price and the token allowance are per seat, and workspaces buy seats.",
    )
    is_default = models.BooleanField(default=False, help_text="The plan of every user without a subscription.")
    retention_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="Erase job texts this many days after they finish (empty: keep)."
    )
    is_public = models.BooleanField(default=True)
    is_active = models.BooleanField(default=True)
    order = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["order", "price_cents"]
        constraints = [
            models.UniqueConstraint(fields=["is_default"], condition=Q(is_default=True), name="one_default_plan"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def price_display(self) -> str:
        if not self.price_cents:
            return "Free"
        symbol = {"usd": "$", "eur": "€", "gbp": "£"}.get(self.currency, self.currency.upper() + " ")
        whole, cents = divmod(self.price_cents, 100)
        return f"{symbol}{whole:,}" + (f".{cents:02d}" if cents else "")


class SubscriptionStatus(models.TextChoices):
    # Stripe's subscription statuses.
    INCOMPLETE = "incomplete"
    INCOMPLETE_EXPIRED = "incomplete_expired"
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    CANCELED = "canceled"
    UNPAID = "unpaid"
    PAUSED = "paused"

    # Sets of statuses, each named once, here. enum.nonmember keeps them out of the members (and so
    # out of the field's choices); inside the class body a name is still its value (these members
    # have no labels), and the values compare equal to the members.
    # A subscription's plan applies (past_due too, within the grace period: selectors.entitlements_for).
    ENTITLED = enum.nonmember((ACTIVE, TRIALING))
    # Entitled, or past due (a renewal whose payment failed).
    ENTITLED_OR_GRACE = enum.nonmember((ACTIVE, TRIALING, PAST_DUE))
    # Stripe's statuses of a subscription that still bills, or may: a customer holding one must not get another.
    LIVE = enum.nonmember(("active", "trialing", "past_due", "unpaid", "incomplete", "paused"))
    # Over for good: Stripe moves a subscription on from neither.
    ENDED = enum.nonmember((CANCELED, INCOMPLETE_EXPIRED))


class BillingCustomer(models.Model):
    """The workspace's Stripe customer: created once, reused for every Checkout and Portal session."""

    workspace = models.OneToOneField("accounts.Workspace", on_delete=models.CASCADE, related_name="billing_customer")
    stripe_customer_id = models.CharField(max_length=255, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.stripe_customer_id


class Subscription(models.Model):
    """A workspace's paid plan: a mirror of Stripe's subscription object, recomputed from it on every
    event (never incremented), so duplicate, late or out-of-order events converge."""

    workspace = models.ForeignKey("accounts.Workspace", on_delete=models.CASCADE, related_name="subscriptions")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="subscriptions")
    status = models.CharField(max_length=32, choices=SubscriptionStatus.choices)
    # Seats bought (Stripe's item quantity); a per-seat plan's pool is its allowance x paid_seats.
    seats = models.PositiveIntegerField(default=1)
    current_period_start = models.DateTimeField()
    current_period_end = models.DateTimeField()
    cancel_at_period_end = models.BooleanField(default=False)
    stripe_subscription_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    # Granted by staff without Stripe (partners, support): no Stripe object, no revenue.
    is_comp = models.BooleanField(default=False)
    stripe_customer_id = models.CharField(max_length=255, blank=True)
    stripe_price_id = models.CharField(max_length=255, blank=True)
    # Stripe's time of the newest state applied: an older event's object is ignored.
    stripe_synced_at = models.DateTimeField(null=True, blank=True)
    past_due_since = models.DateTimeField(null=True, blank=True)
    payment_failed_at = models.DateTimeField(null=True, blank=True)
    # Tokens follow payment: what the newest paid invoice paid for. Its plan sets the limits and
    # the allowance (an upgrade counts once its invoice is paid), and a period is granted its
    # allowance only once paid (paid_period_start reaches current_period_start).
    paid_plan = models.ForeignKey(
        Plan, on_delete=models.PROTECT, null=True, blank=True, related_name="+", editable=False
    )
    paid_period_start = models.DateTimeField(null=True, blank=True, editable=False)
    paid_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The seats the newest paid invoice paid for: more seats grant tokens once their invoice is paid.
    paid_seats = models.PositiveIntegerField(null=True, blank=True, editable=False)
    canceled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["workspace", "status"])]

    def __str__(self) -> str:
        return f"{self.workspace} on {self.plan} ({self.status})"


class WebhookStatus(models.TextChoices):
    PROCESSED = "processed"
    IGNORED = "ignored"
    FAILED = "failed"


class WebhookEvent(models.Model):
    """Every Stripe event received, once: the unique id makes a duplicate delivery do nothing."""

    stripe_event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100, db_index=True)
    stripe_created_at = models.DateTimeField()
    payload = models.JSONField()
    status = models.CharField(max_length=12, choices=WebhookStatus.choices)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=1)
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    # When the payload's personal fields (names, emails, addresses) were erased: after
    # BILLING_EVENT_RETENTION_DAYS, or at once when the customer's account is deleted.
    personal_data_erased_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.type} {self.stripe_event_id} ({self.status})"


class QuotaPeriod(models.Model):
    """The ledger of one workspace's tokens in one billing period (the pool its members share).

    ``reserved`` holds what queued and running jobs may still spend; ``used`` what finished jobs
    spent. A reservation only succeeds while ``used + reserved + tokens <= allowance``.
    """

    workspace = models.ForeignKey("accounts.Workspace", on_delete=models.CASCADE, related_name="quota_periods")
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    allowance = models.BigIntegerField()
    reserved = models.BigIntegerField(default=0)
    used = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-period_start"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "period_start"], name="one_quota_period_per_start"),
            models.CheckConstraint(condition=Q(reserved__gte=0), name="quota_reserved_not_negative"),
            models.CheckConstraint(condition=Q(used__gte=0), name="quota_used_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.workspace} {self.period_start:%Y-%m-%d}: {self.used}+{self.reserved}/{self.allowance}"

    @property
    def remaining(self) -> int:
        return max(0, self.allowance - self.used - self.reserved)


class QuotaTopUp(models.Model):
    """Extra tokens granted by staff for one period, with the reason; applied once, on creation."""

    workspace = models.ForeignKey("accounts.Workspace", on_delete=models.CASCADE, related_name="top_ups")
    quota_period = models.ForeignKey(QuotaPeriod, on_delete=models.CASCADE, related_name="top_ups")
    tokens = models.PositiveBigIntegerField()
    reason = models.CharField(max_length=300)
    granted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"+{self.tokens} for {self.workspace}"


class MemberQuota(models.Model):
    """One member's share of a workspace's period: the sub-ledger their monthly cap is checked
    against. Written only while the period's row is locked, in the same transaction as the pool."""

    quota_period = models.ForeignKey(QuotaPeriod, on_delete=models.CASCADE, related_name="member_quotas")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="member_quotas")
    reserved = models.BigIntegerField(default=0)
    used = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["quota_period", "user"], name="one_member_quota_per_period"),
            models.CheckConstraint(condition=Q(reserved__gte=0), name="member_quota_reserved_not_negative"),
            models.CheckConstraint(condition=Q(used__gte=0), name="member_quota_used_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.quota_period}: {self.used}+{self.reserved}"


class UsageRecord(models.Model):
    """What one finished job cost: the source of usage charts, exports and business numbers."""

    # The member who ran the job (none once their account is deleted: a team keeps its numbers),
    # and the workspace whose pool paid for it.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="usage_records"
    )
    workspace = models.ForeignKey("accounts.Workspace", on_delete=models.CASCADE, related_name="usage_records")
    job = models.OneToOneField("inference.GenerationJob", on_delete=models.SET_NULL, null=True, related_name="usage")
    quota_period = models.ForeignKey(QuotaPeriod, on_delete=models.CASCADE, related_name="usage_records")
    plan_slug = models.CharField(max_length=40)
    model = models.CharField(max_length=100)
    status = models.CharField(max_length=20)
    prompt_tokens = models.PositiveIntegerField()
    completion_tokens = models.PositiveIntegerField()
    tokens_charged = models.PositiveIntegerField()
    queue_wait_ms = models.PositiveBigIntegerField(default=0)
    run_ms = models.PositiveBigIntegerField(default=0)
    worker = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "created_at"]), models.Index(fields=["workspace", "created_at"])]

    def __str__(self) -> str:
        return f"{self.model}: {self.tokens_charged} tokens"
