"""The global send rate (DESIGN.md §7.6): segments per second per sender, across every worker.

Twilio queues what a sender submits beyond its rate and drops what has queued too long, so the
limit must hold for all worker processes on all machines together; Celery's `rate_limit` is per
worker and cannot. The shared state is one Redis key per sender holding a GCRA "theoretical
arrival time" (TAT), updated by one Lua script so that check-and-update is atomic, with Redis's own
clock so machines whose clocks disagree still share one timeline.

GCRA with rate R and burst B: each token costs T = 1/R seconds of TAT. A request for n tokens is
granted when `now >= TAT - (B - min(n, B)) * T`, and then TAT becomes `max(TAT, now) + n * T`.
With n <= B this is the textbook rule; the `min` lets a request larger than the burst through
once the sender is idle, and its whole cost pushes the next grant back (a 3-segment message at
rate 1 makes the next one wait 3 s), which is how Twilio's own queue drains it. A denied request
consumes nothing. Times are integer microseconds, and T is rounded up, so float error can never
let an extra token into a second.

A blocking `acquire` reserves: when the next slot is at most `timeout` away, the script books it
at once (TAT moves as if granted at that slot) and names the wait; the caller sleeps exactly that
long and sends. Waiting callers therefore queue in slot order instead of polling and racing for
each freed slot, so no slot goes unused and the achieved rate is the configured one.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:
    import redis

    from outreach.config import Settings

_MICROS = 1_000_000

# KEYS[1] the sender's TAT key; ARGV: interval (us per token), burst, tokens, now (us, "" for server
# TIME), longest wait to reserve (us or "inf"; "" for none: grant now or deny).
# Returns {granted (1/0), wait in us until the slot, now in us}. Numbers are written with %d: Redis
# would otherwise format a Lua double with too few digits for a microsecond timestamp.
_GCRA_LUA = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tokens = tonumber(ARGV[3])
local now
if ARGV[4] ~= '' then
  now = tonumber(ARGV[4])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local max_wait = 0
if ARGV[5] == 'inf' then max_wait = math.huge elseif ARGV[5] ~= '' then max_wait = tonumber(ARGV[5]) end
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local wait = tat - math.floor((burst - math.min(tokens, burst)) * interval) - now
if wait < 0 then wait = 0 end
if wait > max_wait then
  return {0, wait, now}
end
local new_tat = tat + tokens * interval
local ttl_ms = math.ceil((new_tat - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', string.format('%d', ttl_ms))
return {1, wait, now}
"""


class Grant(NamedTuple):
    """One decision: `wait` is 0.0 when granted, else the seconds until it could be; `at` is the
    limiter's clock at the decision (Redis server time for the shared limiter), in seconds."""

    wait: float
    at: float


class Reservation(NamedTuple):
    """A booked slot (`granted`), `wait` seconds after `at` on the limiter's clock; when not
    granted, `wait` is how far away the next slot is and nothing was booked."""

    granted: bool
    wait: float
    at: float


class RateLimiter(Protocol):
    def acquire(self, tokens: int = 1, *, timeout: float | None = None) -> float:
        """Block until `tokens` are granted; return the limiter-clock time of the grant.
        Raise TimeoutError, without consuming anything, when that would take longer than `timeout`."""
        ...

    def try_acquire(self, tokens: int = 1) -> float:
        """0.0 when granted now, else the seconds to wait (and nothing consumed)."""
        ...


def _interval_us(rate: float, burst: float) -> int:
    if not rate > 0:
        raise ValueError("rate must be positive")
    if not burst >= 1:
        raise ValueError("burst must be at least 1")
    return math.ceil(_MICROS / rate)


def _check_tokens(tokens: int) -> None:
    if tokens < 1:
        raise ValueError("tokens must be at least 1")


def _acquire(reserve: Callable[[int, float], Reservation], tokens: int, timeout: float | None) -> float:
    """Book the next slot within `timeout` and sleep until it comes; the slot is ours alone."""
    booked = reserve(tokens, math.inf if timeout is None else max(timeout, 0.0))
    if not booked.granted:
        raise TimeoutError(f"rate limit: {tokens} token(s) not available within {timeout} s")
    if booked.wait > 0:
        time.sleep(booked.wait)
    return booked.at + booked.wait


class RedisRateLimiter:
    """The shared limiter: every process constructing it with the same key shares one rate."""

    def __init__(self, client: redis.Redis, key: str, rate: float, burst: float = 1.0) -> None:
        self.key = key
        self.rate = rate
        self.burst = burst
        self._interval = _interval_us(rate, burst)
        self._script = client.register_script(_GCRA_LUA)

    def attempt(self, tokens: int = 1, *, now: float | None = None) -> Grant:
        """One atomic grant-now-or-deny decision. `now` (seconds) replaces the server clock, for
        tests of the arithmetic; in service it is always left to Redis."""
        booked = self.reserve(tokens, 0.0, now=now)
        return Grant(0.0 if booked.granted else booked.wait, booked.at)

    def reserve(self, tokens: int, max_wait: float, *, now: float | None = None) -> Reservation:
        """Book the next slot if it is at most `max_wait` seconds away (atomic, one round trip)."""
        _check_tokens(tokens)
        now_arg = "" if now is None else str(round(now * _MICROS))
        max_wait_arg = "inf" if math.isinf(max_wait) else str(math.floor(max_wait * _MICROS))
        granted, wait_us, now_us = self._script(
            keys=[self.key], args=[self._interval, repr(float(self.burst)), tokens, now_arg, max_wait_arg]
        )
        return Reservation(bool(granted), int(wait_us) / _MICROS, int(now_us) / _MICROS)

    def try_acquire(self, tokens: int = 1) -> float:
        return self.attempt(tokens).wait

    def acquire(self, tokens: int = 1, *, timeout: float | None = None) -> float:
        return _acquire(self.reserve, tokens, timeout)


class LocalRateLimiter:
    """The same GCRA in one process (threads share it), for the embedded demo without Redis."""

    def __init__(
        self, rate: float, burst: float = 1.0, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._interval = _interval_us(rate, burst)
        self._clock = clock
        self._lock = threading.Lock()
        self._tat = 0

    def attempt(self, tokens: int = 1) -> Grant:
        booked = self.reserve(tokens, 0.0)
        return Grant(0.0 if booked.granted else booked.wait, booked.at)

    def reserve(self, tokens: int, max_wait: float) -> Reservation:
        _check_tokens(tokens)
        with self._lock:
            now = round(self._clock() * _MICROS)
            tat = max(self._tat, now)
            wait = max(tat - math.floor((self.burst - min(tokens, self.burst)) * self._interval) - now, 0)
            if wait > max_wait * _MICROS:
                return Reservation(False, wait / _MICROS, now / _MICROS)
            self._tat = tat + tokens * self._interval
            return Reservation(True, wait / _MICROS, now / _MICROS)

    def try_acquire(self, tokens: int = 1) -> float:
        return self.attempt(tokens).wait

    def acquire(self, tokens: int = 1, *, timeout: float | None = None) -> float:
        return _acquire(self.reserve, tokens, timeout)


class NoLimit:
    """Grants everything at once: benchmarks measure the rest of the pipeline with it."""

    def try_acquire(self, tokens: int = 1) -> float:
        return 0.0

    def acquire(self, tokens: int = 1, *, timeout: float | None = None) -> float:
        return time.monotonic()


def rate_key(sender: str) -> str:
    return f"outreach:rate:{sender}"


# Tokens leave the limiter exactly 1/R apart, but reach the provider with a few milliseconds of
# network and scheduling jitter; at exactly R, one late request makes some one-second window at the
# provider hold R + 1. Spacing tokens 2% wider absorbs 20 ms of jitter per second and still
# achieves 0.98 R.
JITTER_MARGIN = 0.98


def limiter_for(settings: Settings, sender: str, redis_client: redis.Redis | None) -> RateLimiter:
    """The limiter a worker uses for `sender` (a from-number or messaging service SID): shared
    through Redis when there is one, else in-process (only correct for a single process)."""
    rate = settings.send_rate * JITTER_MARGIN
    if redis_client is None:
        return LocalRateLimiter(rate)
    return RedisRateLimiter(redis_client, rate_key(sender), rate)
