"""`campaigns preview`: who would get which step when, rendered, without sending or writing."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.orm import Session

from outreach.apps.cli import main
from outreach.campaigns import CampaignFile, load_campaigns
from outreach.config import get_settings
from outreach.plan.eligibility import count_eligible
from outreach.plan.preview import preview
from outreach.segments import count_segments
from outreach.store.db import session_scope
from outreach.store.models import Base, Patient

FRIDAY = dt.date(2026, 5, 15)
SATURDAY = dt.date(2026, 5, 16)
UTC = dt.UTC

EN = "Hi {first_name}, {clinic_name} here. You are due for a screening. Call {clinic_phone}. STOP to opt out."
ES = "Hola {first_name}, le saluda {clinic_name}. Le toca una prueba de detección. Responda STOP para salir."

CAMPAIGN_YAML = f"""\
id: test-screening
name: Test screening
active: {{from: 2026-01-01, until: 2026-12-31}}
audience:
  age: {{min: 40, max: 75}}
  sex: any
send_window: {{days: [mon, tue, wed, thu, fri], start: "09:00", end: "18:00"}}
default_language: en
steps:
  - id: invite
    after: 0d
    text:
      en: "{EN}"
      es: "{ES}"
  - id: reminder
    after: 7d
    text: {{en: "Reminder, {{first_name}}. Reply STOP to opt out."}}
"""


def campaign(**overrides: Any) -> CampaignFile:
    data: dict[str, Any] = {
        "id": "test-screening",
        "name": "Test screening",
        "active": {"from": "2026-01-01", "until": "2026-12-31"},
        "audience": {"age": {"min": 40, "max": 75}},
        "send_window": {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "18:00"},
        "steps": [
            {"id": "invite", "after": "0d", "text": {"en": EN, "es": ES}},
            {"id": "reminder", "after": "7d", "text": {"en": "Reminder, {first_name}."}},
        ],
        **overrides,
    }
    return CampaignFile.model_validate(data)


def add_patients(session: Session, *patients: dict[str, Any]) -> None:
    rows = []
    for i, patient in enumerate(patients, start=1):
        rows.append(
            {
                "first_name": "Ana",
                "birth_date": dt.date(1970, 1, 1),
                "sex": "female",
                "phone": f"+1617555{i:04d}",
                "language": "en",
                "timezone": "America/New_York",
                **patient,
            }
        )
    session.execute(insert(Patient), rows)


def test_first_step_in_the_patients_language_else_the_default(session: Session) -> None:
    add_patients(
        session,
        {"mrn": "m3-fr", "first_name": "Amélie", "language": "fr"},
        {"mrn": "m1-es", "first_name": "Lucía", "language": "es"},
        {"mrn": "m2-en", "first_name": "Bob", "language": "en"},
    )
    rows = preview(session, campaign(), FRIDAY, settings=get_settings())
    assert [(r.mrn, r.step, r.language) for r in rows] == [
        ("m1-es", "invite", "es"),
        ("m2-en", "invite", "en"),
        ("m3-fr", "invite", "en"),
    ]
    assert rows[0].text.startswith("Hola Lucía, le saluda Riverside Health.")
    assert rows[1].text == (
        "Hi Bob, Riverside Health here. You are due for a screening. Call (617) 555-0100. STOP to opt out."
    )
    assert rows[2].text.startswith("Hi Amélie, Riverside Health here.")


def test_segments_are_counted_on_the_rendered_text(session: Session) -> None:
    long_gsm = "Hi {first_name}. " + "x" * 150  # 154 characters before the name is filled in
    add_patients(session, {"mrn": "short", "first_name": "Al"}, {"mrn": "long", "first_name": "Maximiliano"})
    camp = campaign(steps=[{"id": "invite", "after": "0d", "text": {"en": long_gsm}}])
    rows = {r.mrn: r for r in preview(session, camp, FRIDAY, settings=get_settings())}
    assert rows["short"].segments == 1  # 156 GSM-7 characters
    assert rows["long"].segments == 2  # 165 characters
    es = preview(session, campaign(), FRIDAY, settings=get_settings())[0]
    assert es.segments == count_segments(es.text).segments


def test_send_at_is_the_first_opening_from_the_start_of_the_day_in_the_patients_zone(
    session: Session,
) -> None:
    add_patients(
        session,
        {"mrn": "boston", "timezone": "America/New_York"},
        {"mrn": "la", "timezone": "America/Los_Angeles"},
        {"mrn": "unknown-zone", "timezone": None, "phone_zones": None},
        {"mrn": "two-zones", "timezone": None, "phone_zones": "America/New_York America/Chicago"},
    )
    settings = get_settings()
    friday = {r.mrn: r for r in preview(session, campaign(), FRIDAY, settings=settings)}
    assert friday["boston"].send_at == dt.datetime(2026, 5, 15, 13, 0, tzinfo=UTC)  # 09:00 EDT
    assert friday["la"].send_at == dt.datetime(2026, 5, 15, 16, 0, tzinfo=UTC)  # 09:00 PDT
    assert friday["unknown-zone"].send_at == dt.datetime(2026, 5, 15, 13, 0, tzinfo=UTC)  # the default zone
    assert friday["two-zones"].send_at == dt.datetime(2026, 5, 15, 14, 0, tzinfo=UTC)  # 09:00 in Chicago too
    assert friday["la"].zone == "America/Los_Angeles"
    saturday = {r.mrn: r for r in preview(session, campaign(), SATURDAY, settings=settings)}
    assert saturday["boston"].send_at == dt.datetime(2026, 5, 18, 13, 0, tzinfo=UTC)  # Monday


def test_preview_writes_nothing_and_honours_the_limit(session: Session, engine: Engine) -> None:
    add_patients(session, *({"mrn": f"m{i:02d}"} for i in range(12)))
    session.commit()
    before = _row_counts(engine)
    rows = preview(session, campaign(), FRIDAY, settings=get_settings(), limit=5)
    assert [r.mrn for r in rows] == ["m00", "m01", "m02", "m03", "m04"]
    assert not session.new and not session.dirty
    session.commit()
    assert _row_counts(engine) == before


def _row_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in Base.metadata.sorted_tables
        }


# --- the command ---------------------------------------------------------------------------------


@pytest.fixture
def campaigns_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "campaigns"
    folder.mkdir()
    (folder / "test-screening.yaml").write_text(CAMPAIGN_YAML, encoding="utf-8")
    monkeypatch.setenv("OUTREACH_CAMPAIGNS_DIR", str(folder))
    get_settings.cache_clear()
    return folder


def _stored(engine: Engine, *patients: dict[str, Any]) -> None:
    with session_scope(engine) as session:
        add_patients(session, *patients)


def test_json_output_is_the_documented_shape(engine: Engine, campaigns_dir: Path) -> None:
    _stored(
        engine,
        {"mrn": "b", "first_name": "Lucía", "language": "es"},
        {"mrn": "a", "first_name": "Bob", "timezone": "America/Los_Angeles"},
        {"mrn": "too-young", "birth_date": dt.date(2000, 1, 1)},
    )
    result = CliRunner().invoke(
        main, ["campaigns", "preview", "test-screening", "--on", "2026-05-15", "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload == {
        "campaign": "test-screening",
        "on": "2026-05-15",
        "count": 2,
        "patients": [
            {
                "mrn": "a",
                "step": "invite",
                "language": "en",
                "text": EN.format(
                    first_name="Bob", clinic_name="Riverside Health", clinic_phone="(617) 555-0100"
                ),
                "segments": 1,
                "send_at": "2026-05-15T16:00:00+00:00",
            },
            {
                "mrn": "b",
                "step": "invite",
                "language": "es",
                "text": ES.format(first_name="Lucía", clinic_name="Riverside Health"),
                "segments": 2,
                "send_at": "2026-05-15T13:00:00+00:00",
            },
        ],
    }


def test_json_limit_keeps_the_whole_count(engine: Engine, campaigns_dir: Path) -> None:
    _stored(engine, *({"mrn": f"m{i}"} for i in range(5)))
    args = ["campaigns", "preview", "test-screening", "--on", "2026-05-15", "--json", "--limit", "2"]
    payload = json.loads(CliRunner().invoke(main, args).stdout)
    assert payload["count"] == 5
    assert [p["mrn"] for p in payload["patients"]] == ["m0", "m1"]


def test_table_output(engine: Engine, campaigns_dir: Path) -> None:
    _stored(engine, {"mrn": "mrn-1", "first_name": "Bob", "timezone": "America/Chicago"})
    result = CliRunner().invoke(main, ["campaigns", "preview", "test-screening", "--on", "2026-05-15"])
    assert result.exit_code == 0, result.output
    assert "mrn-1" in result.output
    assert "09:00" in result.output  # local time in the patient's zone
    assert "1 patient" in result.output
    assert "not active" not in result.output


def test_inactive_campaign_still_previews_but_says_so(engine: Engine, campaigns_dir: Path) -> None:
    _stored(engine, {"mrn": "mrn-1"})
    result = CliRunner().invoke(
        main, ["campaigns", "preview", "test-screening", "--on", "2027-03-01", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["count"] == 1
    assert "not active on 2027-03-01" in result.stderr
    table = CliRunner().invoke(main, ["campaigns", "preview", "test-screening", "--on", "2027-03-01"])
    assert "not active on 2027-03-01" in table.output


def test_unknown_id_is_one_line_listing_the_known_ones(engine: Engine, campaigns_dir: Path) -> None:
    result = CliRunner().invoke(main, ["campaigns", "preview", "nope", "--on", "2026-05-15"])
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "nope" in lines[0] and "test-screening" in lines[0]
    assert "Traceback" not in result.output


def test_bad_date_is_one_line(engine: Engine, campaigns_dir: Path) -> None:
    result = CliRunner().invoke(main, ["campaigns", "preview", "test-screening", "--on", "2026-02-30"])
    assert result.exit_code != 0
    assert "--on" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_every_shipped_campaign_previews(engine: Engine) -> None:
    """The shipped files render for a mixed roster, and the count agrees with the eligibility query."""
    shipped = load_campaigns(settings=get_settings())
    assert shipped
    _stored(
        engine,
        *(
            {"mrn": f"p{i}", "birth_date": dt.date(1950 + 3 * i, 3, 1), "sex": sex, "language": lang}
            for i, (sex, lang) in enumerate(
                [(s, lang) for s in ("female", "male") for lang in ("en", "es", "fr")] * 3
            )
        ),
    )
    for campaign_id, camp in shipped.items():
        on = camp.active.from_
        result = CliRunner().invoke(
            main, ["campaigns", "preview", campaign_id, "--on", on.isoformat(), "--json"]
        )
        assert result.exit_code == 0, result.output
        payload = json.loads(result.stdout)
        with session_scope(engine) as session:
            assert payload["count"] == count_eligible(session, camp, on)
        assert payload["count"] > 0, campaign_id
        for patient in payload["patients"]:
            assert all(patient["language"] in texts for _, _, texts in camp.steps[0].wordings())
            assert "{" not in patient["text"]
            assert patient["segments"] >= 1
