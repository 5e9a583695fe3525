"""Domain logic: the only code that writes to the database.

Services are plain functions taking a session. They never commit: the caller's
:meth:`consent.db.Database.transaction` does, once, so each call is all or nothing.
"""
