"""A FHIR Bulk Data server for the tests, on 127.0.0.1 in a thread (http.server).

It follows the IG's asynchronous pattern: `$export` answers 202 with a status URL, the status URL
answers 202 with Retry-After a few times and then the manifest (or, for a failed job, 500 with an
OperationOutcome), and files are served with Range support. Tokens come from SMART Backend
Services: the client assertion is verified with PyJWT against the registered public key. Knobs a
test turns: how many polls stay in progress, whether the job fails, whether the first download of
each file breaks off half-way, and revoking the current tokens (the client then gets a 401).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt


@dataclass
class BulkState:
    public_key: Any = None
    client_id: str = "outreach-test"
    files: dict[str, bytes] = field(default_factory=dict)  # type -> NDJSON
    polls_in_progress: int = 2
    fail_job: bool = False
    break_first_download: bool = False
    throttle_first_kickoff: bool = False
    token_lifetime: int = 300
    tokens: dict[str, float] = field(default_factory=dict)  # token -> expiry (time.time())
    seen_jti: set[str] = field(default_factory=set)
    log: list[str] = field(default_factory=list)  # "METHOD path status"
    kickoff_query: dict[str, list[str]] = field(default_factory=dict)
    polls: int = 0
    broken: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def revoke_tokens(self) -> None:
        self.tokens.clear()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def state(self) -> BulkState:
        return self.server.state

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        # Logged before the body goes out: once the client has the body it may send its next
        # request, whose line must come after this one.
        self.state.log.append(f"{self.command} {urllib.parse.urlsplit(self.path).path} {status}")
        self.end_headers()
        self.wfile.write(data)

    def _outcome(self, status: int, text: str) -> None:
        self._send(
            status,
            {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "processing", "diagnostics": text}],
            },
        )

    def _authorized(self) -> bool:
        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        if self.state.tokens.get(token, 0) > time.time():
            return True
        self._outcome(401, "invalid or expired token")
        return False

    def do_GET(self) -> None:
        parts = urllib.parse.urlsplit(self.path)
        base = f"http://127.0.0.1:{self.server.server_port}"
        if parts.path == "/.well-known/smart-configuration":
            self._send(
                200,
                {
                    "token_endpoint": f"{base}/token",
                    "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                },
            )
        elif parts.path.endswith("/$export"):
            self._kick_off(parts, base)
        elif parts.path.startswith("/status/"):
            self._status(base)
        elif parts.path.startswith("/files/"):
            self._file(parts.path.removeprefix("/files/"))
        else:
            self._outcome(404, "not found")

    def _kick_off(self, parts: urllib.parse.SplitResult, base: str) -> None:
        if not self._authorized():
            return
        if (
            self.headers.get("Prefer") != "respond-async"
            or self.headers.get("Accept") != "application/fhir+json"
        ):
            self._outcome(400, "Prefer: respond-async and Accept: application/fhir+json are required")
            return
        if self.state.throttle_first_kickoff:
            self.state.throttle_first_kickoff = False
            self._send(429, None, {"Retry-After": "1"})
            return
        self.state.kickoff_query = urllib.parse.parse_qs(parts.query)
        self._send(202, None, {"Content-Location": f"{base}/status/job-1"})

    def _status(self, base: str) -> None:
        if not self._authorized():
            return
        state = self.state
        state.polls += 1
        if state.polls <= state.polls_in_progress:
            self._send(202, None, {"Retry-After": "1", "X-Progress": f"{50 * state.polls}% done"})
        elif state.fail_job:
            self._outcome(500, "the export ran out of disk space")
        else:
            output = [{"type": kind, "url": f"{base}/files/{kind}"} for kind in state.files]
            manifest = {
                "transactionTime": "2026-11-23T00:00:00Z",
                "request": f"{base}/Patient/$export",
                "requiresAccessToken": True,
                "output": output,
                "error": [],
            }
            self._send(200, manifest)

    def _file(self, kind: str) -> None:
        if not self._authorized():
            return
        data = self.state.files[kind]
        start = int(self.headers.get("Range", "bytes=0-").removeprefix("bytes=").split("-")[0] or 0)
        if self.state.break_first_download and kind not in self.state.broken and start == 0:
            self.state.broken.add(kind)
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.state.log.append(f"GET /files/{kind} broken")
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if start:
            self._send(206, data[start:], {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})
        else:
            self._send(200, data)

    def do_DELETE(self) -> None:
        if self.path.startswith("/status/") and self._authorized():
            self._send(202)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        if self.path != "/token":
            self._outcome(404, "not found")
            return
        base = f"http://127.0.0.1:{self.server.server_port}"
        try:
            claims = jwt.decode(
                form["client_assertion"][0],
                self.state.public_key,
                algorithms=["RS384", "ES384"],
                audience=f"{base}/token",
                issuer=self.state.client_id,
            )
            assert claims["sub"] == self.state.client_id and claims["jti"] not in self.state.seen_jti
            assert form["grant_type"] == ["client_credentials"]
        except (
            jwt.PyJWTError,
            AssertionError,
            KeyError,
            TypeError,
            ValueError,
        ):  # a key of another type: TypeError
            self._send(401, {"error": "invalid_client", "error_description": "the assertion did not verify"})
            return
        self.state.seen_jti.add(claims["jti"])
        token = f"token-{len(self.state.seen_jti)}"
        self.state.tokens[token] = time.time() + self.state.token_lifetime
        self._send(
            200,
            {
                "access_token": token,
                "token_type": "bearer",
                "expires_in": self.state.token_lifetime,
                "scope": "system/*.read",
            },
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: BulkState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


class BulkServer:
    """Started and stopped by a test fixture; `url` is its base URL."""

    def __init__(self, state: BulkState) -> None:
        self.state = state
        self._server = _Server(state)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> BulkServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
