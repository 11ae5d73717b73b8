"""Settings from the environment (and `.env` when present), read once per process.

A malformed value must stop the program at start with one line naming the variable, so operators
find the typo before a single message is planned.
"""

from __future__ import annotations

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
    # A site's own code map (CSV: system,code,kind,value_set), read on top of the shipped one by
    # `outreach fhir import`: local codes an EHR uses for a screening would otherwise leave the
    # gap open and the patient texted about a test they had.
    code_map: str | None = Field(None, alias="OUTREACH_CODE_MAP")

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
