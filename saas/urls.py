from __future__ import annotations

from allauth.account.decorators import secure_admin_login
from django.contrib import admin
from django.urls import include, path

from saas import exports, health, teams, views

# The admin signs in through allauth (its rate limits and two-factor step), never with its own form.
admin.site.login = secure_admin_login(admin.site.login)

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("privacy/", views.privacy, name="privacy"),
    path("account/delete/", views.delete_account, name="account_delete"),
    path("workspaces/switch/", teams.workspace_switch, name="workspace_switch"),
    path("workspaces/new/", teams.workspace_new, name="workspace_new"),
    path("workspace/members/", teams.members, name="workspace_members"),
    path("workspace/delete/", teams.workspace_delete_view, name="workspace_delete"),
    path("workspace/activity/", teams.activity, name="workspace_activity"),
    path("workspace/members/invite/", teams.member_invite, name="workspace_invite"),
    path("workspace/members/<int:membership_id>/remove/", teams.member_remove_view, name="workspace_member_remove"),
    path("workspace/members/<int:membership_id>/role/", teams.member_role, name="workspace_member_role"),
    path("workspace/members/<int:membership_id>/cap/", teams.member_cap, name="workspace_member_cap"),
    path("workspace/members/<int:membership_id>/owner/", teams.ownership_transfer, name="workspace_transfer"),
    path(
        "workspace/invitations/<int:invitation_id>/revoke/", teams.invitation_revoke, name="workspace_invitation_revoke"
    ),
    path("invitations/<str:token>/", teams.invitation_accept, name="invitation_accept"),
    path("workspace/export/", exports.workspace_export, name="workspace_export"),
    path("account/export/", exports.account_export, name="account_export"),
    path("exports/<uuid:export_id>/status/", exports.export_status, name="export_status"),
    path("exports/<str:token>/", exports.export_download, name="export_download"),
    path("accounts/", include("allauth.urls")),
    path("", include("accounts.urls")),
    path("", include("inference.urls")),
    path("", include("billing.urls")),
    path("", include("staff.urls")),
    path("", include("inference.api_urls")),
    path("admin/", admin.site.urls),
]

handler404 = "saas.views.not_found"
handler500 = "saas.views.server_error"
