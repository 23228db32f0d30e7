"""Errors of the serving package; standard library only, so that any serving module can import them cheaply."""

from __future__ import annotations

__all__ = ["BundleError", "UnknownIdError"]


class BundleError(ValueError):
    """A serving bundle is invalid: unknown format, unsafe paths, or files that do not match the manifest."""


class UnknownIdError(KeyError):
    """A user or item id that the bundle does not contain."""

    def __str__(self) -> str:
        # KeyError's own str() wraps the message in quotes.
        return str(self.args[0]) if self.args else ""
