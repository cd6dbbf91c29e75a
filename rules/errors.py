"""Errors the rules package raises; each carries the message a user should see."""

from __future__ import annotations


class RulesError(Exception):
    """Bad rules input a user can fix (CLI exit code 2, HTTP 4xx)."""

    status_code = 422


class RulesetError(RulesError):
    """A ruleset document is missing or invalid."""


class OrderError(RulesError):
    """An order or its candidates cannot be decided as given."""
