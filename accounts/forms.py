from __future__ import annotations

from django import forms

from accounts.models import ApiKeyScope, User


class ProfileForm(forms.ModelForm):
    class Meta:
        model = User
        fields = ["first_name", "last_name"]


class DeleteAccountForm(forms.Form):
    confirm_email = forms.EmailField(label="Type your email address to confirm")

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user

    def clean_confirm_email(self) -> str:
        email = self.cleaned_data["confirm_email"].strip().lower()
        if email != self.user.email.lower():
            raise forms.ValidationError("That is not this account's email address.")
        return email


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="Where you will use it, e.g. 'laptop' or 'production app'.")
    scope = forms.ChoiceField(choices=ApiKeyScope.choices, initial=ApiKeyScope.WRITE)
    expires_in_days = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=3650,
        label="Expires after (days)",
        help_text="Leave empty for no expiry.",
    )
