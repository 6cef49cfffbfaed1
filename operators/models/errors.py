"""Errors of model loading, importable without torch (configuration checks raise them before any
model is built)."""

from __future__ import annotations


class WeightsError(FileNotFoundError):
    """Weights are missing or do not match the expected layout; the message says what to set."""
