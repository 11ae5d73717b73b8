"""The global send rate (DESIGN.md §7.6): GCRA arithmetic, and the cap across processes and threads."""

from __future__ import annotations

import math
import multiprocessing
import random
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

import pytest
import redis

from outreach.config import get_settings
from outreach.send.ratelimit import (
    JITTER_MARGIN,
    LocalRateLimiter,
    NoLimit,
    RedisRateLimiter,
    limiter_for,
    rate_key,
)

RATE = 20


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as connection:
        yield connection


@pytest.fixture
def key(client: redis.Redis) -> Iterator[str]:
    name = rate_key(f"test-{uuid.uuid4().hex}")
    client.delete(name)
    yield name
    client.delete(name)


def server_now(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return float(seconds) + micros / 1_000_000


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- arithmetic ----------------------------------------------------------------------------------


def test_grant_and_deny_at_rate_2(client: redis.Redis, key: str) -> None:
    limiter = RedisRateLimiter(client, key, rate=2)
    assert limiter.attempt(now=1000.0) == (0.0, 1000.0)
    assert limiter.attempt(now=1000.2).wait == pytest.approx(0.3, abs=1e-6)
    # A denial consumes nothing: asking again at the same instant gives the same answer.
    assert limiter.attempt(now=1000.2).wait == pytest.approx(0.3, abs=1e-6)
    assert limiter.attempt(now=1000.5).wait == 0.0
    assert limiter.attempt(now=1000.999999).wait == pytest.approx(0.000001, abs=1e-9)


def test_a_message_longer_than_the_burst_is_granted_and_delays_the_next(
    client: redis.Redis, key: str
) -> None:
    limiter = RedisRateLimiter(client, key, rate=1)
    assert limiter.attempt(3, now=50.0).wait == 0.0  # idle sender: a 3-segment message goes now
    assert limiter.attempt(1, now=51.0).wait == pytest.approx(2.0)  # ...and costs 3 s
    assert limiter.attempt(1, now=52.999).wait == pytest.approx(0.001)
    assert limiter.attempt(1, now=53.0).wait == 0.0
    assert limiter.attempt(2, now=53.5).wait == pytest.approx(0.5)  # a big one waits for idle too


def test_burst_allows_that_many_at_once(client: redis.Redis, key: str) -> None:
    limiter = RedisRateLimiter(client, key, rate=1, burst=3)
    assert [limiter.attempt(now=10.0).wait for _ in range(4)] == [0.0, 0.0, 0.0, 1.0]
    assert limiter.attempt(now=11.0).wait == 0.0
    assert limiter.attempt(2, now=11.0).wait == pytest.approx(2.0)


def test_interval_is_rounded_up_so_a_second_never_holds_an_extra_token(client: redis.Redis, key: str) -> None:
    limiter = RedisRateLimiter(client, key, rate=3)  # 1/3 s is 333333.33 us: rounded up to 333334
    now = 0.0
    granted = []
    while now < 1.0:
        wait = limiter.attempt(now=now).wait
        if wait == 0.0:
            granted.append(now)
        now += wait
    assert len(granted) == 3


def test_redis_and_local_limiters_agree(client: redis.Redis, key: str) -> None:
    """The Lua script and the in-process class are one algorithm: same answers on a random trace
    of grant-now-or-deny attempts and reservations."""
    clock = FakeClock(5000.0)
    shared = RedisRateLimiter(client, key, rate=7, burst=2)
    local = LocalRateLimiter(rate=7, burst=2, clock=clock)
    rng = random.Random(42)
    seen = set()
    for _ in range(600):
        clock.now = round(clock.now + rng.choice([0.0, 0.01, 0.05, 0.1, 0.3, 1.0, 2.0]), 6)
        tokens, max_wait = rng.choice([1, 1, 1, 2, 3]), rng.choice([None, 0.0, 0.2, 1.0, 5.0])
        if max_wait is None:
            ours, theirs = local.attempt(tokens), shared.attempt(tokens, now=clock.now)
            seen.add(("granted now" if ours.wait == 0.0 else "denied", "attempt"))
        else:
            ours, theirs = local.reserve(tokens, max_wait), shared.reserve(tokens, max_wait, now=clock.now)
            seen.add(("booked" if ours.granted else "too far", "reserve"))
        assert ours == theirs
    assert len(seen) == 4  # every kind of answer came up


def test_reservations_book_consecutive_slots_and_never_overbook(client: redis.Redis, key: str) -> None:
    limiter = RedisRateLimiter(client, key, rate=2)
    assert limiter.reserve(1, 10, now=100.0) == (True, 0.0, 100.0)
    assert limiter.reserve(1, 10, now=100.0) == (True, 0.5, 100.0)
    assert limiter.reserve(1, 10, now=100.1).wait == pytest.approx(0.9)
    # Too far away: nothing is booked, so the same question gets the same answer.
    assert limiter.reserve(1, 1.0, now=100.1) == (False, pytest.approx(1.4), 100.1)
    assert limiter.reserve(1, 1.0, now=100.1) == (False, pytest.approx(1.4), 100.1)
    assert limiter.reserve(2, 1.4, now=100.1) == (True, pytest.approx(1.4), 100.1)
    assert limiter.attempt(now=101.5).wait == pytest.approx(1.0)  # the 2-segment slot costs 1 s


def test_server_time_is_used_when_no_time_is_given(client: redis.Redis, key: str) -> None:
    limiter = RedisRateLimiter(client, key, rate=1)
    future = server_now(client) + 1000
    assert limiter.attempt(now=future).wait == 0.0
    # Whatever this machine's clock says, the wait is measured on the server's.
    assert 999 < limiter.try_acquire() <= 1001


def test_state_expires_once_idle(client: redis.Redis, key: str) -> None:
    RedisRateLimiter(client, key, rate=1).try_acquire(5)
    assert 0 < client.pttl(key) <= 6000


def test_acquire_times_out_without_waiting_or_consuming(client: redis.Redis, key: str) -> None:
    limiter = RedisRateLimiter(client, key, rate=0.01)  # one token per 100 s
    limiter.acquire()
    with pytest.raises(TimeoutError):
        limiter.acquire(timeout=5)
    assert limiter.try_acquire() > 95


def test_local_acquire_times_out_without_consuming() -> None:
    clock = FakeClock(100.0)
    limiter = LocalRateLimiter(rate=1, clock=clock)
    assert limiter.acquire() == 100.0
    with pytest.raises(TimeoutError):
        limiter.acquire(timeout=0.5)
    clock.now = 101.0
    assert limiter.try_acquire() == 0.0


def test_bad_arguments_are_rejected(client: redis.Redis, key: str) -> None:
    with pytest.raises(ValueError, match="rate"):
        RedisRateLimiter(client, key, rate=0)
    with pytest.raises(ValueError, match="burst"):
        LocalRateLimiter(rate=1, burst=0.5)
    with pytest.raises(ValueError, match="tokens"):
        LocalRateLimiter(rate=1).try_acquire(0)


def test_limiter_for_shares_through_redis_when_there_is_one(
    client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUTREACH_SEND_RATE", "5")
    get_settings.cache_clear()
    sender = f"+1617555{uuid.uuid4().int % 10000:04d}"
    shared = limiter_for(get_settings(), sender, client)
    assert isinstance(shared, RedisRateLimiter)
    assert shared.key == f"outreach:rate:{sender}" and shared.rate == 5 * JITTER_MARGIN
    client.delete(shared.key)
    local = limiter_for(get_settings(), sender, None)
    assert isinstance(local, LocalRateLimiter) and local.rate == 5 * JITTER_MARGIN
    assert NoLimit().try_acquire(50) == 0.0


# --- the cap under concurrency --------------------------------------------------------------------


def _assert_capped(grants: list[float], rate: int) -> None:
    """No one-second bucket sees more than `rate` grants; sustained throughput is close to it."""
    busiest = max(Counter(math.floor(at) for at in grants).values())
    assert busiest <= rate, f"{busiest} grants in one second at rate {rate}"
    span = max(grants) - min(grants)
    throughput = (len(grants) - 1) / span
    assert throughput <= rate * (1 + 1e-6)  # reserved slots are exactly 1/rate apart: float error only
    assert throughput >= 0.7 * rate, f"only {throughput:.1f}/s at rate {rate}"


def _send_for(
    redis_url: str, key: str, seconds: float, barrier: Barrier, results: Queue[list[float]]
) -> None:
    """One worker process: take tokens until `seconds` of server time have passed."""
    with redis.Redis.from_url(redis_url) as connection:
        limiter = RedisRateLimiter(connection, key, rate=RATE)
        barrier.wait()
        stop = server_now(connection) + seconds
        grants = []
        while True:
            at = limiter.acquire(timeout=10)
            grants.append(at)
            if at >= stop:
                break
    results.put(grants)


def test_four_processes_share_one_rate(redis_url: str, key: str) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    results: Queue[list[float]] = context.Queue()
    processes = [
        context.Process(target=_send_for, args=(redis_url, key, 2.5, barrier, results)) for _ in range(4)
    ]
    for process in processes:
        process.start()
    per_process = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=10)
        assert process.exitcode == 0
    assert all(per_process)  # every process got a share of the one rate
    _assert_capped([at for grants in per_process for at in grants], RATE)


def test_threads_share_a_local_limiter() -> None:
    limiter = LocalRateLimiter(rate=RATE)
    grants: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def send() -> None:
        start.wait()
        at = limiter.acquire(timeout=10)
        stop = at + 2.0
        while True:
            with lock:
                grants.append(at)
            if at >= stop:
                break
            at = limiter.acquire(timeout=10)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    _assert_capped(grants, RATE)
