"""Run the sandbox: in a background thread for tests and benchmarks, or in the foreground for the CLI."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn

from outreach.sandbox.app import create_app
from outreach.sandbox.state import (
    DEFAULT_ACCOUNT_SID,
    DEFAULT_AUTH_TOKEN,
    ReplyPlanner,
    SandboxConfig,
    SandboxState,
)

_START_TIMEOUT_S = 15.0


class SandboxServer:
    """A Twilio-compatible server on `host:port` (port 0: a free one; see `.url` after `start()`)."""

    def __init__(
        self,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        config: SandboxConfig | None = None,
        replies: ReplyPlanner | None = None,
    ) -> None:
        self.state = SandboxState(account_sid, auth_token, config, replies=replies)
        self.host = host
        self.port = port
        self._stopping: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def account_sid(self) -> str:
        return self.state.account_sid

    @property
    def auth_token(self) -> str:
        return self.state.auth_token

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _uvicorn(self) -> uvicorn.Server:
        # asyncio primitives bind to a loop on first use, so a fresh event per run of the server.
        self._stopping = asyncio.Event()
        config = uvicorn.Config(
            create_app(self.state, stopping=self._stopping),
            log_level="warning",
            access_log=False,  # request lines carry phone numbers (list filters)
            lifespan="on",
            timeout_keep_alive=75,  # outlive clients' pooled connections: fewer stale-socket races
            timeout_graceful_shutdown=2,
            backlog=4096,
        )
        return uvicorn.Server(config)

    def _bind(self) -> None:
        # IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on sockets that say they are
        # TCP, and without it every keep-alive answer waits ~40 ms for the client's delayed ACK.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._socket = sock
        self._server = self._uvicorn()

    def start(self) -> SandboxServer:
        """Bind now (so `.url` is final), serve from a daemon thread, return once requests are answered."""
        self._bind()
        assert self._server is not None
        self._thread = threading.Thread(target=self._serve, name=f"sandbox:{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the sandbox did not start on {self.url}")
            time.sleep(0.01)
        return self

    def _serve(self) -> None:
        assert self._server is not None and self._socket is not None
        asyncio.run(self._main(self._server, self._socket))

    async def _main(self, server: uvicorn.Server, sock: socket.socket) -> None:
        self._loop = asyncio.get_running_loop()
        await server.serve(sockets=[sock])

    def serve_forever(self) -> None:
        """Foreground mode (the CLI): binds like `start` and blocks until Ctrl-C."""
        self._bind()
        self._serve()

    def stop(self) -> None:
        if self._server is None:
            return
        if self._loop is not None and self._stopping is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._server = None
        self._thread = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- the Python control API (same as the /_sandbox endpoints) ----------------------------------

    def messages(self) -> list[dict[str, Any]]:
        return self.state.messages()

    def inbound(self) -> list[dict[str, str]]:
        return self.state.inbound()

    def stats(self) -> dict[str, Any]:
        return self.state.stats()

    def configure(self, **changes: Any) -> SandboxConfig:
        return self.state.configure(**changes)

    def reset(self) -> None:
        self.state.reset()
