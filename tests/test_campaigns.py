"""Campaign files: every validation problem a care team can make, named with file, field and fix;
the shipped protocols; date arithmetic the eligibility rules depend on; rendering; the CLI."""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from outreach.apps.cli import main
from outreach.campaigns import (
    CampaignFile,
    CampaignProblem,
    CareGap,
    Duration,
    add_months,
    content_hash,
    load_campaigns,
    parse_campaign,
    render,
    validate_files,
)
from outreach.config import get_settings
from outreach.errors import UserError
from outreach.runtime import Runtime

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ["breast-screening", "cervical-screening", "colorectal-screening", "flu-season"]

BASE: dict[str, Any] = {
    "id": "test-campaign",
    "name": "Test campaign",
    "source": "a test",
    "active": {"from": "2026-01-01", "until": "2026-12-31"},
    "audience": {
        "age": {"min": 45, "max": 75},
        "sex": "any",
        "care_gap": [{"event": "colonoscopy", "within": "10y"}, {"event": "flu_vaccine", "since": "07-01"}],
    },
    "send_window": {"days": ["mon", "tue"], "start": "09:00", "end": "18:00"},
    "re_enroll_after": "365d",
    "default_language": "en",
    "steps": [
        {
            "id": "invite",
            "after": "0d",
            "text": {
                "en": "Hi {first_name}, {clinic_name} here. Reply STOP to opt out.",
                "es": "Hola. Responda STOP.",
            },
        },
        {"id": "reminder", "after": "7d", "only_if": "no_reply", "text": {"en": "Hi {first_name}."}},
    ],
    "replies": [
        {"keywords": ["YES", "SI", "SÍ"], "outcome": "kit_requested", "answer": {"en": "Thanks!"}},
        {"keywords": ["CALL", "LLAMAR"], "outcome": "callback_requested", "handoff": True},
    ],
}


def write(directory: Path, data: Any, name: str = "test-campaign.yaml") -> Path:
    path = directory / name
    text = data if isinstance(data, str) else yaml.safe_dump(data, allow_unicode=True, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


def check(directory: Path, data: Any, name: str = "test-campaign.yaml") -> list[CampaignProblem]:
    _, problems = validate_files([write(directory, data, name)], settings=get_settings())
    return problems


def errors(problems: list[CampaignProblem]) -> list[CampaignProblem]:
    return [p for p in problems if p.severity == "error"]


def only_error(problems: list[CampaignProblem]) -> CampaignProblem:
    found = errors(problems)
    assert len(found) == 1, [str(p) for p in found]
    return found[0]


def variant(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data.update(changes)
    return data


# --- the valid base and the shipped files -------------------------------------------------------


def test_base_campaign_is_valid_and_carries_its_hash(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    campaigns, problems = validate_files([path], settings=get_settings())
    assert errors(problems) == []
    campaign = campaigns["test-campaign"]
    assert campaign.content_hash == hashlib.sha256(path.read_bytes()).hexdigest() == content_hash(path)
    assert campaign.path == "test-campaign.yaml"  # relative to the working directory
    assert campaign.steps[1].after == Duration(amount=7, unit="d")
    assert campaign.send_window.start == dt.time(9, 0)
    assert campaign.languages() == ["en", "es"]


def test_shipped_campaigns_have_no_errors() -> None:
    paths = sorted((ROOT / "campaigns").glob("*.yaml"))
    assert [p.stem for p in paths] == SHIPPED
    campaigns, problems = validate_files(paths, settings=get_settings())
    assert errors(problems) == [], [str(p) for p in problems]
    assert sorted(campaigns) == SHIPPED
    for campaign in campaigns.values():
        assert campaign.source
        assert campaign.re_enroll_after is not None
        assert campaign.languages() == ["en", "es"]
        first, *rest = campaign.steps
        assert first.after == Duration(amount=0, unit="d")
        for _variant, _weight, texts in first.wordings():  # every wording of the first text
            assert "Reply STOP to opt out" in texts["en"]
            assert "STOP" in texts["es"]
        assert any(step.only_if == "no_reply" for step in rest)
        words = {word: rule for rule in campaign.replies for word in rule.keywords}
        assert {"YES", "SI", "SÍ", "CALL", "LLAMAR"} <= set(words)
        assert words["CALL"].handoff and words["LLAMAR"].handoff
    # The only warnings are the conscious ones: the Spanish invites run to 3 segments.
    assert {(Path(p.path).name, p.field) for p in problems} <= {
        (f"{i}.yaml", "steps[0].text.es") for i in SHIPPED
    } | {("colorectal-screening.yaml", "steps[0].variants[0].text.es")}
    assert all("about 3 segments" in p.message for p in problems)


def test_shipped_audiences_follow_their_guidelines() -> None:
    campaigns = load_campaigns(settings=get_settings())
    gaps = {
        cid: {(g.event, str(g.within or g.since)) for g in c.audience.care_gap}
        for cid, c in campaigns.items()
    }
    assert gaps["colorectal-screening"] == {
        ("colonoscopy", "10y"),
        ("fit", "1y"),
        ("fit_dna", "3y"),
        ("ct_colonography", "5y"),
        ("flexible_sigmoidoscopy", "5y"),
    }
    assert gaps["breast-screening"] == {("mammogram", "2y")}
    assert gaps["cervical-screening"] == {("cervical_cytology", "3y"), ("hpv_test", "5y")}
    assert gaps["flu-season"] == {("flu_vaccine", "07-01")}
    ages = {cid: (c.audience.age.min, c.audience.age.max, c.audience.sex) for cid, c in campaigns.items()}
    assert ages["colorectal-screening"] == (45, 75, "any")
    assert ages["breast-screening"] == (40, 74, "female")
    assert ages["cervical-screening"] == (21, 65, "female")
    assert ages["flu-season"][0] == 18
    flu = campaigns["flu-season"]
    assert (flu.active.from_, flu.active.until) == (dt.date(2026, 9, 1), dt.date(2027, 3, 31))
    assert flu.re_enroll_after is not None and flu.active.until is not None
    assert flu.re_enroll_after.after(flu.active.from_) > flu.active.until  # never twice in a season
    for cid in SHIPPED[:3]:
        assert campaigns[cid].active.from_ == dt.date(2026, 1, 1)


# --- one test per class of error ------------------------------------------------------------------


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    problem = only_error(check(tmp_path, "id: test-campaign\nname: x\n  steps: [\n"))
    assert problem.path == "test-campaign.yaml"
    assert problem.field == "line 3"  # the indented key under a plain value
    assert "YAML syntax error" in problem.message and "; check indentation" in problem.message


def test_duplicate_yaml_key_is_an_error_not_a_silent_overwrite(tmp_path: Path) -> None:
    problem = only_error(check(tmp_path, "id: test-campaign\nname: a\nname: b\n"))
    assert problem.field == "line 3"
    assert "duplicate key 'name'" in problem.message


def test_unknown_key_suggests_the_closest(tmp_path: Path) -> None:
    data = variant(reenroll_after="365d")
    del data["re_enroll_after"]
    data["steps"][0]["only_iff"] = "no_reply"
    found = errors(check(tmp_path, data))
    assert {(p.field, p.message) for p in found} == {
        ("reenroll_after", "unknown key reenroll_after; did you mean re_enroll_after?"),
        ("steps[0].only_iff", "unknown key only_iff; did you mean only_if?"),
    }


def test_unknown_key_without_a_close_match_lists_the_valid_ones(tmp_path: Path) -> None:
    data = variant()
    data["audience"]["zzz"] = 1
    problem = only_error(check(tmp_path, data))
    assert problem.field == "audience.zzz"
    assert problem.message == "unknown key zzz; valid keys here: age, sex, care_gap, exclude"


def test_wrong_types(tmp_path: Path) -> None:
    data = variant(name=12, steps="invite")
    data["audience"]["age"]["min"] = "forty"
    found = {p.field: p.message for p in errors(check(tmp_path, data))}
    assert found["name"].startswith("expected text, got the number 12;")
    assert found["steps"].startswith('expected a list, got the text "invite";')
    assert found["audience.age.min"].startswith('expected a whole number, got "forty";')


def test_missing_required_fields(tmp_path: Path) -> None:
    data = variant()
    del data["name"]
    del data["steps"][1]["after"]
    found = {p.field: p.message for p in errors(check(tmp_path, data))}
    assert found["name"].startswith("missing required field name; add name:")
    assert found["steps[1].after"] == "missing required field after; add after: 0d (time from enrollment)"


def test_bad_duration(tmp_path: Path) -> None:
    data = variant(re_enroll_after="1 year")
    data["steps"][1]["after"] = 7
    found = {p.field: p.message for p in errors(check(tmp_path, data))}
    assert found["re_enroll_after"] == (
        '"1 year" is not a duration; write a whole number and d, w, m or y, such as 7d, 2w, 6m or 10y'
    )
    assert found["steps[1].after"].startswith("7 is not a duration;")


def test_bad_dates(tmp_path: Path) -> None:
    found = {
        p.field: p.message
        for p in errors(check(tmp_path, variant(active={"from": "2026-02-30", "until": "next year"})))
    }
    assert (
        found["active.from"]
        == '"2026-02-30" is not a day of the calendar; check the month and day (YYYY-MM-DD)'
    )
    assert found["active.until"] == '"next year" is not a date; write YYYY-MM-DD, such as 2026-09-01'


def test_until_before_from(tmp_path: Path) -> None:
    problem = only_error(check(tmp_path, variant(active={"from": "2026-05-01", "until": "2026-04-30"})))
    assert problem.field == "active"
    assert problem.message == "until 2026-04-30 is before from 2026-05-01; swap them"


def test_unknown_event_kind_lists_the_valid_ones(tmp_path: Path) -> None:
    data = variant()
    data["audience"]["care_gap"][0]["event"] = "flu_shot"
    problem = only_error(check(tmp_path, data))
    assert problem.field == "audience.care_gap[0].event"
    assert problem.message.startswith('unknown event kind "flu_shot"; use one of colonoscopy, fit, fit_dna,')
    assert problem.message.endswith(
        "hpv_test, flu_vaccine, colorectal_cancer, total_colectomy, bilateral_mastectomy, "
        "hysterectomy_no_cervix, hospice, palliative_care"
    )


def test_care_gap_needs_exactly_one_of_within_and_since(tmp_path: Path) -> None:
    data = variant()
    data["audience"]["care_gap"] = [
        {"event": "fit", "within": "1y", "since": "07-01"},
        {"event": "mammogram"},
    ]
    found = {p.field: p.message for p in errors(check(tmp_path, data))}
    assert found["audience.care_gap[0]"].startswith("has both of within and since; give exactly one:")
    assert found["audience.care_gap[1]"].startswith("has neither of within and since; give exactly one:")


@pytest.mark.parametrize("since", ["13-01", "02-29", "7-1", "07/01", "00-10"])
def test_since_must_be_a_month_day_of_every_year(tmp_path: Path, since: str) -> None:
    data = variant()
    data["audience"]["care_gap"][1]["since"] = since
    problem = only_error(check(tmp_path, data))
    assert problem.field == "audience.care_gap[1].since"
    assert 'is not a month and day that occurs every year; write "MM-DD"' in problem.message


def test_age_min_above_max(tmp_path: Path) -> None:
    data = variant()
    data["audience"]["age"] = {"min": 75, "max": 45}
    problem = only_error(check(tmp_path, data))
    assert (problem.field, problem.message) == (
        "audience.age",
        "min 75 is above max 45; swap them (both ends are inclusive)",
    )


def test_age_out_of_range(tmp_path: Path) -> None:
    data = variant()
    data["audience"]["age"]["min"] = -1
    problem = only_error(check(tmp_path, data))
    assert (problem.field, problem.message) == (
        "audience.age.min",
        "-1 is out of range; use a number at least 0",
    )


@pytest.mark.parametrize(("start", "end"), [("18:00", "09:00"), ("09:00", "09:00")])
def test_send_window_start_must_be_before_end(tmp_path: Path, start: str, end: str) -> None:
    problem = only_error(check(tmp_path, variant(send_window={"start": start, "end": end})))
    assert problem.field == "send_window"
    assert problem.message.startswith(f"start {start} is not before end {end};")


def test_bad_time_of_day(tmp_path: Path) -> None:
    problem = only_error(check(tmp_path, variant(send_window={"start": "9am"})))
    assert problem.field == "send_window.start"
    assert problem.message == '"9am" is not a time of day; write 24-hour "HH:MM" in quotes, such as "09:00"'


def test_unknown_weekday(tmp_path: Path) -> None:
    found = {
        p.field: p.message for p in errors(check(tmp_path, variant(send_window={"days": ["monday", "xyz"]})))
    }
    assert found == {
        "send_window.days[0]": 'unknown weekday "monday"; did you mean mon? '
        "use mon, tue, wed, thu, fri, sat, sun",
        "send_window.days[1]": 'unknown weekday "xyz"; use mon, tue, wed, thu, fri, sat, sun',
    }


def test_send_window_needs_a_day(tmp_path: Path) -> None:
    problem = only_error(check(tmp_path, variant(send_window={"days": []})))
    assert (problem.field, problem.message) == (
        "send_window.days",
        "the send window has no days; list at least one, such as [mon, tue, wed, thu, fri]",
    )


def test_id_must_match_the_file_name(tmp_path: Path) -> None:
    problem = only_error(check(tmp_path, BASE, name="other.yaml"))
    assert (problem.path, problem.field) == ("other.yaml", "id")
    assert (
        problem.message
        == "id test-campaign does not match the file name other; rename the file or set id: other"
    )


def test_id_must_match_the_pattern(tmp_path: Path) -> None:
    problem = only_error(check(tmp_path, variant(id="Test Campaign")))
    assert problem.field == "id"
    assert problem.message.startswith(
        '"Test Campaign" is not a valid campaign id; use lowercase letters, digits'
    )


def test_duplicate_step_ids(tmp_path: Path) -> None:
    data = variant()
    data["steps"][1]["id"] = "invite"
    problem = only_error(check(tmp_path, data))
    assert (problem.field, problem.message) == (
        "steps[1].id",
        "duplicate step id invite (also steps[0]); rename one",
    )


def test_unknown_placeholder_names_the_allowed_ones(tmp_path: Path) -> None:
    data = variant()
    data["steps"][1]["text"]["es"] = "Hola {first_name} {last_name}"
    problem = only_error(check(tmp_path, data))
    assert str(problem) == (
        "test-campaign.yaml: steps[1].text.es: unknown placeholder {last_name}; "
        "use only {first_name}, {clinic_name}, {clinic_phone}, {link}"
    )


def test_malformed_braces_and_unknown_placeholders_are_all_reported(tmp_path: Path) -> None:
    data = variant()
    data["steps"][1]["text"]["en"] = "Hi {first_name} {birth_date}, {oops"
    data["replies"][0]["answer"]["en"] = "Thanks {first_name!r}"
    found = [(p.field, p.message.split(";")[0]) for p in errors(check(tmp_path, data))]
    assert found == [
        ("steps[1].text.en", "malformed braces (every { needs a matching })"),
        ("steps[1].text.en", "unknown placeholder {birth_date}"),
        ("replies[0].answer.en", "placeholder {first_name} takes no format or conversion"),
    ]


def test_missing_default_language_text(tmp_path: Path) -> None:
    data = variant(default_language="es")
    data["steps"][0]["text"] = {"es": "Hola. Responda STOP para no recibir más mensajes."}
    found = {p.field: p.message for p in errors(check(tmp_path, data))}
    assert found == {
        "steps[1].text": 'no es text (the default language); add es: "..."',
        "replies[0].answer": 'no es text (the default language); add es: "..."',
    }


@pytest.mark.parametrize(
    ("keyword", "family"),
    [
        ("STOP", "opt-out"),
        ("unsubscribe", "opt-out"),
        ("Quit", "opt-out"),
        ("START", "opt-in"),
        ("info", "help"),
    ],
)
def test_reserved_keywords(tmp_path: Path, keyword: str, family: str) -> None:
    data = variant()
    data["replies"][1]["keywords"].append(keyword)
    problem = only_error(check(tmp_path, data))
    assert problem.field == "replies[1].keywords[2]"
    assert problem.message.startswith(f"{keyword} is reserved for {family} (")
    assert problem.message.endswith("; choose another keyword")


def test_overlapping_keywords_compare_case_folded_but_keep_accents(tmp_path: Path) -> None:
    data = variant()
    data["replies"][1]["keywords"] = ["CALL", "yes", "Sí", "SÍ"]
    found = [(p.field, p.message) for p in errors(check(tmp_path, data))]
    assert found == [
        (
            "replies[1].keywords[1]",
            "keyword yes is also replies[0].keywords[0]; a keyword can lead to one outcome only, remove one",
        ),
        (
            "replies[1].keywords[2]",
            "keyword Sí is also replies[0].keywords[2]; a keyword can lead to one outcome only, remove one",
        ),
        (
            "replies[1].keywords[3]",
            "keyword SÍ is also replies[0].keywords[2]; a keyword can lead to one outcome only, remove one",
        ),
    ]


def test_keyword_must_be_one_word(tmp_path: Path) -> None:
    data = variant()
    data["replies"][0]["keywords"] = ["YES PLEASE"]
    problem = only_error(check(tmp_path, data))
    assert problem.field == "replies[0].keywords[0]"
    assert "is not one word" in problem.message


def test_duplicate_campaign_ids_across_files(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = write(tmp_path / "a", BASE), write(tmp_path / "b", BASE)
    campaigns, problems = validate_files([first, second], settings=get_settings())
    problem = only_error(problems)
    assert (problem.path, problem.field) == ("b/test-campaign.yaml", "id")
    assert problem.message == (
        "campaign id test-campaign is also used by a/test-campaign.yaml; remove one file"
    )
    assert list(campaigns) == ["test-campaign"]


def test_every_error_in_a_file_is_reported_at_once_in_file_order(tmp_path: Path) -> None:
    data = variant(sourse="x", re_enroll_after="soon")
    data["audience"]["age"] = {"min": 80, "max": 20}
    data["steps"][1]["id"] = "invite"
    data["steps"][1]["text"]["en"] = "{last_name}"
    data["replies"][1]["keywords"] = ["STOP"]
    campaigns, problems = validate_files([write(tmp_path, data)], settings=get_settings())
    assert campaigns == {}
    fields = [p.field for p in errors(problems)]
    assert fields == [
        "audience.age",
        "re_enroll_after",
        "steps[1].id",
        "steps[1].text.en",
        "replies[1].keywords[0]",
        "sourse",
    ]


def test_empty_and_non_mapping_files(tmp_path: Path) -> None:
    assert only_error(check(tmp_path, "")).message.startswith("the file is empty;")
    assert only_error(check(tmp_path, "- a\n- b\n")).message.startswith(
        "expected keys such as id, name and steps"
    )
    _, problems = validate_files([tmp_path / "missing.yaml"], settings=get_settings())
    assert only_error(problems).message.startswith("cannot read it (")


def test_yaml_1_1_surprises_are_avoided(tmp_path: Path) -> None:
    text = (ROOT / "campaigns" / "colorectal-screening.yaml").read_text(encoding="utf-8")
    text = text.replace("id: colorectal-screening", "id: test-campaign")
    text = text.replace('start: "09:00"', "start: 09:00")  # unquoted: YAML 1.1 would read 540
    campaign = parse_campaign(text, path="test-campaign.yaml", settings=get_settings())
    assert campaign.send_window.start == dt.time(9, 0)
    assert any(rule.keywords == ["NO"] for rule in campaign.replies)  # not False
    assert campaign.active.from_ == dt.date(2026, 1, 1)


# --- warnings -------------------------------------------------------------------------------------


def test_long_text_warns_with_segments_and_the_character_forcing_ucs2(tmp_path: Path) -> None:
    data = variant()
    data["steps"][1]["text"]["es"] = "Información " + "x" * 150
    data["steps"][1]["text"]["en"] = "y" * 320
    campaigns, problems = validate_files([write(tmp_path, data)], settings=get_settings())
    assert "test-campaign" in campaigns  # warnings do not block
    found = {p.field: p.message for p in problems if p.severity == "warning"}
    assert found["steps[1].text.es"].startswith(
        'about 3 segments per message with a 10-letter first name (UCS-2 because of "ó": 162 UTF-16 units'
    )
    assert found["steps[1].text.en"].startswith(
        "about 3 segments per message with a 10-letter first name (GSM-7:"
    )


def test_first_step_without_opt_out_language_warns(tmp_path: Path) -> None:
    data = variant()
    data["steps"][0]["text"]["es"] = "Hola {first_name}."
    problems = check(tmp_path, data)
    assert errors(problems) == []
    [warning] = problems
    assert str(warning) == (
        "test-campaign.yaml: steps[0].text.es: warning: the first message has no opt-out instructions; "
        'add "Reply STOP to opt out." (carriers expect them in the first message, keeping the word STOP '
        "in every language)"
    )


def test_send_window_outside_legal_hours_warns(tmp_path: Path) -> None:
    problems = check(tmp_path, variant(send_window={"start": "07:00", "end": "22:00"}))
    assert errors(problems) == []
    assert [p.field for p in problems] == ["send_window.start", "send_window.end"]
    assert problems[0].message.startswith("07:00 is before 08:00; messages are never sent before 08:00")


# --- loading --------------------------------------------------------------------------------------


def test_load_campaigns_reads_the_configured_directory() -> None:
    campaigns = load_campaigns(settings=get_settings())
    assert sorted(campaigns) == SHIPPED
    path = ROOT / "campaigns" / "flu-season.yaml"
    assert campaigns["flu-season"].content_hash == content_hash(path)


def test_load_campaigns_lists_every_error(tmp_path: Path) -> None:
    write(tmp_path, variant(re_enroll_after="soon", name=""))
    with pytest.raises(UserError) as caught:
        load_campaigns(tmp_path, settings=get_settings())
    message = str(caught.value)
    assert message.startswith("invalid campaign files (2 errors;")
    assert "test-campaign.yaml: name: name is empty; write it" in message
    assert 'test-campaign.yaml: re_enroll_after: "soon" is not a duration' in message


def test_load_campaigns_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_campaigns(tmp_path / "nowhere", settings=get_settings())


def test_parse_campaign_raises_user_error() -> None:
    with pytest.raises(UserError, match=r"<text>: audience: missing required field audience"):
        parse_campaign(
            yaml.safe_dump({k: v for k, v in BASE.items() if k != "audience"}), settings=get_settings()
        )


def _runtime_on(directory: Path) -> Runtime:
    return Runtime(get_settings().model_copy(update={"campaigns_dir": str(directory)}))


def _touch_later(path: Path) -> None:
    """A save one second later: file systems with coarse mtimes still see a change."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_runtime_campaigns_are_cached_while_the_directory_is_unchanged(tmp_path: Path) -> None:
    write(tmp_path, BASE)
    runtime = _runtime_on(tmp_path)
    first = runtime.campaigns
    (tmp_path / ".test-campaign.yaml.swp").write_text("editor backup")  # not a campaign file
    (tmp_path / "notes.txt").write_text("not a campaign file either")
    assert runtime.campaigns is first


def test_runtime_campaigns_see_a_new_yml_file(tmp_path: Path) -> None:
    write(tmp_path, BASE)
    runtime = _runtime_on(tmp_path)
    assert sorted(runtime.campaigns) == ["test-campaign"]
    write(tmp_path, variant(id="other-campaign"), "other-campaign.yml")
    assert sorted(runtime.campaigns) == ["other-campaign", "test-campaign"]


def test_runtime_campaigns_see_an_edited_file(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    runtime = _runtime_on(tmp_path)
    assert runtime.campaigns["test-campaign"].name == "Test campaign"
    write(tmp_path, variant(name="Test campaign, second edition"))
    assert runtime.campaigns["test-campaign"].name == "Test campaign, second edition"
    write(tmp_path, variant(name="Test campaign, third edition!"))  # the same size as the second
    _touch_later(path)
    assert runtime.campaigns["test-campaign"].name == "Test campaign, third edition!"


def test_runtime_campaigns_see_a_deleted_file(tmp_path: Path) -> None:
    write(tmp_path, BASE)
    other = write(tmp_path, variant(id="other-campaign"), "other-campaign.yaml")
    _touch_later(other)  # the newest file stays; the deleted one is the older
    runtime = _runtime_on(tmp_path)
    assert sorted(runtime.campaigns) == ["other-campaign", "test-campaign"]
    (tmp_path / "test-campaign.yaml").unlink()
    assert sorted(runtime.campaigns) == ["other-campaign"]


def test_the_models_and_texts_import_neither_yaml_nor_difflib() -> None:
    """Workers that only render texts or read the models need no YAML parser or suggestions."""
    code = (
        "import sys\n"
        "import outreach.campaigns.schema, outreach.campaigns.texts, outreach.campaigns.dates\n"
        "from outreach.campaigns import CampaignFile, SendWindow, render\n"
        "print(sorted({'yaml', 'difflib'} & set(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# --- dates ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [
        (dt.date(2026, 1, 31), 1, dt.date(2026, 2, 28)),
        (dt.date(2028, 1, 31), 1, dt.date(2028, 2, 29)),
        (dt.date(2026, 3, 31), -1, dt.date(2026, 2, 28)),
        (dt.date(2028, 2, 29), -12, dt.date(2027, 2, 28)),
        (dt.date(2028, 2, 29), 48, dt.date(2032, 2, 29)),
        (dt.date(2026, 1, 15), -1, dt.date(2025, 12, 15)),
        (dt.date(2026, 12, 15), 1, dt.date(2027, 1, 15)),
        (dt.date(2026, 5, 31), -3, dt.date(2026, 2, 28)),
    ],
)
def test_add_months(day: dt.date, months: int, expected: dt.date) -> None:
    assert add_months(day, months) == expected


def test_duration_parse_and_arithmetic() -> None:
    assert Duration.parse("10y") == Duration(amount=10, unit="y")
    assert str(Duration.parse("2w")) == "2w"
    assert Duration.parse("1y").before(dt.date(2028, 2, 29)) == dt.date(2027, 2, 28)
    assert Duration.parse("1y").after(dt.date(2028, 2, 29)) == dt.date(2029, 2, 28)
    assert Duration.parse("1m").after(dt.date(2026, 1, 31)) == dt.date(2026, 2, 28)
    assert Duration.parse("2w").after(dt.date(2026, 2, 20)) == dt.date(2026, 3, 6)
    assert Duration.parse("365d").before(dt.date(2028, 3, 1)) == dt.date(2027, 3, 2)  # 2028 is leap
    assert Duration.parse("0d").after(dt.date(2026, 1, 1)) == dt.date(2026, 1, 1)
    for bad in ("1.5y", "10Y", "y", "-1d", "10 y"):
        with pytest.raises(ValueError, match="is not a duration"):
            Duration.parse(bad)


def test_window_start_within() -> None:
    gap = CareGap(event="colonoscopy", within="10y")
    assert gap.window_start(dt.date(2026, 3, 15)) == dt.date(2016, 3, 16)
    one_year = CareGap(event="fit", within="1y")
    # planning day - 1y < event date <= planning day
    assert one_year.window_start(dt.date(2028, 2, 29)) == dt.date(2027, 3, 1)
    assert one_year.window_start(dt.date(2027, 1, 1)) == dt.date(2026, 1, 2)


@pytest.mark.parametrize(
    ("on", "expected"),
    [
        (dt.date(2026, 6, 30), dt.date(2025, 7, 1)),
        (dt.date(2026, 7, 1), dt.date(2026, 7, 1)),
        (dt.date(2026, 7, 2), dt.date(2026, 7, 1)),
        (dt.date(2027, 1, 1), dt.date(2026, 7, 1)),
    ],
)
def test_window_start_since(on: dt.date, expected: dt.date) -> None:
    assert CareGap(event="flu_vaccine", since="07-01").window_start(on) == expected


def test_is_active_and_text_for() -> None:
    campaign = CampaignFile.model_validate(BASE)
    assert not campaign.is_active(dt.date(2025, 12, 31))
    assert campaign.is_active(dt.date(2026, 1, 1))
    assert campaign.is_active(dt.date(2026, 12, 31))
    assert not campaign.is_active(dt.date(2027, 1, 1))
    texts = campaign.steps[0].text
    assert campaign.text_for(texts, "es") == ("es", "Hola. Responda STOP.")
    assert campaign.text_for(texts, "vi") == ("en", texts["en"])


# --- rendering --------------------------------------------------------------------------------------


def test_render_fills_the_whitelisted_placeholders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTREACH_LINK", "https://example.org/book")
    get_settings.cache_clear()
    text = render(
        "Hi {first_name}, {clinic_name} ({clinic_phone}) {link} {{literal}}",
        first_name="Ana",
        settings=get_settings(),
    )
    assert text == "Hi Ana, Riverside Health ((617) 555-0100) https://example.org/book {literal}"


def test_render_names_the_missing_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OUTREACH_CLINIC_NAME")
    get_settings.cache_clear()
    settings = get_settings()
    assert render("Hi {first_name}", first_name="Ana", settings=settings) == "Hi Ana"
    with pytest.raises(
        UserError, match=r"^OUTREACH_CLINIC_NAME is not set, but a campaign text uses \{clinic_name\}"
    ):
        render("{clinic_name}", first_name="Ana", settings=settings)
    with pytest.raises(UserError, match=r"^OUTREACH_LINK is not set"):
        render("{link}", first_name="Ana", settings=settings)


@pytest.mark.parametrize(
    "template", ["{last_name}", "{first_name.__class__}", "{}", "{0}", "{first_name:>20}", "{"]
)
def test_render_refuses_anything_but_the_whitelist(template: str) -> None:
    with pytest.raises(UserError, match="cannot render a campaign text"):
        render(template, first_name="Ana", settings=get_settings())


# --- CLI --------------------------------------------------------------------------------------------


def test_cli_validate_shipped_campaigns() -> None:
    """A clean checkout validates clean: the 3-segment Spanish invites are acknowledged."""
    result = CliRunner().invoke(main, ["campaigns", "validate"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines() == [
        "4 files checked: 0 errors, 0 warnings (4 acknowledged; --verbose lists them)"
    ]
    verbose = CliRunner().invoke(main, ["campaigns", "validate", "--verbose"])
    lines = verbose.output.strip().splitlines()
    assert [line.split(": ")[1:3] for line in lines[:-1]] == [
        [
            "steps[0].variants[0].text.es" if name == "colorectal-screening" else "steps[0].text.es",
            "warning (acknowledged)",
        ]
        for name in SHIPPED
    ]
    assert lines[-1] == "4 files checked: 0 errors, 0 warnings (4 acknowledged)"


def test_cli_validate_reports_errors_and_exits_1(tmp_path: Path) -> None:
    data = variant()
    data["steps"][1]["text"]["es"] = "Hola {last_name}"
    write(tmp_path, data)
    write(tmp_path, BASE, name="other.yaml")
    result = CliRunner().invoke(main, ["campaigns", "validate", str(tmp_path)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines == [
        "other.yaml: id: id test-campaign does not match the file name other; "
        "rename the file or set id: other",
        "test-campaign.yaml: steps[1].text.es: unknown placeholder {last_name}; "
        "use only {first_name}, {clinic_name}, {clinic_phone}, {link}",
        "2 files checked: 2 errors, 0 warnings",
    ]


def test_cli_validate_warnings_alone_exit_0(tmp_path: Path) -> None:
    data = variant()
    data["steps"][0]["text"]["en"] = "Hi"
    path = write(tmp_path, data)
    result = CliRunner().invoke(main, ["campaigns", "validate", str(path)])
    assert result.exit_code == 0
    assert "test-campaign.yaml: steps[0].text.en: warning: the first message has no opt-out" in result.output
    assert result.output.strip().endswith("1 file checked: 0 errors, 1 warning")


def test_cli_validate_empty_directory_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["campaigns", "validate", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.startswith("error: no campaign files")
    assert "Traceback" not in result.output


def test_cli_list() -> None:
    result = CliRunner().invoke(main, ["campaigns", "list"])
    assert result.exit_code == 0, result.output
    assert "colorectal-screening  Colorectal cancer screening" in result.output
    assert "  active     2026-09-01 to 2027-03-31" in result.output
    assert (
        "  steps      invite +0d, reminder +7d if no reply, last-reminder +21d if no reply" in result.output
    )
    assert "  languages  en, es" in result.output


def test_cli_list_json() -> None:
    result = CliRunner().invoke(main, ["campaigns", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["id"]: row for row in json.loads(result.output)["campaigns"]}
    assert sorted(rows) == SHIPPED
    flu = rows["flu-season"]
    assert flu["active"] == {"from": "2026-09-01", "until": "2027-03-31"}
    assert flu["steps"] == [
        {"id": "invite", "after": "0d", "only_if": None},
        {"id": "reminder", "after": "14d", "only_if": "no_reply"},
    ]
    assert flu["languages"] == ["en", "es"]
    assert len(flu["content_hash"]) == 64


def test_cli_list_with_an_invalid_file_is_a_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, variant(re_enroll_after="soon"))
    monkeypatch.setenv("OUTREACH_CAMPAIGNS_DIR", str(tmp_path))
    get_settings.cache_clear()
    result = CliRunner().invoke(main, ["campaigns", "list"])
    assert result.exit_code == 2
    assert result.output.startswith("error: invalid campaign files (1 error;")
    assert 'test-campaign.yaml: re_enroll_after: "soon" is not a duration' in result.output
    assert "Traceback" not in result.output


def test_send_window_with_no_time_inside_the_legal_hours_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "early.yaml"
    path.write_text(
        "id: early\nname: Early\nactive: {from: 2026-01-01}\naudience: {age: {min: 40, max: 75}}\n"
        'send_window: {days: [mon], start: "06:00", end: "07:30"}\n'
        'steps: [{id: invite, after: 0d, text: {en: "Hi {first_name}. Reply STOP to opt out."}}]\n'
    )
    _, problems = validate_files([path], settings=get_settings())
    errors = [p for p in problems if p.severity == "error"]
    assert [(p.field, "no time inside 08:00-21:00" in p.message) for p in errors] == [("send_window", True)]


# --- acknowledged warnings ---------------------------------------------------------------------


def _long_spanish_invite() -> dict[str, Any]:
    data = variant()
    data["steps"][0]["text"]["es"] = "Información " + "x" * 150 + " Responda STOP."
    return data


def test_an_acknowledged_warning_is_kept_but_marked(tmp_path: Path) -> None:
    data = _long_spanish_invite()
    data["acknowledge"] = [{"field": "steps[0].text.es", "warning": "segments"}]
    campaigns, problems = validate_files([write(tmp_path, data)], settings=get_settings())
    [problem] = problems
    assert (problem.field, problem.severity, problem.acknowledged) == ("steps[0].text.es", "warning", True)
    assert str(problem).startswith("test-campaign.yaml: steps[0].text.es: warning (acknowledged): about 3")
    assert campaigns["test-campaign"].acknowledge[0].warning == "segments"


@pytest.mark.parametrize(
    "acknowledgement",
    [
        {"field": "steps[1].text.es", "warning": "segments"},  # another field
        {"field": "steps[0].text.es", "warning": "opt_out"},  # another warning
    ],
)
def test_an_acknowledgement_covers_only_its_field_and_warning(
    tmp_path: Path, acknowledgement: dict[str, str]
) -> None:
    data = _long_spanish_invite()
    data["acknowledge"] = [acknowledgement]
    [problem] = check(tmp_path, data)
    assert problem.severity == "warning" and not problem.acknowledged


def test_an_unknown_warning_name_is_an_error_that_lists_the_names(tmp_path: Path) -> None:
    data = variant(acknowledge=[{"field": "steps[0].text.es", "warning": "segment"}])
    problem = only_error(check(tmp_path, data))
    assert problem.field == "acknowledge[0].warning"
    assert (
        problem.message
        == '"segment" is not allowed here; did you mean segments? use segments or opt_out or quiet_hours'
    )


def test_cli_validate_hides_acknowledged_warnings_unless_verbose(tmp_path: Path) -> None:
    data = _long_spanish_invite()
    data["acknowledge"] = [{"field": "steps[0].text.es", "warning": "segments"}]
    data["steps"][0]["text"]["en"] = "Hi"  # no STOP: a warning nobody acknowledged
    path = write(tmp_path, data)
    quiet = CliRunner().invoke(main, ["campaigns", "validate", str(path)])
    assert quiet.exit_code == 0, quiet.output
    assert quiet.output.strip().splitlines() == [
        "test-campaign.yaml: steps[0].text.en: warning: the first message has no opt-out instructions; "
        'add "Reply STOP to opt out." (carriers expect them in the first message, keeping the word STOP '
        "in every language)",
        "1 file checked: 0 errors, 1 warning (1 acknowledged; --verbose lists them)",
    ]
    verbose = CliRunner().invoke(main, ["campaigns", "validate", "-v", str(path)])
    assert "steps[0].text.es: warning (acknowledged): about 3 segments" in verbose.output


# --- files no campaign could be ------------------------------------------------------------------


def _alias_bomb(levels: int = 12) -> str:
    """Each level lists the one before it nine times: 9**12 values from 12 short lines."""
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_fails_fast_as_one_problem(tmp_path: Path) -> None:
    import time

    path = tmp_path / "bomb.yaml"
    path.write_text(_alias_bomb())
    began = time.perf_counter()
    result = CliRunner().invoke(main, ["campaigns", "validate", str(path)])
    assert time.perf_counter() - began < 1.0
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[0] == (
        "bomb.yaml: (file): too many YAML aliases (99, standing for over 20000 values); "
        "campaign files need none, write the values out"
    )


def test_many_aliases_are_refused_while_parsing(tmp_path: Path) -> None:
    text = "x: &x 1\nys: [" + ", ".join(["*x"] * 150) + "]\n"
    [problem] = _problems(tmp_path, text)
    assert problem.message == "too many YAML aliases (over 100); campaign files need none"


def _problems(directory: Path, text: str) -> list[CampaignProblem]:
    path = directory / "test-campaign.yaml"
    path.write_text(text)
    return validate_files([path], settings=get_settings())[1]


def test_a_file_over_a_megabyte_is_not_read(tmp_path: Path) -> None:
    [problem] = _problems(tmp_path, "# " + "x" * 1_000_000 + "\n")
    assert problem.message == "is over 1 MB; a campaign file is a few kB, check the path"


def test_deep_nesting_is_one_problem_not_a_crash(tmp_path: Path) -> None:
    [problem] = _problems(tmp_path, "a: " + "[" * 50_000 + "]" * 50_000 + "\n")
    assert problem.message.startswith("is nested too deeply to be a campaign file")


def test_the_loader_of_tick_and_web_refuses_the_bomb_too(tmp_path: Path) -> None:
    """load_campaigns (tick, web, the workers' runtime) reads through the same checks."""
    (tmp_path / "bomb.yaml").write_text(_alias_bomb())
    with pytest.raises(UserError, match=r"bomb\.yaml: \(file\): too many YAML aliases"):
        load_campaigns(tmp_path, settings=get_settings())


# --- issue #13: exclusions, holdout, link, variants, activates -----------------------------------


def _with(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"holdout": "60%"}, "holdout", "outside 0%-50%"),
        ({"holdout": "a tenth"}, "holdout", "not a percentage"),
        ({"link": "example.org/book"}, "link", "not a web address"),
    ],
)
def test_outcome_settings_are_checked(
    tmp_path: Path, changes: dict[str, Any], field: str, words: str
) -> None:
    problem = only_error(check(tmp_path, _with(**changes)))
    assert problem.field == field and words in problem.message


def test_an_exclusion_names_a_known_event_kind(tmp_path: Path) -> None:
    data = _with()
    data["audience"]["exclude"] = [{"event": "hospice", "within": "1y"}, {"event": "colectomy"}]
    problem = only_error(check(tmp_path, data))
    assert problem.field == "audience.exclude[1].event" and "unknown event kind" in problem.message


def test_a_step_has_a_text_or_variants_not_both(tmp_path: Path) -> None:
    data = _with()
    data["steps"][1]["variants"] = [{"id": "a", "weight": 1, "text": {"en": "Hi {first_name}."}}]
    problem = only_error(check(tmp_path, data))
    assert problem.field == "steps[1]" and "both of text and variants" in problem.message


def test_variants_and_declines_load_and_variant_texts_are_checked(tmp_path: Path) -> None:
    data = _with(holdout="10%", link="https://example.org/book")
    data["steps"][1] = {
        "id": "reminder",
        "after": "7d",
        "variants": [
            {"id": "a", "weight": 70, "text": {"en": "Hi {first_name}: {link}"}},
            {"id": "b", "weight": 30, "text": {"en": "Hi {last_name}."}},
        ],
    }
    data["replies"].append({"keywords": ["NO"], "outcome": "declined", "activates": False})
    problem = only_error(check(tmp_path, data))
    assert problem.field == "steps[1].variants[1].text.en" and "{last_name}" in problem.message
    data["steps"][1]["variants"][1]["text"] = {"en": "Hi {first_name}."}
    campaigns, problems = validate_files([write(tmp_path, data)], settings=get_settings())
    assert errors(problems) == []
    campaign = campaigns["test-campaign"]
    assert (campaign.holdout, campaign.link, campaign.replies[-1].activates) == (
        10.0,
        "https://example.org/book",
        False,
    )
    assert [(v, w) for v, w, _ in campaign.steps[1].wordings()] == [("a", 70), ("b", 30)]
