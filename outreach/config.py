"""Settings from the environment (and `.env` when present), read once per process.

A malformed value must stop the program at start with one line naming the variable, so operators
find the typo before a single message is planned.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from pydantic import Field, ValidationError, field_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict

from outreach.errors import UserError


class Settings(BaseSettings):
    """Every knob of DESIGN.md §4; names are the environment variables."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    database_url: str = Field("sqlite:///outreach.db", alias="OUTREACH_DATABASE_URL")
    campaigns_dir: str = Field("campaigns", alias="OUTREACH_CAMPAIGNS_DIR")
    broker_url: str = Field("redis://localhost:6379/0", alias="OUTREACH_BROKER_URL")
    twilio_account_sid: str | None = Field(None, alias="TWILIO_ACCOUNT_SID")
    twilio_auth_token: str | None = Field(None, alias="TWILIO_AUTH_TOKEN")
    twilio_messaging_service_sid: str | None = Field(None, alias="TWILIO_MESSAGING_SERVICE_SID")
    twilio_from_number: str | None = Field(None, alias="TWILIO_FROM_NUMBER")
    twilio_api_url: str | None = Field(None, alias="OUTREACH_TWILIO_API_URL")
    public_url: str | None = Field(None, alias="OUTREACH_PUBLIC_URL")
    send_rate: float = Field(1.0, gt=0, alias="OUTREACH_SEND_RATE")
    default_region: str = Field("US", alias="OUTREACH_DEFAULT_REGION")
    default_timezone: str = Field("America/New_York", alias="OUTREACH_DEFAULT_TIMEZONE")
    clinic_name: str | None = Field(None, alias="OUTREACH_CLINIC_NAME")
    clinic_phone: str | None = Field(None, alias="OUTREACH_CLINIC_PHONE")
    link: str | None = Field(None, alias="OUTREACH_LINK")
    daily_cap: int = Field(1, ge=1, alias="OUTREACH_DAILY_CAP")
    weekly_cap: int = Field(3, ge=1, alias="OUTREACH_WEEKLY_CAP")
    # Twilio Advanced Opt-Out answers STOP/START/HELP itself; then the webhook must stay silent.
    twilio_advanced_opt_out: bool = Field(False, alias="OUTREACH_TWILIO_ADVANCED_OPT_OUT")
    # A site's own code map (CSV: system,code,kind,value_set), read on top of the shipped one by
    # `outreach fhir import`: local codes an EHR uses for a screening would otherwise leave the
    # gap open and the patient texted about a test they had.
    code_map: str | None = Field(None, alias="OUTREACH_CODE_MAP")
    # --- Outcomes (issue #13). A care-gap event dated within this many days of the enrollment day
    # closes the gap and is credited to outreach (or counted for the holdout): the same window for
    # both arms, so the comparison is fair.
    attribution_days: int = Field(90, ge=1, le=3650, alias="OUTREACH_ATTRIBUTION_DAYS")
    # A tracked link (/l/<token>) answers for this many days after its message went out; later it
    # gets the page with the clinic's phone instead of the redirect.
    link_ttl_days: int = Field(30, ge=1, le=3650, alias="OUTREACH_LINK_TTL_DAYS")

    # --- The sweeper (outreach/send/sweeper.py): `outreach sweep`, and Celery beat every SWEEP_EVERY.
    # Durations: seconds ("300"), with a unit ("30s", "5m", "1h") or ISO 8601 ("PT5M").
    # How often beat runs a sweep. Together with SWEEP_SENDING_AFTER it bounds how long the rows a
    # killed worker had claimed wait (workers/app.py).
    sweep_every: dt.timedelta = Field(
        dt.timedelta(seconds=15), gt=dt.timedelta(0), alias="OUTREACH_SWEEP_EVERY"
    )
    # A `queued` row older than this is handed to the workers again (the broker lost its task). A
    # killed worker's unstarted tasks come back sooner, through the broker (workers/app.py).
    sweep_queued_after: dt.timedelta = Field(
        dt.timedelta(minutes=5), gt=dt.timedelta(0), alias="OUTREACH_SWEEP_QUEUED_AFTER"
    )
    # A row claimed (`sending`) this long ago whose sender never finished is looked up at the
    # provider: recorded if found, queued again if not. At least 40 s: a worker hands a claimed
    # row to Twilio within 20 s of its claim (outreach.send.batch.CLAIM_LEASE_S) and gives up on
    # the answer 10 s later (outreach.providers.twilio.DEFAULT_TIMEOUT_S); the rest is margin
    # for Twilio's own delay. Shorter would risk a second text to a row still on its way.
    sweep_sending_after: dt.timedelta = Field(
        dt.timedelta(seconds=40), ge=dt.timedelta(seconds=40), alias="OUTREACH_SWEEP_SENDING_AFTER"
    )
    # An `unknown` row (no answer to the create) the provider still lacks this long after the
    # attempt is failed: a message Twilio has not created by then never will be.
    sweep_unknown_after: dt.timedelta = Field(
        dt.timedelta(minutes=10), gt=dt.timedelta(0), alias="OUTREACH_SWEEP_UNKNOWN_AFTER"
    )
    # A `sent` row with no final status (delivered, undelivered, failed) this long after sending
    # is looked up at the provider: Twilio does not retry a status callback that got no answer.
    sweep_status_after: dt.timedelta = Field(
        dt.timedelta(minutes=15), gt=dt.timedelta(0), alias="OUTREACH_SWEEP_STATUS_AFTER"
    )
    # At most this many such look-ups per sweep (oldest first), so a backlog cannot flood
    # Twilio's API or make one sweep outlast the next.
    sweep_status_fetches: int = Field(30, ge=0, alias="OUTREACH_SWEEP_STATUS_FETCHES")
    # A sender held for an account or configuration error (outreach/send/holds.py) lets one row
    # through this long after the last refusal, to see whether the setup was fixed.
    hold_probe_after: dt.timedelta = Field(
        dt.timedelta(minutes=5), gt=dt.timedelta(0), alias="OUTREACH_HOLD_PROBE_AFTER"
    )

    # --- The reports page (outreach/outcomes/snapshots.py): the saved report is refreshed this
    # often, by Celery beat, and by the web process when a page read finds it older than this.
    report_refresh_every: dt.timedelta = Field(
        dt.timedelta(minutes=5), gt=dt.timedelta(0), alias="OUTREACH_REPORT_REFRESH_EVERY"
    )

    @field_validator(
        "sweep_every",
        "sweep_queued_after",
        "sweep_sending_after",
        "sweep_unknown_after",
        "sweep_status_after",
        "hold_probe_after",
        "report_refresh_every",
        mode="before",
    )
    @classmethod
    def _duration(cls, value: object) -> object:
        """Plain seconds and s/m/h units, which operators write; pydantic reads ISO 8601 itself."""
        if isinstance(value, str):
            match = _DURATION.fullmatch(value.strip().lower())
            if match is not None:
                return dt.timedelta(seconds=float(match[1]) * _UNITS[match[2] or "s"])
        return value

    @field_validator("default_region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        region = value.upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError("not a region phonenumbers knows (use a two-letter code such as US)")
        return region

    @field_validator("default_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("not an IANA time zone (for example America/New_York)") from None
        return value

    @field_validator("public_url")
    @classmethod
    def _usable_public_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None  # unset (.env.example leaves it empty): only `outreach web` needs it
        problem = public_url_problem(value.strip())
        if problem is not None:
            raise ValueError(problem)
        return value.strip()


def public_url_problem(url: str) -> str | None:
    """Why `url` cannot be OUTREACH_PUBLIC_URL, or None when it can.

    It is the StatusCallback of every message (with /twilio/status appended) and the base of every
    webhook signature, so it must be an absolute http(s) URL without a query or fragment, and its
    host must be one Twilio accepts: Twilio refuses a StatusCallback whose host holds an underscore
    (error 21609 on every create), which a compose service name such as `outreach_web` does.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # raises ValueError for a port outside 0-65535
    except ValueError as exc:
        return f"not a URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return "must start with https:// or http://"
    if not host:
        return "has no host name"
    if "_" in host:
        return (
            "its host has an underscore, which Twilio refuses in a StatusCallback (error 21609 on "
            "every message): use the public DNS name Twilio reaches, or a host name with hyphens"
        )
    if parts.query or parts.fragment:
        return "must not have a query or fragment (webhook paths are appended to it)"
    return None


@dataclass(frozen=True)
class SettingsCheck:
    """Settings as read, with every problem found at once (a program that cannot start should say
    everything the operator has to fix, not one thing per attempt)."""

    settings: Settings  # malformed values read as their defaults, so the rest can still be checked
    malformed: list[str]  # "NAME: why (got 'value')", in the order of DESIGN.md §4
    missing: list[str]  # "NAME (why it is needed)"

    def error(self) -> UserError | None:
        """All problems as one line, or None when there are none."""
        parts = []
        if self.missing:
            parts.append("missing settings: " + ", ".join(self.missing))
        if self.malformed:
            parts.append("malformed settings: " + "; ".join(self.malformed))
        if not parts:
            return None
        return UserError("; ".join(parts) + "; set them in the environment or .env")


def check_settings(required: Mapping[str, str], settings: Settings | None = None) -> SettingsCheck:
    """Read (or, given `settings`, re-validate) the settings and list every problem: each malformed
    value, and each variable of `required` (name -> why it is needed) that is unset or blank.

    A Settings built by `model_copy` skips validation, so a given one is validated again here.
    """
    values: dict[str, Any] = {} if settings is None else settings.model_dump(by_alias=True)
    try:
        checked = Settings() if settings is None else Settings.model_validate(values)
        errors: list[ErrorDetails] = []
    except ValidationError as exc:
        errors = exc.errors()
        bad = {str(e["loc"][0]) for e in errors if e["loc"]}
        fallback = {f.alias: f.default for f in Settings.model_fields.values() if f.alias in bad}
        checked = Settings(**fallback) if settings is None else Settings.model_validate(values | fallback)
    bad_names = {str(e["loc"][0]) for e in errors if e["loc"]}
    fields = {f.alias: name for name, f in Settings.model_fields.items()}
    missing = [
        f"{variable} ({why})"
        for variable, why in required.items()
        if variable not in bad_names and not str(getattr(checked, fields[variable]) or "").strip()
    ]
    return SettingsCheck(checked, [_malformed(error) for error in errors], missing)


def _malformed(error: ErrorDetails) -> str:
    name = str(error["loc"][0]) if error["loc"] else "settings"
    reason = str(error["msg"]).removeprefix("Value error, ")
    return f"{name}: {reason} (got {error.get('input')!r})"


_UNITS = {"s": 1, "m": 60, "h": 3600}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smh]?)")


def load_settings() -> Settings:
    """Read settings now; the first bad value becomes a one-line UserError naming the variable.
    (`check_settings` lists them all, for a start that needs more than one to be right.)"""
    check = check_settings({})
    if check.malformed:
        raise UserError(check.malformed[0])
    return check.settings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests call `get_settings.cache_clear()` after changing the environment."""
    return load_settings()
