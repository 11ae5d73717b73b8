"""Webhook authenticity (DESIGN.md §7, invariant 8): size limit first, then Twilio's signature.

Nothing about a request is trusted, parsed into the database or even fully read before these
checks pass: a body over the limit is refused from its Content-Length or as soon as the bytes read
exceed it, and a missing or wrong X-Twilio-Signature is refused before any field is looked at.

The checks work on the raw ASGI request (scope, receive), not on a framework's request object: the
webhooks are the service's hot path, and they are served without the framework's per-request layers
(see outreach/apps/web/app.py).
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Mapping
from hashlib import sha1
from typing import Any
from urllib.parse import ParseResult, parse_qsl, urlparse

from starlette.types import Receive, Scope
from twilio.request_validator import add_port, remove_port

MAX_BODY = 64 * 1024
SIGNATURE_HEADER = "X-Twilio-Signature"
FORM_TYPE = "application/x-www-form-urlencoded"

_SIGNATURE_KEY = SIGNATURE_HEADER.lower().encode()


class Rejected(Exception):
    """A request refused with `status` and a one-line `detail` (answered as {"detail": ...})."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class Disconnected(Exception):
    """The client went away before its body arrived: there is no one to answer."""


class Signer:
    """Twilio's request signature: base64 HMAC-SHA1, keyed by the auth token, of the URL Twilio
    called followed by every form field name and value, sorted.

    The same algorithm as `twilio.request_validator.RequestValidator.validate` (form posts, SHA1).
    Twilio signs the URL it was configured with, exactly as typed: so the candidates are the
    configured public URL (scheme, host and any path prefix of OUTREACH_PUBLIC_URL) followed by the
    path and query as requested (a doubled or trailing slash included), each with and without the
    default port as Twilio's validator tries them; and, when the request's Host header names the
    configured host in other letter case, the same with the Host header's spelling. A Host naming
    any other host adds nothing, so a signature made for another site never passes here.
    One HMAC per candidate, from a key state and base URLs prepared once.
    """

    def __init__(self, auth_token: str, public_url: str) -> None:
        self._mac = hmac.new(auth_token.encode("utf-8"), digestmod=sha1)
        parsed = urlparse(public_url.rstrip("/"))
        self._scheme = parsed.scheme
        self._netloc = parsed.netloc.encode("latin-1")
        self._hostname = parsed.hostname or ""  # lower case
        self._prefix = parsed.path
        self._bases = _with_and_without_port(parsed)

    def valid(self, scope: Scope, fields: Mapping[str, list[str]], signature: bytes) -> bool:
        """Whether `signature` signs this request's URL (a candidate of the class doc) and `fields`."""
        tail = url_tail(scope)
        payload = "".join(name + value for name in sorted(fields) for value in sorted(set(fields[name])))
        for base in self._bases + self._host_bases(header(scope, b"host")):
            mac = self._mac.copy()
            mac.update((base + tail + payload).encode("utf-8"))
            if hmac.compare_digest(base64.b64encode(mac.digest()), signature):
                return True
        return False

    def _host_bases(self, host: bytes | None) -> tuple[str, ...]:
        """Base URLs spelled with the request's Host when it is our host in other letter case."""
        if host is None or host == self._netloc:
            return ()
        spelled = host.decode("latin-1")
        try:
            parsed = urlparse(f"{self._scheme}://{spelled}{self._prefix}")
            same = parsed.hostname == self._hostname
        except ValueError:  # a malformed Host (bad port, brackets)
            return ()
        if not same:
            return ()
        return tuple(base for base in _with_and_without_port(parsed) if base not in self._bases)


def _with_and_without_port(parsed: ParseResult) -> tuple[str, ...]:
    return tuple(dict.fromkeys((remove_port(parsed), add_port(parsed))))


def header(scope: Scope, name: bytes) -> bytes | None:
    """A request header's raw value (`name` in lower case, as ASGI servers deliver names)."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def url_tail(scope: Scope) -> str:
    """Path and query of the request as sent (raw, percent-escapes and all): the URL Twilio signed."""
    raw = scope.get("raw_path")
    if raw is not None:
        path = bytes(raw).decode("utf-8", "replace")
    else:  # a server without raw_path: escape as Starlette's URL does
        path = str(scope["path"]).replace("?", "%3F").replace("#", "%23").replace("\\", "%5C")
    query = bytes(scope.get("query_string", b"")).decode()
    return f"{path}?{query}" if query else path


async def read_body(scope: Scope, receive: Receive, limit: int = MAX_BODY) -> bytes:
    """The request body, refusing (413) anything over `limit` without buffering it all."""
    declared = header(scope, b"content-length")
    if declared is not None:
        if not declared.strip().isdigit():  # bytes.isdigit: ASCII digits only
            raise Rejected(400, "Content-Length is not a number")
        if int(declared) > limit:
            raise Rejected(413, f"request body over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Any = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise Rejected(413, f"request body over {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def signed_form(scope: Scope, body: bytes, signer: Signer) -> dict[str, str]:
    """Signature-check a form-encoded Twilio webhook; its fields (last value of a repeated one).

    403 for a missing or wrong signature, 400 when a correctly signed request is not form-encoded
    (Twilio always form-encodes these webhooks) or a field holds a NUL byte (PostgreSQL refuses it).
    """
    content_type = (header(scope, b"content-type") or b"").split(b";")[0].strip().lower()
    is_form = content_type == FORM_TYPE.encode()
    pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True) if is_form else []
    signature = header(scope, _SIGNATURE_KEY)
    if not signature:
        raise Rejected(403, f"missing {SIGNATURE_HEADER}")
    fields: dict[str, list[str]] = {}
    for name, value in pairs:
        fields.setdefault(name, []).append(value)
    if not signer.valid(scope, fields, signature):
        raise Rejected(403, f"{SIGNATURE_HEADER} does not match this request")
    if not is_form:
        raise Rejected(400, f"expected {FORM_TYPE}")
    if any("\x00" in name or "\x00" in value for name, value in pairs):
        raise Rejected(400, "a form field contains a NUL character")
    return dict(pairs)
