"""SMS providers behind one small interface (base.Provider): Twilio for real, the console for dry runs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from outreach.providers.base import (
    AmbiguousError,
    PermanentError,
    Provider,
    ProviderError,
    ProviderMessage,
    RetryableError,
)

if TYPE_CHECKING:
    from outreach.config import Settings

__all__ = [
    "AmbiguousError",
    "PermanentError",
    "Provider",
    "ProviderError",
    "ProviderMessage",
    "RetryableError",
    "provider_for",
]


def provider_for(settings: Settings | None = None, *, dry_run: bool = False) -> Provider:
    """The provider the sender should use: the console for dry runs, else Twilio (or the sandbox)."""
    if dry_run:
        from outreach.providers.console import ConsoleProvider

        return ConsoleProvider()
    from outreach.providers.twilio import TwilioProvider

    return TwilioProvider(settings)
