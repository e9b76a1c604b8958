from __future__ import annotations

import logging

import stripe
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core import signing
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from billing import sandbox
from billing.models import Plan, Subscription
from billing.selectors import entitlements_for, public_plans, quota_snapshot, subscription_latest
from billing.services import subscriptions, webhooks
from billing.tasks import sandbox_deliver
from core.errors import ApplicationError, Conflict

logger = logging.getLogger(__name__)


def pricing(request):
    current = entitlements_for(request.user).plan if request.user.is_authenticated else None
    return render(request, "billing/pricing.html", {"plans": public_plans(), "current_plan": current})


@login_required
def billing_home(request):
    entitlements = entitlements_for(request.user)
    return render(
        request,
        "billing/home.html",
        {
            "entitlements": entitlements,
            "subscription": subscription_latest(request.user),
            "ledger": quota_snapshot(request.user, entitlements=entitlements),
            "plans": public_plans(),
        },
    )


@login_required
@require_POST
def subscribe(request, slug: str):
    plan = get_object_or_404(Plan, slug=slug, is_active=True, is_public=True)
    try:
        url = subscriptions.checkout_start(
            user=request.user,
            plan=plan,
            success_url=request.build_absolute_uri(reverse("billing:success")),
            cancel_url=request.build_absolute_uri(reverse("billing:cancel")),
        )
    except Conflict as conflict:
        # Never a second subscription: the portal changes the one they have.
        try:
            return redirect(
                subscriptions.portal_start(
                    user=request.user, return_url=request.build_absolute_uri(reverse("billing:home"))
                )
            )
        except ApplicationError:
            # A plan granted by staff has no Stripe customer to manage.
            messages.info(
                request, f"{conflict.message} Your current plan was granted by Inkwell; contact us to change it."
            )
            return redirect("billing:home")
    except ApplicationError as error:
        messages.error(request, error.message)
        return redirect("billing:pricing")
    return redirect(url)


@login_required
def checkout_success(request):
    """Shown after Checkout. It grants nothing: the plan changes when Stripe's webhook lands."""
    return render(request, "billing/success.html", {"entitlements": entitlements_for(request.user)})


@login_required
def checkout_cancel(request):
    messages.info(request, "Checkout was cancelled: nothing was charged and your plan is unchanged.")
    return redirect("billing:pricing")


@login_required
def billing_status(request):
    entitlements = entitlements_for(request.user)
    subscription = entitlements.subscription
    return JsonResponse(
        {
            "plan": entitlements.plan.slug,
            "plan_name": entitlements.plan.name,
            "subscription_status": subscription.status if subscription else None,
            "active": subscription is not None,
        }
    )


@login_required
@require_POST
def portal(request):
    try:
        url = subscriptions.portal_start(
            user=request.user, return_url=request.build_absolute_uri(reverse("billing:home"))
        )
    except ApplicationError as error:
        messages.error(request, error.message)
        return redirect("billing:pricing")
    return redirect(url)


@csrf_exempt
@require_POST
def webhook(request):
    """Stripe's webhook endpoint. 400: bad, missing or stale signature (nothing written).
    5xx: a failure, rolled back; Stripe delivers it again. 200: applied, duplicate, or not ours."""
    try:
        webhooks.webhook_receive(payload=request.body, signature=request.headers.get("Stripe-Signature", ""))
    except webhooks.MalformedEvent as error:
        return JsonResponse({"error": f"not a Stripe event: {error}"}, status=400)
    except (ValueError, stripe.SignatureVerificationError) as error:
        return JsonResponse({"error": f"invalid webhook: {error}"}, status=400)
    except webhooks.RetryLater as error:
        return JsonResponse({"error": str(error)}, status=503)
    except Exception:
        logger.exception("webhook failed")
        return JsonResponse({"error": "the event could not be applied; it will be retried"}, status=500)
    return JsonResponse({"received": True})


# --- the sandbox (no Stripe key, local and test only) ---------------------------------------------------


def _sandbox_data(request, token: str) -> dict:
    if not settings.BILLING_SANDBOX:
        raise Http404
    try:
        data = sandbox.read_token(token)
    except signing.BadSignature:
        raise Http404 from None
    if data["user"] != request.user.pk:
        raise Http404
    return data


def _deliver(request, events: list[dict]) -> None:
    sandbox_deliver.delay(request.build_absolute_uri(reverse("billing:webhook")), events)


@login_required
def sandbox_checkout(request, token: str):
    data = _sandbox_data(request, token)
    plan = get_object_or_404(Plan, pk=data["plan"])
    context = {"plan": plan, "cancel_url": data["cancel"], "declined": False}
    if request.method == "POST":
        if request.POST.get("action") == "pay":
            _deliver(request, sandbox.checkout_paid_events(data=data, plan=plan))
            return redirect(data["success"] + "?session_id=cs_sandbox")
        context["declined"] = True
    return render(request, "billing/sandbox_checkout.html", context, status=402 if context["declined"] else 200)


@login_required
def sandbox_portal(request, token: str):
    data = _sandbox_data(request, token)
    subscription = Subscription.objects.filter(user=request.user).order_by("-created_at").first()
    plans = {p.slug: p for p in public_plans() if p.stripe_price_id}
    if request.method == "POST" and subscription is not None:
        try:
            events = sandbox.portal_events(
                action=request.POST.get("action", ""), subscription=subscription, plans=plans
            )
        except (ValueError, KeyError):
            raise Http404 from None
        _deliver(request, events)
        messages.success(request, "Done. Stripe will confirm the change in a moment.")
        return redirect(data["return"])
    return render(
        request,
        "billing/sandbox_portal.html",
        {"subscription": subscription, "plans": plans.values(), "actions": sandbox.PORTAL_ACTIONS},
    )
