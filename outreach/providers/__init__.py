"""SMS providers behind one small interface (base.Provider).

Twilio (twilio.py, the official client) is the one the workers use, built by the process's
runtime from settings (outreach/runtime.py). The console provider (console.py) sends nothing: it is
for tests and for anyone wiring a dry run by hand; no entry point selects it.
"""

from __future__ import annotations

from outreach.providers.base import (
    AmbiguousError,
    OperatorError,
    PermanentError,
    Provider,
    ProviderError,
    ProviderMessage,
    RetryableError,
)

__all__ = [
    "AmbiguousError",
    "OperatorError",
    "PermanentError",
    "Provider",
    "ProviderError",
    "ProviderMessage",
    "RetryableError",
]
