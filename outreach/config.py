"""Settings from the environment (and `.env` when present), read once per process.

A malformed value must stop the program at start with one line naming the variable, so operators
find the typo before a single message is planned.
"""

from __future__ import annotations

import datetime as dt
import re
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from pydantic import Field, ValidationError, field_validator
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

    @field_validator(
        "sweep_every",
        "sweep_queued_after",
        "sweep_sending_after",
        "sweep_unknown_after",
        "sweep_status_after",
        "hold_probe_after",
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


_UNITS = {"s": 1, "m": 60, "h": 3600}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smh]?)")


def load_settings() -> Settings:
    """Read settings now; a bad value becomes a UserError naming the variable."""
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "settings"
        raise UserError(f"{name}: {first['msg']} (got {first.get('input')!r})") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests call `get_settings.cache_clear()` after changing the environment."""
    return load_settings()
