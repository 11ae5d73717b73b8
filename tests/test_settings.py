"""Settings validation: OUTREACH_PUBLIC_URL as Twilio will take it, and every problem at once."""

from __future__ import annotations

import pytest

from outreach.config import check_settings, get_settings, load_settings, public_url_problem
from outreach.errors import UserError


@pytest.mark.parametrize(
    "url",
    ["http://outreach_web:8000", "https://my_clinic.example.org", "http://WEB_1.internal/"],
)
def test_a_public_url_whose_host_has_an_underscore_is_refused_saying_why(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    """Twilio answers 21609 to every create whose StatusCallback host has an underscore."""
    monkeypatch.setenv("OUTREACH_PUBLIC_URL", url)

    with pytest.raises(UserError) as caught:
        load_settings()

    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("OUTREACH_PUBLIC_URL: its host has an underscore")
    assert "21609" in message and "hyphens" in message and repr(url) in message


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("outreach.example.org", "must start with https:// or http://"),
        ("ftp://outreach.example.org", "must start with https:// or http://"),
        ("https://", "has no host name"),
        ("https://outreach.example.org/?x=1", "must not have a query or fragment"),
        ("https://outreach.example.org:99999", "not a URL"),
    ],
)
def test_other_unusable_public_urls_are_refused(url: str, reason: str) -> None:
    assert (public_url_problem(url) or "").startswith(reason)


@pytest.mark.parametrize(
    "url", ["https://outreach.example.org", "http://127.0.0.1:8000", "https://a-b.example.org/prefix/"]
)
def test_usable_public_urls_pass(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("OUTREACH_PUBLIC_URL", url)

    assert load_settings().public_url == url


def test_an_empty_public_url_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """.env.example ships `OUTREACH_PUBLIC_URL=`: commands other than `outreach web` run without it."""
    monkeypatch.setenv("OUTREACH_PUBLIC_URL", "  ")

    assert load_settings().public_url is None


def test_load_settings_names_the_first_bad_value_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTREACH_SEND_RATE", "fast")
    monkeypatch.setenv("OUTREACH_DEFAULT_REGION", "XX")

    with pytest.raises(UserError) as caught:
        load_settings()

    assert str(caught.value).startswith("OUTREACH_SEND_RATE: ")
    assert "OUTREACH_DEFAULT_REGION" not in str(caught.value)


def test_check_settings_lists_every_malformed_and_missing_setting_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OUTREACH_SEND_RATE", "fast")
    monkeypatch.setenv("OUTREACH_PUBLIC_URL", "http://outreach_web:8000")
    monkeypatch.delenv("OUTREACH_CLINIC_NAME")
    required = {
        "TWILIO_AUTH_TOKEN": "signatures",
        "OUTREACH_CLINIC_NAME": "answers",
        "OUTREACH_PUBLIC_URL": "x",
    }

    check = check_settings(required)

    assert check.missing == ["TWILIO_AUTH_TOKEN (signatures)", "OUTREACH_CLINIC_NAME (answers)"]
    assert [line.split(":")[0] for line in check.malformed] == ["OUTREACH_PUBLIC_URL", "OUTREACH_SEND_RATE"]
    # The malformed values read as their defaults meanwhile, so the rest could still be checked.
    assert (check.settings.send_rate, check.settings.public_url) == (1.0, None)
    error = str(check.error())
    assert error.startswith(
        "missing settings: TWILIO_AUTH_TOKEN (signatures), OUTREACH_CLINIC_NAME (answers); "
    )
    assert "malformed settings: OUTREACH_PUBLIC_URL: " in error and "; OUTREACH_SEND_RATE: " in error
    assert error.endswith("; set them in the environment or .env") and "\n" not in error


def test_check_settings_revalidates_a_copied_settings_object() -> None:
    """`model_copy(update=...)` skips validation; the web start must not."""
    copied = get_settings().model_copy(update={"public_url": "http://outreach_web:8000"})

    check = check_settings({}, copied)

    assert [line.split(":")[0] for line in check.malformed] == ["OUTREACH_PUBLIC_URL"]


def test_nothing_wrong_is_no_error() -> None:
    check = check_settings({"OUTREACH_CLINIC_NAME": "answers"})

    assert (check.missing, check.malformed, check.error()) == ([], [], None)
