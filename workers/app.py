"""The Celery app: `celery -A workers worker` and `celery -A workers beat`.

Acks are late and prefetch is 1 so a killed worker's task goes back to the queue; the outbox's
claim makes the redelivery harmless. Sending is I/O-bound, so the default pool is threads.
"""

from __future__ import annotations

import logging

from celery import Celery

from outreach.config import get_settings

app = Celery("outreach", include=["workers.tasks"])
app.conf.update(
    broker_url=get_settings().broker_url,
    broker_connection_retry_on_startup=True,
    # Redis re-delivers unacknowledged tasks after this; tasks are short and idempotent anyway.
    broker_transport_options={"visibility_timeout": 3600},
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_ignore_result=True,
    task_default_queue="outreach",
    worker_prefetch_multiplier=1,
    worker_pool="threads",
    worker_concurrency=32,
    worker_hijack_root_logger=False,
    beat_schedule={
        "tick-every-minute": {"task": "outreach.tick", "schedule": 60.0},
        "sweep-every-minute": {"task": "outreach.sweep", "schedule": 60.0},
    },
)


# The twilio client logs every request's headers at INFO (ten lines a message): noise, and a lock
# all sending threads contend for.
logging.getLogger("twilio.http_client").setLevel(logging.WARNING)


def check_broker() -> None:
    """For /healthz: one quick connection attempt; raises when the broker cannot be reached."""
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=2)
