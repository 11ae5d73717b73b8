"""What `outreach demo --keep DIR` leaves for the care-team workspace: a demo login and a `.env`.

The kept folder then runs the workspace with `cd DIR && outreach web` (settings come from the
`.env` in the current folder): the demo's database, campaigns, clinic, and the sandbox's fixed
demo credentials, so `outreach sandbox` and a Celery worker started there send staff replies
through the sandbox, whose simulated patients answer the ones that end with a question.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from outreach.apps.demo import DEMO_ACCOUNT_SID, DEMO_AUTH_TOKEN, DEMO_CLINIC, DEMO_FROM, ZONE
from outreach.clock import utcnow
from outreach.store.db import engine_for, session_scope
from outreach.team.accounts import add_user

DEMO_EMAIL = "demo@example.org"
WEB = "http://127.0.0.1:8000"
SANDBOX = "http://127.0.0.1:8765"


@dataclass(frozen=True)
class DemoLogin:
    email: str
    password: str
    totp_secret: str
    env_file: Path


def leave_workspace(database: Path, root: Path) -> DemoLogin:
    """A coordinator account in the kept database (a fresh random password) and DIR/.env."""
    password = secrets.token_urlsafe(12)
    engine = engine_for(f"sqlite:///{database}")
    try:
        with session_scope(engine) as session:
            user = add_user(session, DEMO_EMAIL, "coordinator", password, by="demo", at=utcnow())
            secret = user.totp_secret or ""
    finally:
        engine.dispose()
    settings = {
        "OUTREACH_DATABASE_URL": f"sqlite:///{database}",
        "OUTREACH_CAMPAIGNS_DIR": str(root / "campaigns"),
        "OUTREACH_CLINIC_NAME": DEMO_CLINIC[0],
        "OUTREACH_CLINIC_PHONE": DEMO_CLINIC[1],
        "OUTREACH_DEFAULT_TIMEZONE": ZONE,
        "OUTREACH_PUBLIC_URL": WEB,
        "OUTREACH_TWILIO_API_URL": SANDBOX,
        "TWILIO_ACCOUNT_SID": DEMO_ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": DEMO_AUTH_TOKEN,
        "TWILIO_FROM_NUMBER": DEMO_FROM,
    }
    env_file = database.parent / ".env"
    lines = ["# written by `outreach demo --keep`: the kept demo's settings, for `outreach web` run here"]
    lines += [f"{name}={value}" for name, value in settings.items()]
    env_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return DemoLogin(DEMO_EMAIL, password, secret, env_file)


def instructions(login: DemoLogin) -> list[str]:
    """What the demo prints after keeping its database: start the inbox, sign in, send."""
    folder = login.env_file.parent
    key = " ".join(login.totp_secret[i : i + 4] for i in range(0, len(login.totp_secret), 4))
    return [
        f"the care-team inbox on it ({login.env_file} holds the demo's settings):",
        f"  cd {folder} && outreach web        # then open {WEB}/app/login",
        f"  sign in as {login.email}, password {login.password}; the first sign-in shows a QR code for",
        f"  an authenticator app (or type the key {key})",
        "to send replies, with the simulated patients answering those that end with a question",
        f"(Redis on localhost:6379), also in {folder}, each in its own terminal:",
        f"  outreach sandbox --inbound-url {WEB}/twilio/inbound --replies probabilities",
        "  celery -A workers worker --pool threads",
    ]
