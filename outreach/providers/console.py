"""A provider for tests and hand-wired dry runs: says what would be sent, sends nothing, and does
not print the text.

It prints only the masked number, the body's length and its segment count, so a dry run's output
can be pasted into a ticket without carrying patient information.

No entry point selects it, on purpose: a worker given it would mark rows `sent` with made-up SIDs,
so a configuration slip would look like a working send. Demos go through the real client to the
Twilio-compatible sandbox (outreach/sandbox/) instead.
"""

from __future__ import annotations

import datetime as dt
import secrets
import sys
import threading
from collections.abc import Callable
from typing import TextIO

from outreach.phones import mask
from outreach.providers.base import PermanentError, ProviderMessage
from outreach.segments import count_segments


class ConsoleProvider:
    """Accepts every message, prints one line per send, and remembers them for `fetch`/`list_to`."""

    def __init__(
        self, stream: TextIO | None = None, *, clock: Callable[[], dt.datetime] | None = None
    ) -> None:
        self._stream = stream
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._lock = threading.Lock()
        self._sent: dict[str, ProviderMessage] = {}

    def send(self, *, to: str, body: str, status_callback: str | None = None) -> ProviderMessage:
        segments = count_segments(body).segments
        message = ProviderMessage(
            sid="SM" + secrets.token_hex(16),
            to=to,
            status="queued",
            error_code=None,
            date_created=self._clock(),
            num_segments=segments,
            body=body,
        )
        with self._lock:
            self._sent[message.sid] = message
        stream = self._stream or sys.stdout
        print(
            f"[dry run] {message.sid} to {mask(to)}: {len(body)} characters, {segments} segment(s)",
            file=stream,
            flush=True,
        )
        return message

    def fetch(self, sid: str) -> ProviderMessage:
        with self._lock:
            found = self._sent.get(sid)
        if found is None:
            raise PermanentError(20404, f"no message {sid} was sent in this dry run", 404)
        return found

    def list_to(self, to: str, *, since: dt.datetime) -> list[ProviderMessage]:
        with self._lock:
            found = [m for m in self._sent.values() if m.to == to]
        return sorted(
            (m for m in found if m.date_created is None or m.date_created >= since),
            key=lambda m: m.date_created or since,
            reverse=True,
        )
