"""The Celery app: `celery -A workers worker` and `celery -A workers beat`.

Importing this module reads no settings. The broker URL comes from outreach's settings when Celery
first needs its configuration (a worker or beat starting, the first task sent, a health check),
through the promise given to `app.add_defaults` below. So `import workers` never fails on a
malformed OUTREACH_* variable (the CLI and the web app import it to dispatch), and a process that
sets its environment after the import (the demo, the tests) still gets the broker it chose.

Why a promise to `add_defaults` and not the `on_configure` signal: Celery's signals log a
receiver's exception and carry on, so a malformed setting would leave the broker at Celery's own
default (amqp://localhost) instead of stopping with the variable's name. The promise is evaluated
at the same moment, and its UserError reaches whoever needed the configuration. Its values rank
below anything set on `app.conf` (the demo's in-memory broker) and below CELERY_BROKER_URL, as a
default should.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click
from celery import Celery

from outreach.config import get_settings
from outreach.errors import UserError

# The tasks live in workers/tasks.py under explicit names (outreach.send_messages, outreach.tick,
# outreach.sweep); `include` makes every worker import that module when it starts.
app = Celery("outreach", include=["workers.tasks"])
ENQUEUE_EVERY_S = 5.0
app.conf.update(
    # A worker started before Redis is up keeps trying to connect instead of exiting (Celery 6 will
    # stop retrying the first connection unless told to).
    broker_connection_retry_on_startup=True,
    # How a killed worker's tasks come back. With late acks (below) a task stays "unacknowledged"
    # in Redis from its delivery to a worker until it has run; Redis has no idea whether that
    # worker still lives, so every live worker scans, every `unacked_restore_interval` seconds
    # (`unacked_restore_throttle` 1: each scan really reads Redis, one small ZRANGE), for tasks
    # unacknowledged longer than `visibility_timeout` and puts them back on the queue.
    #
    # The timeout is set against the longest a send task runs: its rows are claimed CLAIM_CHUNK at
    # a time and each claim lasts at most CLAIM_LEASE_S (20 s, outreach/send/batch.py), so a task
    # of 20 ids takes seconds at a normal rate and about 40 s at most when it waits for rate tokens.
    # A task that outlives the timeout anyway is simply run a second time, which is harmless: the
    # outbox's claim lets exactly one run send each row, the other finds it taken. So the timeout
    # is a trade between waste and recovery time, not a correctness bound, and 40 s brings a dead
    # worker's unstarted rows back within 45 s (tests/test_workers.py measures it). The rows it
    # had claimed come back through the sweeper (OUTREACH_SWEEP_SENDING_AFTER + SWEEP_EVERY).
    # The outreach engine never uses countdown/eta (DESIGN.md §7.5), which a short visibility
    # timeout would run twice.
    broker_transport_options={
        "visibility_timeout": 40,
        "unacked_restore_interval": 5,
        "unacked_restore_throttle": 1,
    },
    # Acknowledge a task after it ran, not when it arrived: a worker killed mid-task leaves the
    # message unacknowledged, so it is delivered again instead of lost (DESIGN.md §7.5).
    task_acks_late=True,
    # With late acks Celery still acknowledges a task whose worker process died under it (killed,
    # out of memory); this puts it back on the queue instead.
    task_reject_on_worker_lost=True,
    # Tasks report through the database (the outbox and its statuses); nothing reads a result backend.
    task_ignore_result=True,
    # One named queue that the dispatchers (workers/tasks.py, the benchmarks) and the workers share.
    task_default_queue="outreach",
    # At most one unacknowledged task per thread (Celery's default is four): with late acks a task
    # reserved but not started is held from every other worker, so a deeper prefetch lets one busy
    # worker sit on sends that idle workers could run, and redeliver all of them late if it dies.
    # With a thread pool and one per thread, every reserved task is a running task: a task never
    # waits in a worker's buffer long enough to outlive the visibility timeout unstarted.
    worker_prefetch_multiplier=1,
    # Sending is I/O-bound (waiting on Twilio and on the rate limiter), so threads, not processes:
    # one process shares the database pool, the limiter and the HTTP connections (outreach/runtime.py).
    worker_pool="threads",
    # Threads per worker process: enough requests in flight to keep a sender's rate busy through
    # Twilio's latency. The database pool is sized to match (outreach/store/db.py).
    worker_concurrency=32,
    # Keep the process's own logging set-up (the CLI's, uvicorn's, an operator's); Celery would
    # otherwise replace the root logger's handlers with its own.
    worker_hijack_root_logger=False,
)


class SettingError(UserError, click.ClickException):
    """A malformed setting met while Celery configures itself. Still a UserError for whoever
    needed the configuration; and, as a click error, `celery -A workers worker|beat` (a click
    program) prints it as one line and exits 2 instead of a traceback (DESIGN.md §4)."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        print(f"error: {self.message}", file=file or sys.stderr)


def _from_settings() -> dict[str, Any]:
    """The settings-dependent options, read when Celery first needs its configuration."""
    try:
        settings = get_settings()
    except UserError as exc:
        raise SettingError(str(exc)) from None
    return {
        "broker_url": settings.broker_url,
        # `celery -A workers beat`: a scheduler pass a minute (planned by one task per shard),
        # enqueueing every ENQUEUE_EVERY_S and a sweep every
        # OUTREACH_SWEEP_EVERY (15 s by default: the rows a killed worker had claimed come back
        # within SWEEP_SENDING_AFTER + SWEEP_EVERY). Both are idempotent, so a second beat (or a
        # manual `outreach tick` or `outreach sweep`) is harmless.
        "beat_schedule": {
            "tick-every-minute": {"task": "outreach.tick", "schedule": 60.0},
            # Due rows are handed to the workers every few seconds, apart from planning, so a
            # row that comes due while shards are still planning is not held back (DESIGN.md §10).
            "enqueue": {"task": "outreach.enqueue", "schedule": ENQUEUE_EVERY_S},
            "sweep": {"task": "outreach.sweep", "schedule": settings.sweep_every.total_seconds()},
            # The saved report the reports page reads (outreach/outcomes/snapshots.py).
            "refresh-report": {
                "task": "outreach.refresh_report",
                "schedule": settings.report_refresh_every.total_seconds(),
            },
        },
    }


app.add_defaults(_from_settings)


# The twilio client logs every request's headers at INFO (ten lines a message): noise, and a lock
# all sending threads contend for.
logging.getLogger("twilio.http_client").setLevel(logging.WARNING)


def check_broker() -> None:
    """For /healthz: one quick connection attempt; raises when the broker cannot be reached."""
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=2)
