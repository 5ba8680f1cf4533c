"""Errors of backbone loading and feature extraction (one-line, user-facing)."""


class BackboneError(ValueError):
    """A backbone or its weights cannot be loaded as asked; the message says what to do."""


class ImageReadError(ValueError):
    """An image is missing or unreadable; the message names its path."""
