"""Forms: Flask-WTF for CSRF and parsing, GOV.UK Frontend widgets for rendering.

Forms only parse and bound what arrives; the services check meaning (is this a real
email address, a real postcode) and raise errors that name the field, which views attach
to the form so the person sees the message beside what they typed.
"""

from __future__ import annotations

from typing import Any

from flask_wtf import FlaskForm
from govuk_frontend_wtf.wtforms_widgets import (
    GovCheckboxesInput,
    GovCheckboxInput,
    GovRadioInput,
    GovSubmitInput,
    GovTextArea,
    GovTextInput,
)
from wtforms import (
    BooleanField,
    Field,
    HiddenField,
    RadioField,
    SelectChoice,
    SelectMultipleField,
    StringField,
    SubmitField,
    TextAreaField,
)
from wtforms.validators import InputRequired, Length, Optional

from consent.errors import InvalidInput
from consent.options import PREFER_NOT_TO_SAY, options
from consent.validation import EMAIL_MAX, whole_number


class _LegendKept:
    """GOV.UK widgets drop the legend text when a template passes other fieldset options
    (a legend class, say); an empty legend leaves the group unnamed for screen readers."""

    def map_gov_params(self, field: Field, **kwargs: object) -> dict:
        params = super().map_gov_params(field, **kwargs)  # type: ignore[misc]
        legend = params.get("fieldset", {}).setdefault("legend", {})
        if not legend.get("text") and not legend.get("html"):
            legend["text"] = field.label.text
        return params


class Radios(_LegendKept, GovRadioInput):
    pass


class Checkboxes(_LegendKept, GovCheckboxesInput):
    pass


def attach_error(form: FlaskForm, error: InvalidInput, fallback: str) -> None:
    """Show a service's error beside the field it names, or beside ``fallback``."""
    field: Field | None = getattr(form, error.field, None)
    if not isinstance(field, Field):
        field = getattr(form, fallback)
    assert field is not None
    field.errors = [*list(field.errors or []), error.message]  # type: ignore[misc]


def notice_id(value: str | None) -> int | None:
    """A hidden notice id from a form; anything but a small positive integer is None."""
    return whole_number(value)


def came(value: str | None, event: str) -> bool:
    """Whether a register row says the person came: "yes" or "no", never a silent no."""
    if value not in ("yes", "no"):
        raise InvalidInput("attended", f"Select whether they came to the {event}.")
    return value == "yes"


def must_choose(message: str) -> dict[str, Any]:
    """A choice field's answer is required and must be one offered; both say ``message``,
    never WTForms' own "Not a valid choice"."""
    return {"validators": [InputRequired(message)], "invalid_choice_message": message}


def choices(values: tuple[str, ...]) -> list[SelectChoice]:
    return [SelectChoice(value) for value in values]


def full_name() -> StringField:
    return StringField(
        "Full name",
        validators=[
            InputRequired("Enter your full name."),
            Length(max=200, message="Your name must be 200 characters or fewer."),
        ],
        widget=GovTextInput(),
    )


def _email_length() -> Length:
    return Length(max=EMAIL_MAX, message=f"Email address must be {EMAIL_MAX} characters or fewer.")


def email_address() -> StringField:
    return StringField(
        "Email address",
        validators=[InputRequired("Enter your email address."), _email_length()],
        widget=GovTextInput(),
    )


class NewsletterForm(FlaskForm):
    email = email_address()
    name = StringField(
        "Your name (optional)",
        validators=[
            Optional(),
            Length(max=200, message="Your name must be 200 characters or fewer."),
        ],
        widget=GovTextInput(),
    )
    newsletter = BooleanField(widget=GovCheckboxInput())
    family_hub_events = BooleanField(widget=GovCheckboxInput())
    newsletter_notice = HiddenField()
    family_hub_events_notice = HiddenField()
    submit = SubmitField("Continue", widget=GovSubmitInput())


class BookingForm(FlaskForm):
    name = full_name()
    email = email_address()
    setting = StringField(
        "Setting or workplace (optional)",
        description="For example, the nursery, school or service you work in",
        validators=[
            Optional(),
            Length(max=200, message="Setting must be 200 characters or fewer."),
        ],
        widget=GovTextInput(),
    )
    district = RadioField(
        "Which district do you live or work in?",
        choices=choices(options().districts),
        **must_choose("Select the district you live or work in."),
        widget=Radios(),
    )
    job_role = RadioField(
        "What is your role?",
        choices=choices(options().job_roles),
        **must_choose("Select your role."),
        widget=Radios(),
    )
    newsletter = BooleanField(widget=GovCheckboxInput())
    workshops = BooleanField(widget=GovCheckboxInput())
    newsletter_notice = HiddenField()
    workshops_notice = HiddenField()
    submit = SubmitField("Book my place", widget=GovSubmitInput())


def _special_fields() -> dict[str, Field]:
    fields: dict[str, Field] = {}
    for question in options().special_category:
        if question.free_text:
            fields[question.key] = TextAreaField(
                f"{question.label} (optional)",
                validators=[
                    Optional(),
                    Length(max=500, message="Your answer must be 500 characters or fewer."),
                ],
                widget=GovTextArea(),
            )
        else:
            fields[question.key] = RadioField(
                f"{question.label} (optional)",
                choices=choices((*question.options, PREFER_NOT_TO_SAY)),
                validators=[Optional()],
                invalid_choice_message="Select an answer from the list, or prefer not to say.",
                widget=Radios(),
            )
    return fields


class _JoinBase(FlaskForm):
    name = full_name()
    email = email_address()
    phone = StringField(
        "Phone number (optional)",
        description="So the Family Hub team can call you about meetings, if you prefer",
        validators=[
            Optional(),
            Length(max=40, message="Enter a phone number, like 01632 960 001."),
        ],
        widget=GovTextInput(),
    )
    postcode = StringField(
        "Postcode",
        description="So we know which Family Hubs you are near",
        validators=[
            InputRequired("Enter your postcode."),
            Length(max=10, message="Enter a real postcode, like SW1A 1AA."),
        ],
        widget=GovTextInput(),
    )
    age_band = RadioField(
        "How old are you?",
        choices=choices(options().age_bands),
        **must_choose("Select your age group."),
        widget=Radios(),
    )
    children_count = StringField(
        "How many children do you look after?",
        validators=[
            InputRequired("Enter how many children you look after."),
            Length(max=3, message="Enter how many children you look after, as a number."),
        ],
        widget=GovTextInput(),
    )
    children_ages = StringField(
        "How old are they? (optional)",
        description="Separate ages with commas, for example 2, 7",
        validators=[
            Optional(),
            Length(max=100, message="Enter ages as numbers separated by commas."),
        ],
        widget=GovTextInput(),
    )
    services_used = SelectMultipleField(
        "Which Family Hub services have you used? (optional)",
        description="Select all that apply",
        choices=choices(options().family_hub_services),
        validators=[Optional()],
        invalid_choice_message="Select the services you have used from the list.",
        widget=Checkboxes(),
    )
    panel_contact = BooleanField(widget=GovCheckboxInput())
    panel_recordings = BooleanField(widget=GovCheckboxInput())
    panel_contact_notice = HiddenField()
    panel_recordings_notice = HiddenField()
    submit = SubmitField("Continue", widget=GovSubmitInput())


JoinForm = type("JoinForm", (_JoinBase,), _special_fields())


class EmailOnlyForm(FlaskForm):
    email = email_address()
    submit = SubmitField("Send me a link", widget=GovSubmitInput())


class ButtonForm(FlaskForm):
    """A button and a CSRF token: for confirmations, where the POST is the change."""

    submit = SubmitField("Confirm", widget=GovSubmitInput())


class RenewForm(FlaskForm):
    """Staying on a panel: the button renews panel contact on the wording shown; recordings
    are renewed only if their own box is ticked."""

    panel_contact_notice = HiddenField()
    panel_recordings = BooleanField(widget=GovCheckboxInput())
    panel_recordings_notice = HiddenField()
    submit = SubmitField("Yes, I want to stay", widget=GovSubmitInput())


class FeedbackForm(FlaskForm):
    rating = RadioField(
        "How useful was the workshop?",
        choices=choices(("Very useful", "Useful", "Not very useful", "Not useful at all")),
        **must_choose("Select how useful the workshop was."),
        widget=Radios(),
    )
    comments = TextAreaField(
        "Anything else you want to tell us? (optional)",
        description="Please do not include anything about your health or your family",
        validators=[
            Optional(),
            Length(max=2000, message="Comments must be 2000 characters or fewer."),
        ],
        widget=GovTextArea(),
    )
    submit = SubmitField("Send feedback", widget=GovSubmitInput())


class ConsentChangeForm(FlaskForm):
    purpose = HiddenField(validators=[InputRequired()])
    agree = HiddenField(validators=[InputRequired()])
    notice = HiddenField()


class DetailsForm(FlaskForm):
    name = StringField(
        "Full name",
        validators=[
            Optional(),
            Length(max=200, message="Your name must be 200 characters or fewer."),
        ],
        widget=GovTextInput(),
    )
    phone = StringField(
        "Phone number (optional)",
        validators=[
            Optional(),
            Length(max=40, message="Enter a phone number, like 01632 960 001."),
        ],
        widget=GovTextInput(),
    )
    postcode = StringField(
        "Postcode (optional)",
        validators=[Optional(), Length(max=10, message="Enter a real postcode, like SW1A 1AA.")],
        widget=GovTextInput(),
    )
    submit = SubmitField("Save my details", widget=GovSubmitInput())


class NewEmailForm(FlaskForm):
    new_email = StringField(
        "New email address",
        description="We will send a link to this address. Your address changes when you use it.",
        validators=[InputRequired("Enter your new email address."), _email_length()],
        widget=GovTextInput(),
    )
    submit = SubmitField("Send a confirmation link", widget=GovSubmitInput())
