"""Every table, imported here so SQLModel's metadata (and Alembic) sees them all."""

from consent.models.admin_users import AdminUser
from consent.models.api_keys import ApiKey
from consent.models.audit import AuditEvent
from consent.models.ledger import ConsentEvent, ConsentState, Notice, Purpose
from consent.models.mailchimp import JobState, MailchimpChange
from consent.models.outbox import Outbox
from consent.models.panels import (
    Attendance,
    Panel,
    PanelMembership,
    PanelProfile,
    PanelSession,
    SessionNote,
)
from consent.models.people import (
    AddressOptOut,
    DeclinedInvitations,
    LinkRequest,
    Person,
    PersonChange,
    Suppression,
)
from consent.models.reports import StatCounter
from consent.models.retention import JobRun, RetentionRun
from consent.models.rights import RightsRequest
from consent.models.signups import PendingSignup
from consent.models.workshops import Booking, Workshop

__all__ = [
    "AddressOptOut",
    "AdminUser",
    "ApiKey",
    "Attendance",
    "AuditEvent",
    "Booking",
    "ConsentEvent",
    "ConsentState",
    "DeclinedInvitations",
    "JobRun",
    "JobState",
    "LinkRequest",
    "MailchimpChange",
    "Notice",
    "Outbox",
    "Panel",
    "PanelMembership",
    "PanelProfile",
    "PanelSession",
    "PendingSignup",
    "Person",
    "PersonChange",
    "Purpose",
    "RetentionRun",
    "RightsRequest",
    "SessionNote",
    "StatCounter",
    "Suppression",
    "Workshop",
]
