"""The long-lived parts a sending process needs, built once per process from settings.

Workers are threads: the engine and limiter are shared (both thread-safe); the Twilio client is
per thread, because a `requests.Session` is not promised to be.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from sqlalchemy import Engine

from outreach.campaigns import CampaignFile, DirectoryStamp, directory_stamp, load_campaigns
from outreach.clock import utcnow
from outreach.config import Settings, get_settings
from outreach.providers.base import Provider
from outreach.send.holds import sender_key
from outreach.send.ratelimit import RateLimiter, limiter_for
from outreach.store.db import engine_for


@dataclass
class Runtime:
    settings: Settings
    clock: Callable[[], dt.datetime] = utcnow  # tests running a worker in-process inject their time
    _local: threading.local = field(default_factory=threading.local, repr=False)
    _campaigns: tuple[DirectoryStamp, dict[str, CampaignFile]] | None = field(default=None, repr=False)

    @cached_property
    def engine(self) -> Engine:
        return engine_for(self.settings.database_url)

    @cached_property
    def limiter(self) -> RateLimiter:
        client = None
        if self.settings.broker_url.startswith(("redis://", "rediss://")):
            import redis

            client = redis.Redis.from_url(self.settings.broker_url)
        return limiter_for(self.settings, self.sender_id, client)

    @property
    def sender_id(self) -> str:
        """Who sends, as the rate limit counts it: the messaging service SID, else the from-number.

        Named for what it is, a string key, not the `send.batch.Sender` that does the sending; the
        same key names the sender's holds (outreach.send.holds)."""
        return sender_key(self.settings)

    @property
    def provider(self) -> Provider:
        provider: Provider | None = getattr(self._local, "provider", None)
        if provider is None:
            from outreach.providers.twilio import TwilioProvider

            provider = TwilioProvider(self.settings)
            self._local.provider = provider
        return provider

    @property
    def campaigns(self) -> dict[str, CampaignFile]:
        """Campaign files, re-read when the directory changes so edits need no worker restart: a
        new file (.yaml or .yml), an edited one or a deleted one is seen on the next access."""
        directory = Path(self.settings.campaigns_dir)
        stamp = directory_stamp(directory)  # before loading: an edit during the load shows next time
        if self._campaigns is None or self._campaigns[0] != stamp:
            self._campaigns = (stamp, load_campaigns(directory, settings=self.settings))
        return self._campaigns[1]


_runtime: Runtime | None = None
_lock = threading.Lock()


def get_runtime() -> Runtime:
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = Runtime(get_settings())
        return _runtime


def reset_runtime() -> None:
    """Forget the process's runtime (tests change settings between cases)."""
    global _runtime
    with _lock:
        _runtime = None
