"""People who sign up, the record of changes to their details, the suppression list, the
addresses of erased people who had declined panel invitations, and requests for new links."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import overload

from sqlalchemy import Text, event
from sqlmodel import Field, SQLModel

from consent.models.base import UTCDateTime
from consent.timeutil import utcnow


@overload
def name_key(name: str) -> str: ...
@overload
def name_key(name: None) -> None: ...
def name_key(name: str | None) -> str | None:
    """A name as staff search compares it: case-folded here, because SQLite's lower()
    only knows ASCII and would never match "élodie" to "Élodie"."""
    return None if name is None else name.casefold()


def new_public_id() -> str:
    """A random identifier for links: the integer id never leaves the database."""
    return secrets.token_urlsafe(16)


class Person(SQLModel, table=True):
    """A parent, carer or young person. Erasure blanks every personal field in place."""

    __tablename__ = "person"

    id: int | None = Field(default=None, primary_key=True)
    public_id: str = Field(default_factory=new_public_id, max_length=32, unique=True)
    email: str | None = Field(default=None, max_length=254, unique=True)
    name: str | None = Field(default=None, max_length=200)
    #: ``name_key(name)``: staff search names by their start, case-insensitively, as an
    #: index seek. Case folding can make a character three, hence the length.
    name_key: str | None = Field(default=None, max_length=600, index=True)
    phone: str | None = Field(default=None, max_length=20)
    postcode: str | None = Field(default=None, max_length=10)
    pending_email: str | None = Field(default=None, max_length=254)
    #: When the new address was asked for: once its link has expired it is forgotten, as
    #: anyone holding an old preferences link would otherwise go on seeing it.
    pending_email_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    token_version: int = Field(default=1)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    erased_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: When retention should next check whether anything is still held for this person.
    review_at: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)
    #: They asked, from an invitation's link, not to be invited to panels again.
    invitations_declined_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: When they asked to stop everything (or every kind of email): an agreement dated
    #: before it is not imported, and erasing them suppresses the address unless they have
    #: agreed to something afresh since.
    stopped_all_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: Until when the join link of their latest panel invitation works: they are kept so.
    invited_until: datetime | None = Field(default=None, sa_type=UTCDateTime)

    @property
    def is_erased(self) -> bool:
        return self.erased_at is not None


@event.listens_for(Person, "before_insert")
@event.listens_for(Person, "before_update")
def _fold_name(_mapper: object, _connection: object, target: Person) -> None:
    """Every ORM write keeps the search key in step with the name; bulk statements that
    write a name set both themselves."""
    target.name_key = name_key(target.name)


class PersonChange(SQLModel, table=True):
    """That a detail was corrected, when, how and by whom; never the old or new value."""

    __tablename__ = "person_change"

    id: int | None = Field(default=None, primary_key=True)
    person_id: int = Field(foreign_key="person.id", index=True)
    fields: str = Field(max_length=200)
    channel: str = Field(max_length=32)
    actor: str = Field(max_length=100)
    note: str | None = Field(default=None, sa_type=Text)
    changed_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Suppression(SQLModel, table=True):
    """Keyed hashes of addresses that opted out and were erased: never contact them again."""

    __tablename__ = "suppression"

    id: int | None = Field(default=None, primary_key=True)
    email_hmac: str = Field(max_length=64, unique=True)
    reason: str = Field(max_length=32)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class AddressOptOut(SQLModel, table=True):
    """Keyed hashes of addresses that asked us to stop, with when, kept once their
    suppression is lifted, their person is erased without one, or their person moves to
    another address: an agreement dated before then is never imported, whoever holds the
    address now."""

    __tablename__ = "address_opt_out"

    id: int | None = Field(default=None, primary_key=True)
    email_hmac: str = Field(max_length=64, unique=True)
    opted_out_at: datetime = Field(sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class DeclinedInvitations(SQLModel, table=True):
    """Keyed hashes of addresses whose owner declined panel invitations and was then erased.

    Apart from the suppression list: it stops only panel invitations, and only the person
    joining a panel themselves lifts it, not agreeing to anything else.
    """

    __tablename__ = "declined_invitations"

    id: int | None = Field(default=None, primary_key=True)
    email_hmac: str = Field(max_length=64, unique=True)
    declined_at: datetime = Field(sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class LinkRequest(SQLModel, table=True):
    """Someone asked for a new preferences link. The mailer answers it moments later, so the
    page does the same work, and takes the same time, whether or not the address is ours.

    ``address`` is encrypted: it may be a stranger's. Each row lives until the next delivery.
    """

    __tablename__ = "link_request"

    id: int | None = Field(default=None, primary_key=True)
    address: str = Field(sa_type=Text)
    requested_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
