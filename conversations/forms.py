from django import forms

from conversations.models import Status


class ReplyForm(forms.Form):
    body = forms.CharField(
        label="Reply",
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "Write a reply to the customer…"}),
        max_length=8000,
    )


class NoteForm(forms.Form):
    body = forms.CharField(
        label="Internal note",
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "Only your colleagues see notes"}),
        max_length=8000,
    )


class StatusForm(forms.Form):
    status = forms.ChoiceField(choices=Status.choices)
