from __future__ import annotations

from django import forms

from core.api import parse_json
from core.errors import ApplicationError
from inference.services import CHAT_ROLES, MAX_SEED

UNREADABLE_CONVERSATION = "The conversation could not be read; start a new one."


def parse_history(raw: str) -> list[dict]:
    """The chat so far, from the form's hidden field: a list of {role, content} turns, or a
    ValidationError (the field is the browser's to send back, so anything may arrive in it)."""
    try:
        turns = parse_json(raw or "[]", what="The conversation")
    except ApplicationError as error:
        if error.code == "invalid_unicode":
            raise forms.ValidationError(
                "The conversation contains invalid Unicode (a lone surrogate); start a new one."
            ) from None
        raise forms.ValidationError(UNREADABLE_CONVERSATION) from None
    if not isinstance(turns, list) or not all(
        isinstance(turn, dict) and turn.get("role") in CHAT_ROLES and isinstance(turn.get("content"), str)
        for turn in turns
    ):
        raise forms.ValidationError(UNREADABLE_CONVERSATION)
    return [{"role": turn["role"], "content": turn["content"]} for turn in turns]


def chat_messages(*, system: str | None, history: list[dict], message: str | None) -> list[dict]:
    """The chat as job_submit takes it, from the chat form's parts: the system instructions (if
    any are written), the turns so far, and the user's new message."""
    messages = []
    if (system or "").strip():
        messages.append({"role": "system", "content": system})
    messages.extend(history)
    messages.append({"role": "user", "content": message or ""})
    return messages


class GenerateForm(forms.Form):
    """Shapes and types only; every rule of the plan and the model is checked by job_submit."""

    MODES = (("prompt", "Prompt"), ("chat", "Chat"))

    model = forms.ChoiceField()
    mode = forms.ChoiceField(choices=MODES, initial="prompt", widget=forms.RadioSelect)
    prompt = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 8}))
    system = forms.CharField(required=False, label="System instructions", widget=forms.Textarea(attrs={"rows": 2}))
    history = forms.CharField(required=False, widget=forms.HiddenInput)
    message = forms.CharField(required=False, label="Your message", widget=forms.Textarea(attrs={"rows": 4}))
    max_new_tokens = forms.IntegerField(min_value=1, label="Max new tokens")
    temperature = forms.FloatField(
        min_value=0,
        max_value=2,
        initial=0.8,
        widget=forms.NumberInput(attrs={"step": "0.05"}),
        help_text="0 is greedy: the likeliest token every time. Below 0.01 counts as 0.",
    )
    top_p = forms.FloatField(
        min_value=0.01, max_value=1, initial=1.0, label="Top-p", widget=forms.NumberInput(attrs={"step": "0.01"})
    )
    top_k = forms.IntegerField(min_value=0, max_value=1000, initial=0, label="Top-k (0 = off)")
    repetition_penalty = forms.FloatField(
        min_value=0.5, max_value=2, initial=1.0, widget=forms.NumberInput(attrs={"step": "0.05"})
    )
    stop = forms.CharField(
        required=False, label="Stop sequences (one per line)", widget=forms.Textarea(attrs={"rows": 2})
    )
    seed = forms.IntegerField(
        required=False, min_value=0, max_value=MAX_SEED, help_text="Same seed and settings, same text."
    )

    def __init__(self, *args, models: list[str], max_new_tokens: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model"].choices = [(m, m) for m in models]
        self.fields["max_new_tokens"].max_value = max_new_tokens
        self.fields["max_new_tokens"].widget.attrs["max"] = max_new_tokens
        self.fields["max_new_tokens"].help_text = f"Your plan allows up to {max_new_tokens:,}."

    def clean_history(self) -> list[dict]:
        # A hidden field has nowhere to show its error: it is the form's.
        try:
            return parse_history(self.cleaned_data.get("history") or "")
        except forms.ValidationError as error:
            self.add_error(None, error)
            return []

    def submission(self) -> dict:
        """The keyword arguments for job_submit."""
        data = self.cleaned_data
        params = {
            "model": data["model"],
            "max_new_tokens": data["max_new_tokens"],
            "temperature": data["temperature"],
            "top_p": data["top_p"],
            "top_k": data["top_k"],
            "repetition_penalty": data["repetition_penalty"],
            "stop": [line for line in (data.get("stop") or "").splitlines() if line],
            "seed": data.get("seed"),
        }
        if data["mode"] == "chat":
            params["messages"] = chat_messages(
                system=data.get("system"), history=data["history"], message=data.get("message")
            )
        else:
            params["prompt"] = data.get("prompt") or ""
        return params

    def field_for(self, param: str | None) -> str | None:
        """The form field that shows job_submit's error about ``param`` (None: the whole form)."""
        if param is None:
            return None
        field = "message" if param.startswith("messages") else param
        return field if field in self.fields else None
