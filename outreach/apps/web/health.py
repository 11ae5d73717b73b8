"""`/healthz`: a list of named checks, each answering (ok, detail), and what they add up to.

Health must tell the truth an operator and a load balancer act on: a web that answers "ok" and then
fails every webhook (a database without tables, say) is worse than one that says it is down. So the
checks cover what the webhooks need, not only that the process runs:

* `database`: reachable; `schema`: at the Alembic head this code expects (tables exist);
* `settings`: what the web can start without but then works only in part (the sender, for answers);
* `broker` (when given): where answers are dispatched;
* `sender_holds`: senders paused for an account or configuration error (outreach.send.holds).

A failing check that stops the webhooks (`critical`) makes the status "down" and answers 503; any
other makes it "degraded" and still answers 200, with the body saying what is wrong: a load
balancer that routes by status code must keep sending Twilio's webhooks here while outgoing texts
wait for the operator (a STOP has to land even when sending is paused). Adding a check is one
entry in the list `create_app` builds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel
from sqlalchemy import Engine, text

from outreach.config import Settings
from outreach.send.holds import active_holds
from outreach.store.db import head_revision, schema_revision, session_scope

log = logging.getLogger(__name__)

Result = tuple[bool, str]
SCHEMA_MISSING = "schema missing: run `outreach db upgrade`"


@dataclass(frozen=True)
class Check:
    """One named check; `needs` names an earlier check whose failure makes this one moot."""

    name: str
    run: Callable[[], Result]
    critical: bool = True
    needs: str | None = None


class CheckResult(BaseModel):
    ok: bool
    detail: str


class Health(BaseModel):
    status: Literal["ok", "degraded", "down"]
    checks: dict[str, CheckResult]


def evaluate(checks: Sequence[Check]) -> tuple[int, Health]:
    """Run every check in order: the HTTP status (200 only when all pass) and the report."""
    results: dict[str, CheckResult] = {}
    status: Literal["ok", "degraded", "down"] = "ok"
    for check in checks:
        if check.needs is not None and not results[check.needs].ok:
            ok, detail = False, f"not checked: {check.needs} failed"
        else:
            ok, detail = _guarded(check)
        results[check.name] = CheckResult(ok=ok, detail=detail)
        if not ok:
            status = "down" if check.critical else ("degraded" if status == "ok" else status)
    return (503 if status == "down" else 200), Health(status=status, checks=results)


def _guarded(check: Check) -> Result:
    try:
        return check.run()
    except Exception as exc:
        log.warning("health check %s failed: %s", check.name, exc.__class__.__name__)
        return False, f"unreachable ({exc.__class__.__name__})"


def database(engine: Engine) -> Result:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return True, "reachable"


def schema(engine: Engine) -> Result:
    problem = schema_problem(engine)
    return (problem is None), problem or f"at revision {head_revision()}"


def schema_problem(engine: Engine) -> str | None:
    """Why the webhooks cannot use this database's schema, or None when it is at the head."""
    current, head = schema_revision(engine), head_revision()
    if current is None:
        return SCHEMA_MISSING
    if current != head:
        return f"schema at revision {current}, this code needs {head}: run `outreach db upgrade`"
    return None


def sender(settings: Settings) -> Result:
    """The web starts without a sender (replies and opt-outs are still recorded), but the answers
    it queues (HELP, keyword answers) cannot be sent until one is set."""
    if (settings.twilio_messaging_service_sid or "").strip() or (settings.twilio_from_number or "").strip():
        return True, "set"
    return False, "missing TWILIO_MESSAGING_SERVICE_SID or TWILIO_FROM_NUMBER: answers stay queued"


def sender_holds(engine: Engine) -> Result:
    """Senders paused for an account or configuration error, each with why; sending resumes by
    itself once a probe succeeds (outreach.send.holds), so this says what the operator must fix."""
    with session_scope(engine) as session:
        held = active_holds(session)
    if not held:
        return True, "none"
    return False, "; ".join(hold.describe() for hold in held)


def probe(check: Callable[[], object]) -> Callable[[], Result]:
    """A check from a callable that raises when its dependency is unreachable (the broker's)."""

    def run() -> Result:
        check()
        return True, "reachable"

    return run


class SchemaWatch:
    """The schema's verdict for the webhook error path, re-read at most every `ttl` seconds, so a
    burst of failing webhooks does not become a burst of extra connections to a struggling server."""

    def __init__(self, engine: Engine, ttl: float = 5.0) -> None:
        self._engine = engine
        self._ttl = ttl
        self._lock = threading.Lock()
        self._checked_at = -float("inf")
        self._problem: str | None = None

    def problem(self) -> str | None:
        """Blocking (a database round trip when stale): call it off the event loop."""
        with self._lock:
            if time.monotonic() - self._checked_at >= self._ttl:
                try:
                    self._problem = schema_problem(self._engine)
                except Exception as exc:  # unreachable: the caller's own error says so
                    log.warning("schema check failed: %s", exc.__class__.__name__)
                    self._problem = None
                self._checked_at = time.monotonic()
            return self._problem
