"""The one small interface the sender talks to, and the three ways a send can go wrong.

The error classes are the contract that keeps invariant 4 ("honest retries") honest: the sender
may resend only when the provider *provably* created nothing (RetryableError); a PermanentError
is recorded with the provider's code; an AmbiguousError means a message may exist and must be
reconciled with `fetch`/`list_to`, never resent blindly; an OperatorError says the account or the
sender is misconfigured, which no message can fix: the sender pauses instead of failing rows.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ProviderMessage:
    """What the provider knows about one message; `num_segments` is None until a sender is chosen."""

    sid: str
    to: str
    status: str
    error_code: int | None
    date_created: dt.datetime | None
    num_segments: int | None
    body: str | None = None  # lets the sweeper tell our message from another one to the same number
    date_updated: dt.datetime | None = None  # when the status last moved (the sweeper records it)


class ProviderError(Exception):
    """Base of the outcomes the sender maps to outbox states."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Refused(ProviderError):
    """An answer that carries the provider's error code and HTTP status (either may be missing)."""

    def __init__(self, code: int | None, http_status: int | None, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = http_status

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, http_status={self.http_status!r}, "
            f"message={self.message!r})"
        )


class RetryableError(_Refused):
    """Nothing was created (rate limited, server error before acceptance, no connection): retry the row."""


class PermanentError(_Refused):
    """The provider refused this message for good (invalid number, opted out, not a mobile...)."""

    def __init__(self, code: int | None, message: str, http_status: int | None = None) -> None:
        super().__init__(code, http_status, message)


class OperatorError(_Refused):
    """The account or the sender's setup refuses every message alike (bad credentials, a from-number
    that cannot text, a missing region permission, a broken Messaging Service): nothing was created.

    Failing the row would be wrong twice over: the patient's number is fine, and the scheduler
    cancels every later step after a failed one, so one misconfiguration would lose whole
    campaigns. The sender puts the row back and holds the sender until a probe succeeds
    (outreach.send.holds).
    """


class AmbiguousError(ProviderError):
    """The request left but no answer came back: a message may or may not exist; reconcile, never resend."""

    def __repr__(self) -> str:
        return f"AmbiguousError(message={self.message!r})"


class Provider(Protocol):
    """An SMS provider as the sender sees it (Twilio, or the console for dry runs)."""

    def send(self, *, to: str, body: str, status_callback: str | None = None) -> ProviderMessage:
        """Create one outbound message to E.164 `to`; `status_callback` None means the configured default."""
        ...

    def fetch(self, sid: str) -> ProviderMessage:
        """Look one message up by sid (PermanentError with code 20404 when it does not exist)."""
        ...

    def list_to(self, to: str, *, since: dt.datetime) -> list[ProviderMessage]:
        """Messages to `to` created at or after `since` (aware UTC), newest first: for reconciliation."""
        ...
