"""Errors the features package raises; each carries the message a user should see."""

from __future__ import annotations


class FeaturesError(Exception):
    """Base class: bad input or configuration that a user can fix (CLI exit code 2, HTTP 4xx)."""

    status_code = 422


class ScenarioError(FeaturesError):
    """A scenario document is missing or invalid."""


class HistoryError(FeaturesError):
    """A history file cannot be read or does not match the schema."""


class PolicyError(FeaturesError):
    """A routing policy returned an allocation the twin cannot ship."""
