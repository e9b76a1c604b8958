"""Plans, users and API keys for the chaos harness, written into its private database.

Run by the harness in a child process whose DATABASE_URL is the private cluster:
    python -m tests.chaos.setup_data USERS_PER_PLAN
Prints one JSON line: [{"email", "plan", "queue", "user_id", "key"}, ...].
"""

from __future__ import annotations

import json
import sys

PLANS = (
    # slug, queue: one plan per priority, so gen.high, gen.normal and gen.low all carry jobs.
    ("chaos-high", "gen.high"),
    ("chaos-normal", "gen.normal"),
    ("chaos-low", "gen.low"),
)


def main(users_per_plan: int) -> None:
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from accounts.apikeys import api_key_create
    from accounts.models import User
    from accounts.workspaces import workspace_personal
    from billing.models import Plan
    from billing.services.subscriptions import plan_comp

    call_command("seed", verbosity=0)  # the default (Free) plan every user falls back to
    accounts = []
    for slug, queue in PLANS:
        # Generous limits: the harness measures faults, not the plans' limits (clients still
        # treat a 429 as "try again").
        plan, _ = Plan.objects.update_or_create(
            slug=slug,
            defaults={
                "name": slug.replace("-", " ").title(),
                "price_cents": 0,
                "monthly_token_allowance": 10**12,
                "max_new_tokens": 256,
                "max_prompt_tokens": 512,
                "max_concurrent_jobs": 100_000,
                "requests_per_minute": 1_000_000,
                "queue_priority": queue,
                "allowed_models": list(settings.INFERENCE_MODELS),
                "api_access": True,
                "is_public": False,
            },
        )
        for index in range(users_per_plan):
            email = f"{slug}-{index}@chaos.local"
            user = User.objects.filter(email=email).first()
            if user is None:
                user = User.objects.create_user(email=email, password=None)
                plan_comp(workspace=workspace_personal(user), plan=plan, days=30)
            _, raw = api_key_create(user=user, workspace=workspace_personal(user), name="chaos")
            accounts.append({"email": email, "plan": slug, "queue": queue, "user_id": user.pk, "key": raw})
    print(json.dumps(accounts))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
