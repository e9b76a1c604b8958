from __future__ import annotations

from django import forms

from accounts.models import User


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
