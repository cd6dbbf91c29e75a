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


class InvalidRequest(ApprovalsError):
    """The request cannot be carried out as asked (a field is wrong)."""

    status_code = 422


class NotFound(ApprovalsError):
    """No such proposal, version or token."""

    status_code = 404


class Conflict(ApprovalsError):
    """The object is not in a state that allows this (already decided, stale, duplicate...)."""

    status_code = 409


class GuardrailViolation(ApprovalsError):
    """A proposal breaks a guardrail (protected rule, maximum change, cooldown)."""

    status_code = 422


class NotAllowed(ApprovalsError):
    """The caller may not do this (self-approval, wrong role for the action)."""

    status_code = 403
