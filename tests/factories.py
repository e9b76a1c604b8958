from __future__ import annotations

from datetime import timedelta

import factory
from allauth.account.models import EmailAddress
from django.utils import timezone

from accounts.apikeys import api_key_create
from accounts.models import User
from accounts.workspaces import workspace_personal

PASSWORD = "correct-horse-battery-staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def verified(obj, create, extracted, **kwargs):
        obj.save()
        if create and extracted is not False:
            EmailAddress.objects.create(user=obj, email=obj.email, verified=True, primary=True)


class PlanFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "billing.Plan"
        django_get_or_create = ("slug",)

    name = factory.Sequence(lambda n: f"Plan {n}")
    slug = factory.Sequence(lambda n: f"plan-{n}")
    monthly_token_allowance = 100_000
    max_new_tokens = 1000
    max_prompt_tokens = 512
    max_concurrent_jobs = 100
    requests_per_minute = 1000
    queue_priority = "gen.normal"
    allowed_models = factory.LazyFunction(lambda: ["inkwell-tiny"])
    api_access = True
    is_default = False


def _personal(obj):
    """The workspace a factory row belongs to: its ``user``'s personal one (a new user's when none)."""
    return workspace_personal(obj.user or UserFactory())


class SubscriptionFactory(factory.django.DjangoModelFactory):
    """A workspace's subscription: ``SubscriptionFactory(user=u)`` puts it in u's personal workspace."""

    class Meta:
        model = "billing.Subscription"

    class Params:
        user = None

    workspace = factory.LazyAttribute(_personal)
    plan = factory.SubFactory(PlanFactory)
    status = "active"
    current_period_start = factory.LazyFunction(lambda: timezone.now() - timedelta(days=3))
    current_period_end = factory.LazyFunction(lambda: timezone.now() + timedelta(days=27))
    # A subscription whose current period is paid for (tokens follow payment).
    paid_plan = factory.SelfAttribute("plan")
    paid_period_start = factory.SelfAttribute("current_period_start")


class QuotaPeriodFactory(factory.django.DjangoModelFactory):
    """A ledger period: this calendar month by default, nothing used or reserved."""

    class Meta:
        model = "billing.QuotaPeriod"
        django_get_or_create = ("workspace", "period_start")

    class Params:
        user = None

    workspace = factory.LazyAttribute(_personal)
    period_start = factory.LazyFunction(
        lambda: timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    )
    period_end = factory.LazyAttribute(lambda period: period.period_start + timedelta(days=31))
    allowance = 100_000


class JobFactory(factory.django.DjangoModelFactory):
    """A job row in any state, written directly (no reservation made): for pages, numbers and
    sweeps that need jobs as they are found in the database. A test of submitting goes through
    ``job_submit``."""

    class Meta:
        model = "inference.GenerationJob"

    user = factory.SubFactory(UserFactory)
    workspace = factory.LazyAttribute(_personal)
    model = "inkwell-tiny"
    prompt = "Once upon a time"
    max_new_tokens = 16
    quota_period = factory.SubFactory(QuotaPeriodFactory, workspace=factory.SelfAttribute("..workspace"))
    tokens_reserved = factory.LazyAttribute(lambda job: job.prompt_tokens + job.max_new_tokens)
    prompt_tokens = 4
    queue = "gen.normal"
    plan_slug = "free"

    class Params:
        # JobFactory(finished=True): a job that ran and succeeded, with its text and charge.
        finished = factory.Trait(
            status="succeeded",
            finish_reason="stop",
            output_text=" there was a tiny model.",
            completion_tokens=6,
            tokens_reserved=0,
            tokens_charged=factory.LazyAttribute(lambda job: job.prompt_tokens + job.completion_tokens),
            started_at=factory.LazyFunction(lambda: timezone.now() - timedelta(seconds=2)),
            finished_at=factory.LazyFunction(timezone.now),
        )


class ApiKeyFactory(factory.django.DjangoModelFactory):
    """An API key made the way its owner makes one (``api_key_create``); the full key, shown to
    its owner once, is on ``.raw``."""

    class Meta:
        model = "accounts.ApiKey"

    user = factory.SubFactory(UserFactory)
    name = "tests"
    scope = "write"

    @classmethod
    def _create(cls, model_class, *, user, name, scope, workspace=None, **kwargs):
        workspace = workspace or workspace_personal(user)
        key, raw = api_key_create(user=user, workspace=workspace, name=name, scope=scope, **kwargs)
        key.raw = raw
        return key
