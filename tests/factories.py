from __future__ import annotations

from datetime import timedelta

import factory
from allauth.account.models import EmailAddress
from django.utils import timezone

from accounts.models import User

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


class SubscriptionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "billing.Subscription"

    user = factory.SubFactory(UserFactory)
    plan = factory.SubFactory(PlanFactory)
    status = "active"
    current_period_start = factory.LazyFunction(lambda: timezone.now() - timedelta(days=3))
    current_period_end = factory.LazyFunction(lambda: timezone.now() + timedelta(days=27))
    # A subscription whose current period is paid for (tokens follow payment).
    paid_plan = factory.SelfAttribute("plan")
    paid_period_start = factory.SelfAttribute("current_period_start")
