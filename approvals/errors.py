"""Errors of the approvals domain and its database; each carries the HTTP status it maps to."""

from __future__ import annotations


class ApprovalsError(Exception):
    """Base of the approvals domain's errors."""

    status_code = 400


class DatabaseNotMigrated(ApprovalsError):
    """The database is missing tables or is behind the code's migrations."""

    status_code = 503


class DatabaseUnavailable(ApprovalsError):
    """The database cannot be reached."""

    status_code = 503


class EventConflict(ApprovalsError):
    """An event id arrived again with different content."""

    status_code = 409
