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

from accounts.teams import seats_taken
from accounts.workspaces import Permission, allows, member_required, membership_in
from billing import sandbox
from billing.models import Plan, Subscription
from billing.selectors import entitlements_for, public_plans, quota_snapshot, subscription_latest
from billing.services import subscriptions, webhooks
from billing.tasks import sandbox_deliver
from core.errors import ApplicationError, Conflict

logger = logging.getLogger(__name__)


def pricing(request):
    membership = getattr(request, "membership", None)
    current = entitlements_for(membership.workspace).plan if membership is not None else None
    min_seats = sum(seats_taken(membership.workspace)) if membership is not None else 1
    return render(
        request, "billing/pricing.html", {"plans": public_plans(), "current_plan": current, "min_seats": min_seats}
    )


@member_required(Permission.BILLING)
def billing_home(request):
    workspace = request.membership.workspace
    entitlements = entitlements_for(workspace)
    return render(
        request,
        "billing/home.html",
        {
            "entitlements": entitlements,
            "subscription": subscription_latest(workspace),
            "ledger": quota_snapshot(workspace, entitlements=entitlements),
            "seats_taken": sum(seats_taken(workspace)),
            "plans": public_plans(),
        },
    )


@member_required(Permission.BILLING)
@require_POST
def subscribe(request, slug: str):
    plan = get_object_or_404(Plan, slug=slug, is_active=True, is_public=True)
    workspace = request.membership.workspace
    try:
        seats = subscriptions.seats_parse(request.POST.get("seats"), plan=plan, people=sum(seats_taken(workspace)))
        url = subscriptions.checkout_start(
            workspace=workspace,
            plan=plan,
            seats=seats,
            success_url=request.build_absolute_uri(reverse("billing:success")),
            cancel_url=request.build_absolute_uri(reverse("billing:cancel")),
        )
    except Conflict as conflict:
        # Never a second subscription: the portal changes the one they have.
        try:
            return redirect(
                subscriptions.portal_start(
                    workspace=workspace, return_url=request.build_absolute_uri(reverse("billing:home"))
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


@member_required(Permission.BILLING)
def checkout_success(request):
    """Shown after Checkout. It grants nothing: the plan changes when Stripe's webhook lands."""
    return render(request, "billing/success.html", {"entitlements": entitlements_for(request.membership.workspace)})


@login_required
def checkout_cancel(request):
    messages.info(request, "Checkout was cancelled: nothing was charged and your plan is unchanged.")
    return redirect("billing:pricing")


@member_required()
def billing_status(request):
    entitlements = entitlements_for(request.membership.workspace)
    subscription = entitlements.subscription
    return JsonResponse(
        {
            "plan": entitlements.plan.slug,
            "plan_name": entitlements.plan.name,
            "subscription_status": subscription.status if subscription else None,
            "active": subscription is not None,
        }
    )


@member_required(Permission.BILLING)
@require_POST
def seats(request):
    """Change the seats of a per-seat plan; refused below the people holding seats."""
    workspace = request.membership.workspace
    subscription = entitlements_for(workspace).subscription
    try:
        if subscription is None:
            raise ApplicationError("This workspace has no subscription: subscribe to the Team plan to buy seats.")
        wanted = subscriptions.seats_parse(
            request.POST.get("seats"), plan=subscription.plan, people=sum(seats_taken(workspace))
        )
        subscriptions.seats_change(
            workspace=workspace,
            seats=wanted,
            webhook_url=request.build_absolute_uri(reverse("billing:webhook")),
            actor=request.user,
        )
    except ApplicationError as error:
        messages.error(request, error.message)
        return redirect("billing:home")
    messages.success(
        request,
        f"Seats change to {wanted} asked: it applies, and added seats bring their tokens, once Stripe confirms "
        "the prorated invoice is paid.",
    )
    return redirect("billing:home")


@member_required(Permission.BILLING)
@require_POST
def portal(request):
    try:
        url = subscriptions.portal_start(
            workspace=request.membership.workspace, return_url=request.build_absolute_uri(reverse("billing:home"))
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
    membership = membership_in(request.user, data.get("workspace"))
    if membership is None or not allows(membership, Permission.BILLING):
        raise Http404
    return data


def _deliver(request, events: list[dict]) -> None:
    sandbox_deliver.delay(request.build_absolute_uri(reverse("billing:webhook")), events)


@login_required
def sandbox_checkout(request, token: str):
    data = _sandbox_data(request, token)
    plan = get_object_or_404(Plan, pk=data["plan"])
    context = {"plan": plan, "seats": data.get("seats", 1), "cancel_url": data["cancel"], "declined": False}
    if request.method == "POST":
        if request.POST.get("action") == "pay":
            _deliver(request, sandbox.checkout_paid_events(data=data, plan=plan))
            return redirect(data["success"] + "?session_id=cs_sandbox")
        context["declined"] = True
    return render(request, "billing/sandbox_checkout.html", context, status=402 if context["declined"] else 200)


@login_required
def sandbox_portal(request, token: str):
    data = _sandbox_data(request, token)
    subscription = Subscription.objects.filter(workspace_id=data["workspace"]).order_by("-created_at").first()
    plans = {p.slug: p for p in public_plans() if p.stripe_price_id}
    if request.method == "POST" and subscription is not None:
        action = request.POST.get("action", "")
        if action == "seats":
            action = f"seats:{request.POST.get('seats', '')}"
        try:
            events = sandbox.portal_events(action=action, subscription=subscription, plans=plans)
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
