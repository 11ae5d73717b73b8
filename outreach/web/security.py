"""Webhook authenticity (DESIGN.md §7, invariant 8): size limit first, then Twilio's signature.

Nothing about a request is trusted, parsed into the database or even fully read before these
checks pass: a body over the limit is refused from its Content-Length or as soon as the bytes read
exceed it, and a missing or wrong X-Twilio-Signature is refused before any field is looked at.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import HTTPException, Request
from starlette.datastructures import ImmutableMultiDict
from twilio.request_validator import RequestValidator

MAX_BODY = 64 * 1024
SIGNATURE_HEADER = "X-Twilio-Signature"
FORM_TYPE = "application/x-www-form-urlencoded"


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The request body, refusing (413) anything over `limit` without buffering it all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise HTTPException(400, "Content-Length is not a number")
        if int(declared) > limit:
            raise HTTPException(413, f"request body over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"request body over {limit} bytes")
    return bytes(body)


def webhook_url(public_url: str, request: Request) -> str:
    """The URL Twilio signed: our public address, not whatever host a proxy forwarded to us."""
    query = request.url.query
    return public_url.rstrip("/") + request.url.path + (f"?{query}" if query else "")


async def signed_form(request: Request, *, auth_token: str, public_url: str) -> ImmutableMultiDict[str, str]:
    """Read, size-check and signature-check a form-encoded Twilio webhook; its fields on success.

    413 for a body over MAX_BODY, 403 for a missing or wrong signature, 400 when a correctly signed
    request is not form-encoded (Twilio always form-encodes these webhooks).
    """
    body = await read_body(request)
    is_form = request.headers.get("content-type", "").split(";")[0].strip().lower() == FORM_TYPE
    pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True) if is_form else []
    form: ImmutableMultiDict[str, str] = ImmutableMultiDict(pairs)
    signature = request.headers.get(SIGNATURE_HEADER)
    if not signature:
        raise HTTPException(403, f"missing {SIGNATURE_HEADER}")
    # The validator reads repeated fields through `getlist`, which starlette's multi-dict provides.
    if not RequestValidator(auth_token).validate(webhook_url(public_url, request), form, signature):
        raise HTTPException(403, f"{SIGNATURE_HEADER} does not match this request")
    if not is_form:
        raise HTTPException(400, f"expected {FORM_TYPE}")
    if any("\x00" in key or "\x00" in value for key, value in pairs):
        raise HTTPException(400, "a form field contains a NUL character")
    return form
