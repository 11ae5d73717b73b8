"""SMART Backend Services: an access token for a system (no user), as Bulk Data servers require.

The client proves who it is with a short-lived JWT signed by its private key (`private_key_jwt`,
RS384 for an RSA key, ES384 for a P-384 EC key), posted to the token endpoint the server
advertises in `.well-known/smart-configuration`. Tokens expire (often in five minutes, shorter
than a large export), so one is fetched again when it is about to expire or when the server
answers 401: an export must not fail half-way for want of a fresh token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from outreach.errors import UserError

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SCOPE = "system/*.read"
_EARLY = 30.0  # seconds before expiry when a token is replaced
_TIMEOUT = 30.0


def load_key(path: Path) -> tuple[Any, str]:
    """The private key at `path` and the algorithm it signs with; a user error names the fix."""
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise UserError(f"--key {path}: cannot read it ({exc.strerror})") from None
    except (ValueError, TypeError):
        raise UserError(
            f"--key {path}: not an unencrypted PEM private key; export it with openssl pkcs8 -nocrypt"
        ) from None
    if isinstance(key, rsa.RSAPrivateKey):
        return key, "RS384"
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1":
        return key, "ES384"
    raise UserError(
        f"--key {path}: SMART Backend Services signs with RSA (RS384) or EC P-384 (ES384) keys; use one"
    )


def key_id(key: Any) -> str:
    """The RFC 7638 thumbprint of the public key: the `kid` a server finds the key by in its JWKS."""
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        numbers = public.public_numbers()
        members = {"e": _b64int(numbers.e), "kty": "RSA", "n": _b64int(numbers.n)}
    else:
        point = public.public_numbers()
        members = {"crv": "P-384", "kty": "EC", "x": _b64int(point.x, 48), "y": _b64int(point.y, 48)}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()


def _b64int(value: int, size: int | None = None) -> str:
    raw = value.to_bytes(size or (value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class SmartAuth:
    """Bearer tokens for `client_id`, fetched with a signed assertion and replaced before expiry."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        key_path: Path,
        session: requests.Session,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self.key, self.algorithm = load_key(key_path)
        self.kid = key_id(self.key)
        self.session = session
        self.clock = clock
        self._endpoint: str | None = None
        self._token: str | None = None
        self._expires = 0.0

    def header(self) -> dict[str, str]:
        """The Authorization header, with a token that has at least _EARLY seconds left."""
        if self._token is None or self.clock() >= self._expires - _EARLY:
            self._token, lifetime = self._fetch()
            self._expires = self.clock() + lifetime
        return {"Authorization": f"Bearer {self._token}"}

    def expire(self) -> None:
        """The server refused the token (401): fetch another next time."""
        self._token = None

    def token_endpoint(self) -> str:
        if self._endpoint is None:
            url = f"{self.base_url}/.well-known/smart-configuration"
            response = http_request(self.session, "GET", url, headers={"Accept": "application/json"})
            endpoint = json_body(response).get("token_endpoint") if response.ok else None
            if not isinstance(endpoint, str):
                raise UserError(
                    f"{url}: no token_endpoint (HTTP {response.status_code}); is --base-url a SMART server?"
                )
            self._endpoint = endpoint
        return self._endpoint

    def assertion(self) -> str:
        """The client's signed proof: iss = sub = client id, aud = token endpoint, 5 minutes, one use."""
        audience = self.token_endpoint()
        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": audience,
            "exp": now + 300,
            "jti": str(uuid.uuid4()),
        }
        return jwt.encode(claims, self.key, algorithm=self.algorithm, headers={"kid": self.kid, "typ": "JWT"})

    def _fetch(self) -> tuple[str, float]:
        form = {
            "grant_type": "client_credentials",
            "scope": SCOPE,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.assertion(),
        }
        endpoint = self.token_endpoint()
        response = http_request(
            self.session, "POST", endpoint, data=form, headers={"Accept": "application/json"}
        )
        body = json_body(response)
        token = body.get("access_token")
        if not response.ok or not isinstance(token, str):
            why = body.get("error_description") or body.get("error") or f"HTTP {response.status_code}"
            raise UserError(
                f"{endpoint}: no access token ({why}); "
                "check --client-id and that the server has --key's public key"
            )
        lifetime = body.get("expires_in")
        return token, float(lifetime) if isinstance(lifetime, int | float) else 300.0


def http_request(session: requests.Session, method: str, url: str, **kwargs: Any) -> requests.Response:
    """One HTTP request; a server that is not there is a user error naming the URL."""
    try:
        return session.request(method, url, timeout=_TIMEOUT, **kwargs)
    except requests.RequestException as exc:
        raise UserError(
            f"{url}: cannot reach the server ({exc.__class__.__name__}); check --base-url"
        ) from None


def json_body(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
