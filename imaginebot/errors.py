"""One error tree for everything a user or operator can be told.

``str(e)`` is the sentence the user sees: it names the argument, what was wrong and what is allowed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from imaginebot.engine.api import GenerateResult


class ImagineError(Exception):
    """Base of every error whose message is meant for the user."""


class ParamError(ImagineError):
    """The /imagine text could not be turned into a request."""


class ConfigError(ImagineError):
    """A setting (environment variable or .env key) has an invalid value."""


class ModelNotFound(ImagineError):
    """The configured model is not on disk nor in the local hub cache."""


class GenerationCancelled(ImagineError):
    """The job was cancelled between two denoising steps."""


class GenerationFailed(ImagineError):
    """The engine could not make the images."""


class OutOfMemory(GenerationFailed):
    """The device ran out of memory; the cache was emptied and the engine carries on.

    ``fallback``: what the job can still give (an upscale: the plain resize), when it ran out alone.
    """

    def __init__(self, message: str, *, fallback: GenerateResult | None = None) -> None:
        super().__init__(message)
        self.fallback = fallback


class QuotaExceeded(ImagineError):
    """The user has no images left today."""


class QueueFull(ImagineError):
    """The user already has the maximum number of jobs waiting."""


class Forbidden(ImagineError):
    """The user may not do this (not a moderator, blocked, not the job's author)."""
