"""Errors the training package raises; each carries the message a user should see."""

from __future__ import annotations


class TrainingError(Exception):
    """Bad training input a user can fix (CLI exit code 2, HTTP 4xx)."""

    status_code = 422


class ModelLoadError(TrainingError):
    """A registered model is missing or does not match the code that would serve it."""

    status_code = 503
