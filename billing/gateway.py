"""Where customers pay: Stripe, or the sandbox that stands in for it when no Stripe key is set.
``billing_gateway()`` is the one place that chooses, from ``settings.BILLING_SANDBOX``; the services
ask the gateway and never check which one they have. From the webhook on, both look the same (the sandbox sends
Stripe-shaped events to the same endpoint)."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Protocol

import stripe as stripe_library
from django.conf import settings
from django.utils import timezone

from billing import sandbox, stripe_client
from billing.models import Plan, SubscriptionStatus
from billing.tasks import sandbox_deliver
from core.errors import ApplicationError

logger = logging.getLogger(__name__)
stripe_errors = stripe_library.StripeError

CHECKOUT_EXPIRES_SECONDS = 30 * 60  # Stripe's shortest; an abandoned session stops being payable soon
PORTAL_CHECK_SECONDS = 600
_portal_checked: dict[str, float] = {}


class BillingGateway(Protocol):
    """What the billing services ask of the payment provider. Checkout, the Portal and closing
    turn the provider's refusal or failure into ApplicationError (the customer is told); the
    others let it through (a webhook answers 5xx and is retried, the admin shows it)."""

    def customer_create(self, *, workspace, email: str) -> str:
        """A new customer for ``workspace``, billed to ``email`` (its owner's); returns its id."""
        ...

    def subscription_live_exists(self, *, customer_id: str) -> bool:
        """Whether the provider (not only the local mirror) shows the customer a subscription that
        bills or may bill. Asked before a Checkout."""
        ...

    def checkout_session_start(
        self, *, workspace, plan: Plan, seats: int, customer_id: str, success_url: str, cancel_url: str
    ) -> str:
        """A Checkout session for ``seats`` of ``plan``; returns the URL to send the user to."""
        ...

    def subscription_seats_set(self, *, subscription, seats: int, webhook_url: str) -> None:
        """Change the seats of a live subscription, invoiced at once (more seats grant their tokens
        when that invoice is paid; the webhook brings the change back). ``webhook_url`` is for the
        sandbox, which plays Stripe and sends the events itself."""
        ...

    def portal_session_start(self, *, workspace, customer_id: str, return_url: str) -> str:
        """A Customer Portal session; returns the URL to send the user to."""
        ...

    def subscription_cancel_with_refund(self, *, stripe_subscription: dict) -> int:
        """Cancel a duplicate subscription now and refund its unused time; returns the cents refunded."""
        ...

    def customer_close(self, *, customer_id: str) -> None:
        """Cancel every subscription of the customer and delete the customer with its cards."""
        ...

    def plan_price_sync(self, *, plan: Plan) -> None:
        """Give a paid plan its product and price at the provider: sets the plan's ``stripe_*``
        fields in memory, the caller saves them."""
        ...


def billing_gateway() -> BillingGateway:
    """The configured gateway: the sandbox when there is no Stripe key (local and test), else Stripe.
    Read at each call, not at import, so a test's settings apply."""
    if settings.BILLING_SANDBOX:
        return SandboxGateway()
    return StripeGateway()


class SandboxGateway:
    """No Stripe account: ids are made up here, and Checkout and the Portal are Inkwell's own pages
    (billing.sandbox), which send Stripe-shaped events to the webhook."""

    def customer_create(self, *, workspace, email: str) -> str:
        return sandbox.customer_id(workspace)

    def subscription_live_exists(self, *, customer_id: str) -> bool:
        return False  # no Stripe account to ask: the local mirror is the whole truth

    def checkout_session_start(
        self, *, workspace, plan: Plan, seats: int, customer_id: str, success_url: str, cancel_url: str
    ) -> str:
        return sandbox.checkout_url(
            workspace=workspace,
            plan=plan,
            seats=seats,
            customer_id=customer_id,
            success_url=success_url,
            cancel_url=cancel_url,
        )

    def subscription_seats_set(self, *, subscription, seats: int, webhook_url: str) -> None:
        events = sandbox.portal_events(action=f"seats:{seats}", subscription=subscription, plans={})
        sandbox_deliver.delay(webhook_url, events)

    def portal_session_start(self, *, workspace, customer_id: str, return_url: str) -> str:
        return sandbox.portal_url(workspace=workspace, return_url=return_url)

    def subscription_cancel_with_refund(self, *, stripe_subscription: dict) -> int:
        return 0  # nothing was paid

    def customer_close(self, *, customer_id: str) -> None:
        return None  # nothing is held outside our database

    def plan_price_sync(self, *, plan: Plan) -> None:
        plan.stripe_price_id = sandbox.price_id(plan)
        plan.stripe_price_cents, plan.stripe_price_currency = plan.price_cents, plan.currency


def _stripe_unavailable(what: str, error: stripe_library.StripeError) -> ApplicationError:
    logger.warning("Stripe refused or failed %s: %s", what, error)
    return ApplicationError(
        f"Our payment provider could not {what} just now ({error.user_message or 'no details'}). "
        "Nothing was charged; please try again in a minute.",
        code="payment_provider_error",
        status_code=502,
    )


def portal_configuration_problem(client) -> str | None:
    """Why the Customer Portal's default configuration would let tokens go unpaid, or None.

    Plan changes must be invoiced at once (``proration_behavior=always_invoice``): Inkwell raises
    an allowance when the upgrade's invoice is paid, so a change that is only prorated onto the
    next invoice would leave the customer paying for Team and getting Pro until the renewal, and
    one with no proration would never be paid for."""
    configurations = client.v1.billing_portal.configurations.list(params={"is_default": True, "limit": 1})
    if not configurations.data:
        return "Stripe has no default Customer Portal configuration"
    configuration = configurations.data[0].to_dict()
    update = (configuration.get("features") or {}).get("subscription_update") or {}
    if update.get("enabled") and update.get("proration_behavior") != "always_invoice":
        return (
            f"the Customer Portal's plan changes use proration_behavior={update.get('proration_behavior')!r}; "
            "set it to 'always_invoice' (Settings > Billing > Customer portal > Subscriptions: "
            "'Prorate charges and credits' and 'Invoice immediately')"
        )
    return None


def _portal_check(client) -> None:
    """Refuse to open a Portal whose settings would grant unpaid tokens; checked every ten minutes."""
    if time.monotonic() - _portal_checked.get("at", -PORTAL_CHECK_SECONDS) < PORTAL_CHECK_SECONDS:
        return
    problem = portal_configuration_problem(client)
    if problem is not None:
        logger.error("billing portal refused: %s", problem)
        raise ApplicationError(
            "The billing portal is unavailable until Inkwell's operators fix its settings; your plan is "
            "unchanged. Please contact support to change your subscription.",
            code="portal_misconfigured",
            status_code=503,
        )
    _portal_checked["at"] = time.monotonic()


class StripeGateway:
    """Stripe, through the official library (billing.stripe_client). Idempotency keys make a
    retried request repeat nothing."""

    def customer_create(self, *, workspace, email: str) -> str:
        # The idempotency key makes a race create one customer.
        customer = stripe_client.client().v1.customers.create(
            params={
                "email": email,
                "name": workspace.name,
                "metadata": {"workspace_id": str(workspace.pk), "workspace": workspace.slug},
            },
            options={"idempotency_key": f"inkwell-customer-ws-{workspace.pk}"},
        )
        return customer.id

    def subscription_live_exists(self, *, customer_id: str) -> bool:
        stripe = stripe_client.client()
        try:
            listing = stripe.v1.subscriptions.list(params={"customer": customer_id, "status": "all", "limit": 100})
        except stripe_errors as error:  # asked only before a Checkout
            raise _stripe_unavailable("start the checkout", error) from error
        return any(remote["status"] in SubscriptionStatus.LIVE for remote in listing.data)

    def checkout_session_start(
        self, *, workspace, plan: Plan, seats: int, customer_id: str, success_url: str, cancel_url: str
    ) -> str:
        """An open session for the same plan and seats is reused and any other expired, so two
        tabs cannot lead to two payments."""
        stripe = stripe_client.client()
        try:
            open_sessions = stripe.v1.checkout.sessions.list(
                params={"customer": customer_id, "status": "open", "limit": 10}
            )
            for session in (s.to_dict() for s in open_sessions.data):
                metadata = session.get("metadata") or {}
                same = metadata.get("price") == plan.stripe_price_id and metadata.get("seats", "1") == str(seats)
                if same and session.get("url"):
                    return session["url"]
                stripe.v1.checkout.sessions.expire(session["id"])
            session = stripe.v1.checkout.sessions.create(
                params={
                    "mode": "subscription",
                    "customer": customer_id,
                    "line_items": [{"price": plan.stripe_price_id, "quantity": seats}],
                    "success_url": success_url + "?session_id={CHECKOUT_SESSION_ID}",
                    "cancel_url": cancel_url,
                    "client_reference_id": str(workspace.pk),
                    "expires_at": int(time.time()) + CHECKOUT_EXPIRES_SECONDS,
                    "metadata": {
                        "workspace_id": str(workspace.pk),
                        "plan": plan.slug,
                        "price": plan.stripe_price_id,
                        "seats": str(seats),
                    },
                    "subscription_data": {"metadata": {"workspace_id": str(workspace.pk), "plan": plan.slug}},
                },
                options={
                    "idempotency_key": f"inkwell-checkout-ws-{workspace.pk}-{plan.stripe_price_id}-{uuid.uuid4().hex}"
                },
            )
        except stripe_errors as error:
            raise _stripe_unavailable("start the checkout", error) from error
        return session.url

    def portal_session_start(self, *, workspace, customer_id: str, return_url: str) -> str:
        try:
            _portal_check(stripe_client.client())
            session = stripe_client.client().v1.billing_portal.sessions.create(
                params={"customer": customer_id, "return_url": return_url},
                options={"idempotency_key": f"inkwell-portal-ws-{workspace.pk}-{int(time.time() // 60)}"},
            )
        except stripe_errors as error:
            raise _stripe_unavailable("open the billing portal", error) from error
        return session.url

    def subscription_seats_set(self, *, subscription, seats: int, webhook_url: str) -> None:
        """The new quantity on the subscription's one item, invoiced at once; if the payment
        fails, Stripe keeps the old quantity (pending_if_incomplete), so no seat goes unpaid."""
        client = stripe_client.client()
        try:
            remote = client.v1.subscriptions.retrieve(subscription.stripe_subscription_id).to_dict()
            item = ((remote.get("items") or {}).get("data") or [{}])[0]
            client.v1.subscriptions.update(
                subscription.stripe_subscription_id,
                params={
                    "items": [{"id": item["id"], "quantity": seats}],
                    "proration_behavior": "always_invoice",
                    "payment_behavior": "pending_if_incomplete",
                },
                options={
                    "idempotency_key": f"inkwell-seats-{subscription.stripe_subscription_id}-{seats}-"
                    f"{int(time.time() // 60)}"
                },
            )
        except stripe_errors as error:
            raise _stripe_unavailable("change the seats", error) from error

    def subscription_cancel_with_refund(self, *, stripe_subscription: dict) -> int:
        """Cancel a subscription now and refund the unused share of what its latest invoice took.
        Idempotency keys make a retried webhook repeat nothing. Returns the cents refunded."""
        client = stripe_client.client()
        subscription_id = stripe_subscription["id"]
        client.v1.subscriptions.cancel(
            subscription_id, options={"idempotency_key": f"inkwell-dup-cancel-{subscription_id}"}
        )
        invoice_id = stripe_client.object_id(stripe_subscription.get("latest_invoice"))
        if not invoice_id:
            return 0
        start, end = stripe_client.subscription_period(stripe_subscription)
        now = timezone.now()
        unused = 1.0 if not (start and end and end > start) else max(0.0, min(1.0, (end - now) / (end - start)))
        refunded = 0
        for payment in (p.to_dict() for p in client.v1.invoice_payments.list(params={"invoice": invoice_id}).data):
            intent = stripe_client.object_id((payment.get("payment") or {}).get("payment_intent"))
            amount = round((payment.get("amount_paid") or 0) * unused)
            if payment.get("status") != "paid" or not intent or amount <= 0:
                continue
            client.v1.refunds.create(
                params={"payment_intent": intent, "amount": amount, "reason": "duplicate"},
                options={"idempotency_key": f"inkwell-dup-refund-{payment['id']}"},
            )
            refunded += amount
        return refunded

    def customer_close(self, *, customer_id: str) -> None:
        """Asked of Stripe, not only the mirror; a customer already deleted counts as done."""
        client = stripe_client.client()
        try:
            listing = client.v1.subscriptions.list(params={"customer": customer_id, "status": "all", "limit": 100})
            for remote in listing.auto_paging_iter():
                if remote["status"] in SubscriptionStatus.LIVE:
                    client.v1.subscriptions.cancel(
                        remote["id"], options={"idempotency_key": f"inkwell-close-{remote['id']}"}
                    )
            client.v1.customers.delete(customer_id)
        except stripe_library.InvalidRequestError as error:
            if error.code != "resource_missing":  # already deleted: a retry after a partial failure
                raise _stripe_unavailable("close your subscription", error) from error
        except stripe_errors as error:
            raise _stripe_unavailable("close your subscription", error) from error

    def plan_price_sync(self, *, plan: Plan) -> None:
        """Prices are immutable in Stripe: a new amount or currency makes a new Price, and the old
        one is archived."""
        stripe = stripe_client.client()
        if not plan.stripe_product_id:
            product = stripe.v1.products.create(
                params={"name": f"Inkwell {plan.name}", "metadata": {"plan": plan.slug}},
                options={"idempotency_key": f"inkwell-product-{plan.pk}"},
            )
            plan.stripe_product_id = product.id
        else:
            stripe.v1.products.update(plan.stripe_product_id, params={"name": f"Inkwell {plan.name}"})
        if (plan.stripe_price_cents, plan.stripe_price_currency) != (plan.price_cents, plan.currency):
            old_price = plan.stripe_price_id
            price = stripe.v1.prices.create(
                params={
                    "product": plan.stripe_product_id,
                    "unit_amount": plan.price_cents,
                    "currency": plan.currency,
                    "recurring": {"interval": "month"},
                    "metadata": {"plan": plan.slug},
                },
                # A key of its own each time: a key made of the amount alone would replay the Price
                # archived by an A -> B -> A change, leaving the plan on an inactive price.
                options={
                    "idempotency_key": f"inkwell-price-{plan.pk}-{plan.price_cents}-{plan.currency}-{uuid.uuid4().hex}"
                },
            )
            plan.stripe_price_id = price.id
            plan.stripe_price_cents, plan.stripe_price_currency = plan.price_cents, plan.currency
            if old_price:
                stripe.v1.prices.update(old_price, params={"active": False})
