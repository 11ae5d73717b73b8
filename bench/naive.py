"""The naive sending pattern, for bench/send.py to compare against: one Celery task per message
that re-reads its row and calls `client.messages.create` synchronously, on a prefork pool, as
Twilio's appointment-reminder samples do.

It is deliberately not the engine's way (no claim, no consent or window check, no rate limit, a new
`twilio.rest.Client` and so a new HTTP connection per message): the benchmark measures what the
engine's batching, thread pool and connection reuse buy over it. Its Celery app, queue and task
name are its own, so it can never pick up the engine's tasks or the engine its.

    celery -A naive worker --pool prefork --concurrency 2 -Q naive     (cwd or PYTHONPATH: bench/)

Configured from the same environment as the engine: OUTREACH_DATABASE_URL, OUTREACH_BROKER_URL,
TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_FROM_NUMBER, OUTREACH_TWILIO_API_URL.
"""

from __future__ import annotations

import os

from celery import Celery
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from twilio.rest import Client

from outreach.clock import utcnow
from outreach.store.models import Message, MessageStatus

QUEUE = "naive"
TASK = "bench.naive_send"

app = Celery("naive", broker=os.environ.get("OUTREACH_BROKER_URL", "redis://127.0.0.1:6379/14"))
app.conf.update(
    task_default_queue=QUEUE,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

# One engine per process, created lazily (after the prefork fork), as a web framework's ORM would.
_engine = None


def _session() -> Session:
    global _engine
    if _engine is None:
        _engine = create_engine(os.environ["OUTREACH_DATABASE_URL"])
    return Session(_engine)


@app.task(name=TASK)  # type: ignore[untyped-decorator]
def naive_send(message_id: int) -> str:
    with _session() as session:
        message = session.get(Message, message_id)
        if message is None:
            return "missing"
        client = Client(os.environ["TWILIO_ACCOUNT_SID"], os.environ["TWILIO_AUTH_TOKEN"])
        api_url = os.environ.get("OUTREACH_TWILIO_API_URL")
        if api_url:  # the sandbox instead of api.twilio.com
            client.region = None
            client.edge = None
            client.api.base_url = api_url.rstrip("/")
        sent = client.messages.create(
            to=message.phone, from_=os.environ["TWILIO_FROM_NUMBER"], body=message.body
        )
        now = utcnow()
        message.provider_sid = sent.sid
        message.provider_status = sent.status
        message.status = MessageStatus.sent
        message.sent_at = now
        message.updated_at = now
        session.commit()
        return "sent"
