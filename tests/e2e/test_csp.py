"""Every page of Inkwell in real Chromium, under its real Content-Security-Policy: as a visitor, a
member of a team workspace, the workspace's owner and staff (every page of the admin too), with
real rows so detail pages exist. Chromium reports each refused inline script or style, blocked
load or refused form target as a `securitypolicyviolation` event and a console error; the test
fails listing each with its page. A test of the URL map fails when a page is neither visited here
nor excluded with a reason, so a new page cannot be missed."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlparse

import pytest
from allauth.account.forms import default_token_generator
from allauth.account.models import EmailAddress, EmailConfirmationHMAC
from allauth.account.utils import user_pk_to_url_str
from allauth.mfa.recovery_codes.internal.auth import RecoveryCodes
from allauth.mfa.totp.internal.auth import TOTP, format_hotp_value, generate_totp_secret, hotp_value
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Group
from django.test import RequestFactory
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone
from playwright.sync_api import Page, Response, expect

from accounts import teams
from accounts.models import User, WorkspaceRole
from accounts.workspaces import workspace_personal
from billing import sandbox
from billing.models import BillingCustomer, UsageRecord, WebhookEvent
from billing.selectors import entitlements_for
from billing.services.ledger import quota_period_open, quota_top_up
from inference.models import GenerationJob, Worker
from tests.billing.stripe_fakes import portal_configurations
from tests.e2e.helpers import sign_in
from tests.factories import PASSWORD, ApiKeyFactory, JobFactory, PlanFactory, SubscriptionFactory, UserFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

VISITOR, MEMBER, OWNER, STAFF = "visitor", "member", "owner", "staff"
SEATS = 5
QUOTA_PERCENT = 37


@dataclass
class Cast:
    """The people and rows every page needs: a team workspace (Acme) on a per-seat plan, its owner,
    a capped member with jobs and a key, a pending invitation, staff with two-factor, and one row
    of everything the admin shows."""

    owner: User
    member: User
    staff: User
    job: GenerationJob
    queued_job: GenerationJob
    invitation_token: str
    staff_totp_secret: str
    unverified_email_key: str
    reset_key: tuple[str, str]
    checkout_path: str
    portal_path: str


@pytest.fixture
def cast(db, tiny_model_path) -> Cast:
    PlanFactory(slug="free", name="Free", is_default=True, price_cents=0, monthly_token_allowance=5_000)
    PlanFactory(slug="pro", name="Pro", price_cents=1900, stripe_price_id="price_sandbox_pro")
    team_plan = PlanFactory(
        slug="team", name="Team", price_cents=1500, per_seat=True, stripe_price_id="price_sandbox_team",
        monthly_token_allowance=10_000,
    )  # fmt: skip
    owner = UserFactory(email="owner@example.com")
    member = UserFactory(email="member@example.com")
    staff = UserFactory(email="staff@example.com", is_staff=True, is_superuser=True)
    team = teams.workspace_create(owner=owner, name="Acme")
    SubscriptionFactory(
        workspace=team, plan=team_plan, seats=SEATS, paid_seats=SEATS, stripe_subscription_id="sub_sandbox_acme",
        stripe_customer_id="cus_sandbox_acme",
    )  # fmt: skip
    BillingCustomer.objects.create(workspace=team, stripe_customer_id="cus_sandbox_acme")
    membership = teams.member_add(workspace=team, user=member, role=WorkspaceRole.MEMBER, seats=SEATS, actor=owner)
    teams.member_cap_set(membership=membership, cap=4_000, actor=owner)
    invitation = teams.invitation_create(
        workspace=team, email="invitee@example.com", role=WorkspaceRole.MEMBER, seats=SEATS, invited_by=owner
    )

    quota_top_up(workspace=team, tokens=1_000, reason="A goodwill top-up", granted_by=staff)
    period = quota_period_open(workspace=team, entitlements=entitlements_for(team))
    period.used = period.allowance * QUOTA_PERCENT // 100
    period.save(update_fields=["used"])
    job = JobFactory(user=member, workspace=team, quota_period=period, finished=True, plan_slug="team")
    queued_job = JobFactory(user=member, workspace=team, quota_period=period, prompt="Still waiting", plan_slug="team")
    UsageRecord.objects.create(
        user=member, workspace=team, job=job, quota_period=period, plan_slug="team", model=job.model,
        status=job.status, prompt_tokens=job.prompt_tokens, completion_tokens=job.completion_tokens,
        tokens_charged=job.tokens_charged, worker="w1/1",
    )  # fmt: skip
    ApiKeyFactory(user=member, workspace=team, name="member's laptop")
    ApiKeyFactory(user=owner, workspace=team, name="owner's server")
    now = timezone.now()
    Worker.objects.create(name="w1/1", hostname="w1", pid=1, started_at=now, last_heartbeat_at=now)
    WebhookEvent.objects.create(
        stripe_event_id="evt_sandbox_1", type="invoice.paid", stripe_created_at=now, payload={}, status="processed"
    )
    Group.objects.create(name="Support")

    secret = generate_totp_secret()
    TOTP.activate(staff, secret)
    RecoveryCodes.activate(staff)
    unverified = UserFactory(email="unverified@example.com", verified=False)
    address = EmailAddress.objects.create(user=unverified, email=unverified.email, verified=False, primary=True)
    success = "http://testserver" + reverse("billing:success")
    return Cast(
        owner=owner,
        member=member,
        staff=staff,
        job=job,
        queued_job=queued_job,
        invitation_token=teams.invitation_token(invitation),
        staff_totp_secret=secret,
        unverified_email_key=EmailConfirmationHMAC(address).key,
        reset_key=(user_pk_to_url_str(owner), default_token_generator.make_token(owner)),
        checkout_path=sandbox.checkout_url(
            workspace=team,
            plan=team_plan,
            customer_id="cus_sandbox_acme",
            success_url=success,
            cancel_url=success,
            seats=SEATS,
        ),
        portal_path=sandbox.portal_url(workspace=team, return_url=success),
    )


# --- what is visited, by whom ------------------------------------------------------------------


@dataclass(frozen=True)
class Visit:
    """One GET of a named URL by one role: what it answers and where the browser ends up."""

    role: str
    args: Callable[[Cast], list[tuple]] = lambda cast: [()]
    status: int = 200
    lands: Callable[[Cast], str] | None = None  # the path after redirects, when not the URL's own
    ready: str | None = None  # a selector that appears once the page has finished drawing itself


def _admin_app_labels(cast: Cast) -> list[tuple]:
    return [(label,) for label in sorted({model._meta.app_label for model in admin.site._registry})]


# Every named GET page of the product (the admin's model pages are added from its registry).
PAGES: dict[str, list[Visit]] = {
    "home": [Visit(VISITOR), Visit(MEMBER)],
    "privacy": [Visit(VISITOR)],
    "account_delete": [Visit(MEMBER)],
    "workspace_new": [Visit(MEMBER)],
    "workspace_members": [Visit(OWNER), Visit(MEMBER, status=403)],
    "workspace_activity": [Visit(OWNER), Visit(MEMBER, status=403)],
    "workspace_export": [Visit(OWNER)],
    "account_export": [Visit(MEMBER)],
    "invitation_accept": [Visit(VISITOR, args=lambda cast: [(cast.invitation_token,)])],
    "account_login": [Visit(VISITOR)],
    "account_logout": [Visit(MEMBER)],
    "account_inactive": [Visit(VISITOR)],
    "account_signup": [Visit(VISITOR)],
    "account_reauthenticate": [Visit(MEMBER)],
    "account_request_reauthentication_code": [Visit(MEMBER)],
    "account_email": [Visit(MEMBER)],
    "account_email_verification_sent": [Visit(VISITOR)],
    "account_change_password": [Visit(MEMBER)],
    "account_set_password": [Visit(MEMBER, lands=lambda cast: reverse("account_change_password"))],
    "account_reset_password": [Visit(VISITOR)],
    "account_confirm_email": [Visit(VISITOR, args=lambda cast: [(cast.unverified_email_key,)])],
    "account_reset_password_from_key_done": [Visit(VISITOR)],
    "account_reset_password_from_key": [
        Visit(
            VISITOR,
            args=lambda cast: [cast.reset_key],
            lands=lambda cast: reverse("account_reset_password_from_key", args=[cast.reset_key[0], "set-password"]),
        )
    ],
    "account_reset_password_done": [Visit(VISITOR)],
    "mfa_index": [Visit(MEMBER), Visit(STAFF)],
    "mfa_activate_totp": [Visit(MEMBER)],  # the QR code is a data: image
    "mfa_deactivate_totp": [Visit(STAFF)],
    "mfa_reauthenticate": [Visit(STAFF)],
    "mfa_view_recovery_codes": [Visit(STAFF)],
    "mfa_generate_recovery_codes": [Visit(STAFF)],
    "usersessions_list": [Visit(MEMBER)],
    "account_profile": [Visit(MEMBER)],
    "account_api_keys": [Visit(MEMBER), Visit(OWNER)],
    "inference:generate": [Visit(MEMBER)],
    "inference:history": [Visit(MEMBER)],
    "inference:job": [Visit(MEMBER, args=lambda cast: [(cast.job.pk,), (cast.queued_job.pk,)])],
    "inference:usage": [Visit(MEMBER), Visit(OWNER)],
    "billing:pricing": [Visit(VISITOR), Visit(OWNER)],
    "billing:home": [Visit(OWNER), Visit(MEMBER, status=403)],
    "billing:success": [Visit(OWNER)],
    "billing:cancel": [Visit(OWNER, lands=lambda cast: reverse("billing:pricing"))],
    "billing:sandbox-checkout": [Visit(OWNER, args=lambda cast: [(cast.checkout_path.split("/")[-2],)])],
    "billing:sandbox-portal": [Visit(OWNER, args=lambda cast: [(cast.portal_path.split("/")[-2],)])],
    "staff:business": [Visit(STAFF)],
    "api-docs": [Visit(VISITOR, ready=".swagger-ui .info"), Visit(MEMBER, ready=".swagger-ui .info")],
    "admin:index": [Visit(STAFF)],
    "admin:app_list": [Visit(STAFF, args=_admin_app_labels)],
    "admin:password_change": [Visit(STAFF)],
    "admin:password_change_done": [Visit(STAFF)],
    "admin:auth_user_password_change": [Visit(STAFF, args=lambda cast: [(cast.member.pk,)])],
}
# Pages without a name of their own.
ERROR_PAGES: list[tuple[str, str, int]] = [(VISITOR, "/no-such-page/", 404), (MEMBER, "/jobs/no-such-job/", 404)]

# Pages that only show after a step of a flow, and the step (browse_as and the act_as_* below).
REACHED_BY_CLICKS: dict[str, str] = {
    "mfa_authenticate": "staff's sign-in, which stops there for the code",
    "account_confirm_reauthentication_code": "the member asking for a re-authentication code",
}
# Named URLs that are not HTML pages a browser GETs, each with why.
EXCLUDED: dict[str, str] = {
    "healthz": "JSON for load balancers",
    "readyz": "JSON for load balancers",
    "workspace_switch": "POST only (the switcher's form)",
    "workspace_delete": "POST only",
    "workspace_invite": "POST only",
    "workspace_member_remove": "POST only",
    "workspace_member_role": "POST only",
    "workspace_member_cap": "POST only",
    "workspace_transfer": "POST only",
    "workspace_invitation_revoke": "POST only",
    "account_confirm_login_code": "signing in by a mailed code is off: it redirects away",
    "mfa_download_recovery_codes": "a text file",
    "account_api_key_revoke": "POST only",
    "export_status": "JSON for the export pages",
    "export_download": "a zip file",
    "inference:count-tokens": "JSON for the generate page",
    "inference:job-status": "JSON for the job page",
    "inference:job-cancel": "POST only",
    "inference:job-delete": "POST only",
    "inference:job-download": "a text or Markdown file",
    "inference:job-stream": "an event stream",
    "inference:usage-export": "a CSV file",
    "billing:subscribe": "POST only (redirects to Checkout)",
    "billing:status": "JSON for the success page",
    "billing:portal": "POST only (redirects to the Customer Portal)",
    "billing:seats": "POST only",
    "billing:webhook": "Stripe's POSTs",
    "api-jobs": "the REST API (JSON)",
    "api-job": "the REST API (JSON)",
    "api-job-cancel": "the REST API (JSON)",
    "api-job-stream": "the REST API (an event stream)",
    "api-usage": "the REST API (JSON)",
    "api-ping": "the REST API (JSON)",
    "api-schema": "the OpenAPI schema (YAML), fetched by the API docs page",
    "openai-models": "the OpenAI-compatible API (JSON)",
    "openai-completions": "the OpenAI-compatible API (JSON)",
    "openai-chat-completions": "the OpenAI-compatible API (JSON)",
    "admin:login": "sends to allauth's sign-in (visited)",
    "admin:logout": "POST only",
    "admin:autocomplete": "JSON for the admin's autocomplete widgets",
    "admin:jsi18n": "JavaScript",
    "admin:view_on_site": "a redirect to the object's page",
}
# The admin's pages of each registered model (their URL names end so).
ADMIN_MODEL_PAGES = ("changelist", "add", "change", "history", "delete")


def route_names(patterns=None, namespace: str = "", prefix: str = ""):
    """(name with namespace, route) of every URL pattern of saas.urls; name is None when unnamed."""
    for pattern in get_resolver("saas.urls").url_patterns if patterns is None else patterns:
        if isinstance(pattern, URLResolver):
            inner = ":".join(part for part in (namespace, pattern.namespace or "") if part)
            yield from route_names(pattern.url_patterns, inner, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            name = pattern.name and (f"{namespace}:{pattern.name}" if namespace else pattern.name)
            yield name, prefix + str(pattern.pattern)


def admin_model_page_names() -> set[str]:
    return {
        f"admin:{model._meta.app_label}_{model._meta.model_name}_{page}"
        for model in admin.site._registry
        for page in ADMIN_MODEL_PAGES
    }


def test_every_page_is_visited_or_excluded_with_a_reason():
    names, unnamed = set(), []
    for name, route in route_names():
        if name is None:
            # The admin's own: /<object id>/ redirects to the change page, and its catch-all.
            if not route.startswith("admin/"):
                unnamed.append(route)
            continue
        names.add(name)
    listed = [*PAGES, *REACHED_BY_CLICKS, *EXCLUDED]
    covered = set(listed) | admin_model_page_names()

    assert unnamed == [], "name these URL patterns, then list them in PAGES or EXCLUDED"
    assert sorted(names - covered) == [], "new pages: add each to PAGES (visited) or EXCLUDED (with why)"
    assert sorted(set(listed) - names) == [], "gone from the URL map: remove them here"
    assert len(listed) == len(set(listed)), "listed twice"


# --- recording what Chromium refuses -------------------------------------------------------------

# Runs in every document before its own scripts: keeps each violation for the test to read.
RECORDER = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(
    `${e.effectiveDirective} refused ${e.blockedURI || "inline"}` +
    (e.sourceFile ? ` at ${e.sourceFile}:${e.lineNumber}` : "") + (e.sample ? ` (${e.sample})` : ""));
}, true);
"""
# Console errors that mean a policy refused something (or a policy header is wrong).
POLICY_WORDS = ("Content Security Policy", "Content-Security-Policy", "Permissions-Policy", "Permissions policy")


@dataclass
class Browse:
    """A signed-in (or not) browser of one role, collecting problems page by page."""

    page: Page
    base: str
    problems: list[str] = field(default_factory=list)
    where: str = ""

    def __post_init__(self):
        self.page.context.add_init_script(RECORDER)
        self.page.on("console", self._console)

    def _console(self, message) -> None:
        if message.type in ("error", "warning") and any(word in message.text for word in POLICY_WORDS):
            self.problems.append(f"{self.where}: console: {message.text}")

    def settle(self) -> None:
        """Lets queued violation events fire, then moves them into problems."""
        found = self.page.evaluate(
            "() => new Promise((done) => requestAnimationFrame(() => setTimeout(() => done("
            "window.__cspViolations ? window.__cspViolations.splice(0) : []), 50)))"
        )
        self.problems += [f"{self.where}: {violation}" for violation in found]

    def reauthenticate(self) -> Response:
        """allauth's password prompt before a sensitive page (ACCOUNT_REAUTHENTICATION_REQUIRED):
        checked like any page, answered, and the page asked for is the answer."""
        self.settle()
        self.page.get_by_label("Password").fill(PASSWORD)
        with self.page.expect_navigation() as navigation:
            self.page.get_by_role("button", name="Confirm").click()
        return navigation.value

    def visit(self, path: str, *, status: int = 200, lands: str | None = None, ready: str | None = None) -> None:
        self.where = path
        response = self.page.goto(self.base + path)
        prompt = reverse("account_reauthenticate")
        if urlparse(self.page.url).path == prompt != (lands or path):
            response = self.reauthenticate()
        if ready:
            self.page.wait_for_selector(ready)
        self.settle()
        landed = urlparse(self.page.url).path
        if response is None or response.status != status or landed != (lands or urlparse(path).path):
            answer = response.status if response is not None else "no response"
            self.problems.append(f"{path}: answered {answer} at {landed}, expected {status} at {lands or path}")


def browse_as(browser, web_server, role: str, cast: Cast) -> Browse:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(15_000)
    browse = Browse(page, web_server.url)
    if role == VISITOR:
        return browse
    user = {MEMBER: cast.member, OWNER: cast.owner, STAFF: cast.staff}[role]
    browse.where = f"sign-in of {user.email}"
    sign_in(page, web_server.url, user.email)
    if role == STAFF:
        expect(page).to_have_url(web_server.url + reverse("mfa_authenticate"))
        browse.settle()
        if time.time() % 30 > 27:  # a code about to expire might reach the server a window late
            time.sleep(3)
        counter = int(time.time()) // 30
        page.locator("#id_code").fill(format_hotp_value(hotp_value(cast.staff_totp_secret, counter)))
        page.get_by_role("button", name="Sign In").click()
    expect(page.locator("summary[aria-label='Account menu']")).to_be_visible()
    browse.settle()
    # Answered once here, the password prompt stays away for ACCOUNT_REAUTHENTICATION_TIMEOUT.
    browse.visit(reverse("account_reauthenticate"), lands=reverse("home"))
    if role in (MEMBER, OWNER):
        # Both work in the team's workspace, chosen in the switcher.
        page.locator("summary[aria-label='Switch workspace']").click()
        page.get_by_role("menuitem", name="Acme").click()
        expect(page.get_by_test_id("workspace-switcher")).to_contain_text("Acme")
        browse.settle()
    return browse


def visit_pages(browse: Browse, role: str, cast: Cast) -> None:
    for name, visits in PAGES.items():
        for visit in visits:
            if visit.role != role:
                continue
            for args in visit.args(cast):
                lands = visit.lands(cast) if visit.lands else None
                browse.visit(reverse(name, args=args), status=visit.status, lands=lands, ready=visit.ready)
    for who, path, status in ERROR_PAGES:
        if who == role:
            browse.visit(path, status=status)


def visit_admin(browse: Browse, cast: Cast) -> None:
    """The changelist, add, change, history and delete pages of every registered model, each with
    a real row; a page the ModelAdmin refuses to staff must answer 403 (and be clean too)."""
    request = RequestFactory().get("/admin/")
    request.user = cast.staff
    for model, model_admin in admin.site._registry.items():
        opts = model._meta
        row = model._default_manager.order_by("pk").first()
        if row is None:
            browse.problems.append(f"admin: no {opts.label} row to open: add one to the cast")
            continue
        for page in ADMIN_MODEL_PAGES:
            args = () if page in ("changelist", "add") else (quote(row.pk),)
            status = 200 if admin_allows(model_admin, request, page, row) else 403
            browse.visit(reverse(f"admin:{opts.app_label}_{opts.model_name}_{page}", args=args), status=status)


def admin_allows(model_admin, request, page: str, row) -> bool:
    """Whether the ModelAdmin opens this page of ``row`` to the request's user."""
    if page == "changelist":
        return model_admin.has_view_or_change_permission(request)
    if page == "add":
        return model_admin.has_add_permission(request)
    if page == "delete":
        return model_admin.has_delete_permission(request, row)
    return model_admin.has_view_or_change_permission(request, row)


# --- what some pages only show after a click ----------------------------------------------------


def act_as_visitor(browse: Browse, cast: Cast) -> None:
    page = browse.page
    # Too many failed sign-ins: allauth's 429 page.
    browse.where = "the 429 page"
    for _ in range(6):
        page.goto(browse.base + reverse("account_login"))
        page.locator("#id_login").fill("nobody@example.com")
        page.locator("#id_password").fill("not the password")
        page.get_by_role("button", name="Sign In").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Too many attempts")
    browse.settle()


def act_as_member(browse: Browse, cast: Cast) -> None:
    page = browse.page
    # Generating streams into the page (the count, the submit, the live job).
    browse.where = "generating"
    page.goto(browse.base + reverse("inference:generate"))
    page.get_by_role("textbox", name="Prompt").fill("A line about tea")
    page.get_by_role("button", name="Generate").click()
    expect(page.get_by_test_id("job-status")).to_have_text("queued")
    browse.settle()

    # Re-authenticating by a mailed code: its second page shows once a code is sent.
    browse.where = "re-authenticating by code"
    page.goto(browse.base + reverse("account_request_reauthentication_code"))
    page.get_by_role("button", name="Request Code").click()
    expect(page).to_have_url(browse.base + reverse("account_confirm_reauthentication_code"))
    browse.settle()

    # Deleting a job asks first (data-confirm, no onsubmit attribute); dismissed, nothing happens.
    browse.where = "deleting a job"
    page.goto(browse.base + reverse("inference:job", args=[cast.job.pk]))
    questions = []
    page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.dismiss()))
    page.get_by_role("button", name="Delete").click()
    expect(page).to_have_url(browse.base + reverse("inference:job", args=[cast.job.pk]))
    assert questions == ["Delete this job's texts? Its token counts stay in your usage."]
    browse.settle()


def act_as_owner(browse: Browse, cast: Cast) -> None:
    page = browse.page
    # The quota bar (one meter: the owner has no cap) is drawn from data-percent by a file.
    page.goto(browse.base + reverse("inference:usage"))
    bar = page.get_by_test_id("quota-meter").locator(".quota-bar span")
    expect(bar).to_have_attribute("data-percent", str(QUOTA_PERCENT))
    width = bar.evaluate("(span) => span.getBoundingClientRect().width / span.parentElement.clientWidth")
    assert abs(width - QUOTA_PERCENT / 100) < 0.02, width

    # A new API key is shown once.
    browse.where = "creating an API key"
    page.goto(browse.base + reverse("account_api_keys"))
    page.get_by_label("Name").fill("CI")
    page.get_by_role("button", name="Create key").click()
    expect(page.get_by_test_id("new-key-value")).to_contain_text("ink_")
    browse.settle()

    # An export being prepared (no worker here: it stays queued), its row followed by the page.
    browse.where = "asking for an export"
    page.goto(browse.base + reverse("workspace_export"))
    page.get_by_role("button", name="Prepare an export").click()
    expect(page.get_by_test_id("exports-table")).to_be_visible()
    browse.settle()

    # A declined card in the sandbox's Checkout.
    browse.where = "a declined checkout"
    page.goto(browse.base + cast.checkout_path)
    page.get_by_role("button", name="Decline").click()
    expect(page.get_by_role("alert")).to_contain_text("declined")
    browse.settle()


def act_as_staff(browse: Browse, cast: Cast) -> None:
    page = browse.page
    # An admin action that asks for more on its own page (templates/admin/user_action.html).
    browse.where = "the top-up action's page"
    page.goto(browse.base + reverse("admin:accounts_user_changelist"))
    page.locator(f'input[name="_selected_action"][value="{cast.member.pk}"]').check()
    page.locator('select[name="action"]').select_option(label="Grant a token top-up…")
    page.get_by_role("button", name="Go").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Grant a token top-up…")
    browse.settle()


ACTIONS = {VISITOR: act_as_visitor, MEMBER: act_as_member, OWNER: act_as_owner, STAFF: act_as_staff}


@pytest.mark.parametrize("role", [VISITOR, MEMBER, OWNER, STAFF])
def test_no_page_breaks_the_content_security_policy(browser, web_server, cast, role):
    browse = browse_as(browser, web_server, role, cast)
    try:
        visit_pages(browse, role, cast)
        if role == STAFF:
            visit_admin(browse, cast)
        ACTIONS[role](browse, cast)
    finally:
        browse.page.context.close()

    assert not browse.problems, "Chromium refused:\n" + "\n".join(browse.problems)


# --- Stripe: Checkout and the Customer Portal are a form's redirect away ----------------------------

STRIPE_PAGE = "<!doctype html><title>Stripe</title><h1>Stripe</h1>"
# flow -> (the page, its button, where Stripe's answer sends the browser)
STRIPE_REDIRECTS = {
    "checkout": ("billing:pricing", "Subscribe to Pro", "https://checkout.stripe.com/c/pay/cs_test_1"),
    "portal": (
        "billing:home", "Manage subscription, payment method and invoices", "https://billing.stripe.com/p/session/1",
    ),
}  # fmt: skip


def _stripe_customer(live_stripe, flow: str):
    """A customer of billing against "Stripe" (its answers canned; the sandbox is off), with a
    subscription to manage for the portal flow."""
    PlanFactory(slug="free", name="Free", is_default=True, price_cents=0)
    pro = PlanFactory(slug="pro", name="Pro", price_cents=1900, stripe_price_id="price_TestPro0001")
    live_stripe(
        {
            ("POST", "/v1/customers"): {"id": "cus_New000001", "object": "customer"},
            ("GET", "/v1/subscriptions"): {"object": "list", "data": [], "has_more": False},
            ("GET", "/v1/checkout/sessions"): {"object": "list", "data": [], "has_more": False},
            ("POST", "/v1/checkout/sessions"): {"id": "cs_1", "url": STRIPE_REDIRECTS["checkout"][2]},
            ("GET", "/v1/billing_portal/configurations"): portal_configurations("always_invoice"),
            ("POST", "/v1/billing_portal/sessions"): {"id": "bps_1", "url": STRIPE_REDIRECTS["portal"][2]},
        }
    )  # fmt: skip
    user = UserFactory(email="buyer@example.com")
    if flow == "portal":
        BillingCustomer.objects.create(workspace=workspace_personal(user), stripe_customer_id="cus_TestCustomer0001")
        SubscriptionFactory(user=user, plan=pro, stripe_subscription_id="sub_1")
    return user


def _to_stripe_in_chromium(browser, live_server, client, user, flow: str) -> Browse:
    """Presses the button whose form's answer redirects to Stripe, in the in-process live server
    (where Stripe's client is replaced)."""
    client.force_login(user)
    context = browser.new_context()
    context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}])
    # Stripe's servers are out of reach here: Chromium gets a stand-in page for them.
    for origin in ("https://checkout.stripe.com", "https://billing.stripe.com"):
        context.route(f"{origin}/**", lambda route: route.fulfill(body=STRIPE_PAGE, content_type="text/html"))
    browse = Browse(context.new_page(), live_server.url)
    browse.page.set_default_timeout(15_000)
    page_name, button, _ = STRIPE_REDIRECTS[flow]
    browse.visit(reverse(page_name))
    browse.where = f"the {flow} redirect"
    browse.page.get_by_role("button", name=button).click()
    return browse


@pytest.mark.parametrize("flow", STRIPE_REDIRECTS)
def test_the_forms_that_send_to_stripe_get_there_within_the_policy(browser, live_server, client, live_stripe, flow):
    browse = _to_stripe_in_chromium(browser, live_server, client, _stripe_customer(live_stripe, flow), flow)
    try:
        expect(browse.page).to_have_url(STRIPE_REDIRECTS[flow][2])
        browse.settle()
    finally:
        browse.page.context.close()

    assert not browse.problems, "Chromium refused:\n" + "\n".join(browse.problems)


def test_without_stripe_in_form_action_chromium_stops_the_redirect_to_checkout(
    browser, live_server, client, live_stripe, settings
):
    """Why form-action names Stripe's origins: Chromium checks a form's redirects against it too.
    (It reports the form's own URL, same-origin and allowed, so as not to tell where it led.)"""
    directives = settings.CONTENT_SECURITY_POLICY["DIRECTIVES"]
    settings.CONTENT_SECURITY_POLICY = {"DIRECTIVES": {**directives, "form-action": ["'self'"]}}
    user = _stripe_customer(live_stripe, "checkout")
    browse = _to_stripe_in_chromium(browser, live_server, client, user, "checkout")
    try:
        browse.page.wait_for_timeout(1_000)
        landed = browse.page.url
    finally:
        browse.page.context.close()

    assert urlparse(landed).netloc == urlparse(live_server.url).netloc
    assert [problem for problem in browse.problems if "form-action" in problem and "/billing/subscribe/pro/" in problem]
