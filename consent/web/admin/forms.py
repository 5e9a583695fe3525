"""Admin forms: parsing only; the services check meaning and name the field at fault."""

from __future__ import annotations

from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from govuk_frontend_wtf.wtforms_widgets import (
    GovCheckboxInput,
    GovFileInput,
    GovPasswordInput,
    GovSelect,
    GovSubmitInput,
    GovTextArea,
    GovTextInput,
)
from wtforms import (
    BooleanField,
    HiddenField,
    PasswordField,
    RadioField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
    SubmitField,
    TextAreaField,
)
from wtforms.validators import InputRequired, Length, Optional

from consent.models.api_keys import SCOPES
from consent.models.rights import REQUEST_KINDS
from consent.web.forms import Checkboxes, Radios, choices, must_choose


def _text(
    label: str, required: str | None = None, max_length: int = 200, description: str | None = None
) -> StringField:
    validators = [InputRequired(required)] if required else [Optional()]
    validators.append(
        Length(max=max_length, message=f"{label} must be {max_length} characters or fewer.")
    )
    return StringField(label, validators=validators, description=description, widget=GovTextInput())


class SignInForm(FlaskForm):
    email = _text("Email address", "Enter your email address.", 320)
    password = PasswordField(
        "Password",
        validators=[
            InputRequired("Enter your password."),
            Length(max=1000, message="Password must be 1000 characters or fewer."),
        ],
        widget=GovPasswordInput(),
    )
    submit = SubmitField("Continue", widget=GovSubmitInput())


def _password(label: str, required: str, description: str | None = None) -> PasswordField:
    return PasswordField(
        label,
        validators=[
            InputRequired(required),
            Length(max=1000, message=f"{label} must be 1000 characters or fewer."),
        ],
        description=description,
        widget=GovPasswordInput(),
    )


class PasswordForm(FlaskForm):
    current = _password("Current password", "Enter your current password.")
    new = _password(
        "New password",
        "Enter a new password.",
        "12 characters or more. A few unrelated words make a strong password you can remember.",
    )
    again = _password("New password again", "Enter your new password again.")
    submit = SubmitField("Change password", widget=GovSubmitInput())


class CodeForm(FlaskForm):
    code = _text(
        "Code from your authenticator app",
        "Enter the 6-digit code.",
        10,
        "The code changes every 30 seconds",
    )
    submit = SubmitField("Sign in", widget=GovSubmitInput())


class SearchForm(FlaskForm):
    class Meta:
        csrf = False

    q = _text("Search by email address or name", max_length=254)


class OnBehalfForm(FlaskForm):
    purpose = SelectField(
        "What",
        choices=[],
        **must_choose("Select what they agreed to or stopped."),
        widget=GovSelect(),
    )
    action = RadioField(
        "They told us",
        choices=choices(("Agree", "Stop")),
        **must_choose("Select whether they agreed or stopped."),
        widget=Radios(),
    )
    note = TextAreaField(
        "Note",
        description="How and when they told you, for example ‘Phoned on 3 March; notice read out’",
        validators=[
            InputRequired("Enter a note saying how the person told you."),
            Length(max=5000, message="The note must be 5,000 characters or fewer."),
        ],
        widget=GovTextArea(),
    )
    submit = SubmitField("Record", widget=GovSubmitInput())


class NoteForm(FlaskForm):
    note = TextAreaField(
        "Note",
        validators=[
            InputRequired("Enter a note saying why."),
            Length(max=5000, message="The note must be 5,000 characters or fewer."),
        ],
        widget=GovTextArea(),
    )
    submit = SubmitField("Confirm", widget=GovSubmitInput())


class PanelForm(FlaskForm):
    name = _text("Panel name", "Enter the panel's name.")
    family_hub = _text("Family Hub", "Enter the Family Hub.")
    description = TextAreaField(
        "Description",
        validators=[
            InputRequired("Enter a description."),
            Length(max=2000, message="The description must be 2,000 characters or fewer."),
        ],
        widget=GovTextArea(),
    )
    status = RadioField(
        "Taking new members?",
        choices=choices(("open", "closed")),
        validators=[Optional()],
        invalid_choice_message="Select whether the panel is taking new members.",
        widget=Radios(),
    )
    submit = SubmitField("Save", widget=GovSubmitInput())


class InviteForm(FlaskForm):
    email = _text("Email address", "Enter the email address to invite.", 320)
    name = _text("Name (optional)")
    submit = SubmitField("Send invitation", widget=GovSubmitInput())


class SessionForm(FlaskForm):
    title = _text("Title", "Enter a title.")
    starts_at = _text(
        "Date and time", "Enter the date and time.", 40, "In UK time, like 2027-03-05 18:30"
    )
    format = RadioField(
        "Format",
        choices=[
            SelectChoice("online", "Online"),
            SelectChoice("in_person", "In person"),
            SelectChoice("hybrid", "Both"),
        ],
        **must_choose("Select the format."),
        widget=Radios(),
    )
    location = _text("Where (optional)", max_length=300)
    recorded = BooleanField("This session will be recorded", widget=GovCheckboxInput())
    submit = SubmitField("Add session", widget=GovSubmitInput())


class WorkshopForm(FlaskForm):
    title = _text("Title", "Enter a title.")
    description = TextAreaField(
        "Description",
        validators=[
            InputRequired("Enter a description."),
            Length(max=2000, message="The description must be 2,000 characters or fewer."),
        ],
        widget=GovTextArea(),
    )
    starts_at = _text("Starts", "Enter when it starts.", 40, "In UK time, like 2027-03-05 10:00")
    ends_at = _text("Ends", "Enter when it ends.", 40, "In UK time, like 2027-03-05 11:30")
    capacity = _text("Number of places", "Enter the number of places.", 6)
    location = _text("Where", "Enter where it happens.", 300)
    submit = SubmitField("Save", widget=GovSubmitInput())


class RightsForm(FlaskForm):
    kind = RadioField(
        "Type of request",
        choices=choices(REQUEST_KINDS),
        **must_choose("Select the type of request."),
        widget=Radios(),
    )
    channel = RadioField(
        "How it arrived",
        choices=choices(("post", "phone", "email", "in person")),
        **must_choose("Select how the request arrived."),
        widget=Radios(),
    )
    received = _text(
        "Date received", "Enter the date it was received.", 20, "For example, 2027-03-05"
    )
    requester = _text("Who asked (name and how to reply)", "Enter who made the request.", 300)
    email = _text("Their email address, if they are on our records (optional)", max_length=320)
    submit = SubmitField("Log request", widget=GovSubmitInput())


class RightsUpdateForm(FlaskForm):
    status = RadioField(
        "Status",
        choices=choices(("open", "completed", "refused", "withdrawn")),
        **must_choose("Select a status."),
        widget=Radios(),
    )
    outcome = TextAreaField(
        "Outcome",
        validators=[
            Optional(),
            Length(max=5000, message="The outcome must be 5,000 characters or fewer."),
        ],
        widget=GovTextArea(),
    )
    submit = SubmitField("Save", widget=GovSubmitInput())


class ExtendForm(FlaskForm):
    reason = TextAreaField(
        "Why it needs more time",
        validators=[
            Optional(),
            Length(max=2000, message="Why it needs more time must be 2,000 characters or fewer."),
        ],
        widget=GovTextArea(),
    )
    submit = SubmitField("Give two more months", widget=GovSubmitInput())


class ImportForm(FlaskForm):
    purpose = SelectField(
        "Purpose",
        choices=[],
        **must_choose("Select a purpose."),
        widget=GovSelect(),
    )
    file = FileField("CSV file", widget=GovFileInput())
    submit = SubmitField("Preview", widget=GovSubmitInput())


class ConfirmImportForm(FlaskForm):
    upload = HiddenField(validators=[InputRequired("That upload has gone. Upload the file again.")])
    purpose = HiddenField(
        validators=[InputRequired("That upload has gone. Upload the file again.")]
    )
    submit = SubmitField("Import all rows", widget=GovSubmitInput())


class NewUserForm(FlaskForm):
    email = _text("Email address", "Enter an email address.", 320)
    name = _text("Name", "Enter their name.")
    role = RadioField(
        "Role",
        choices=[
            SelectChoice("coordinator", "Coordinator"),
            SelectChoice("dpo", "Data protection officer"),
            SelectChoice("admin", "Administrator"),
        ],
        **must_choose("Select a role."),
        widget=Radios(),
    )
    submit = SubmitField("Create account", widget=GovSubmitInput())


class ApiKeyForm(FlaskForm):
    name = _text(
        "Which system will use the key?",
        "Enter the name of the system.",
        100,
        description="For example, Family Hub bookings. Staff see this name in the audit log.",
    )
    scopes = SelectMultipleField(
        "What may the key do?",
        description="Select all that the system needs, and no more",
        choices=[SelectChoice(scope, words) for scope, words in SCOPES.items()],
        validators=[InputRequired("Select what the key may do.")],
        invalid_choice_message="Select only the permissions listed.",
        widget=Checkboxes(),
    )
    submit = SubmitField("Create key", widget=GovSubmitInput())


class ButtonOnly(FlaskForm):
    submit = SubmitField("Confirm", widget=GovSubmitInput())
