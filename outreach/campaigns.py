"""Campaign files: the schema a care team writes (DESIGN.md §5), loading, validation and rendering.

A campaign file is the product's main interface, and the people who write it are nurses and
care managers, not programmers. So validation reports every problem in a file at once, each as
`FILE: field.path: problem; fix`, and the YAML is read with YAML 1.2 scalars: YAML 1.1 would
silently turn a NO keyword into false, 09:00 into 540 and 2026-02-30 into a crash.

Loaded campaigns carry the sha256 of the file's bytes as `CampaignFile.content_hash` (a read-only
property over a pydantic private attribute; None for a campaign built directly from a dict), so
the scheduler can record which version of a protocol a patient was enrolled under.
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import re
import string
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from outreach.errors import UserError
from outreach.keywords import normalize, reserved, single_words
from outreach.segments import count_segments, non_gsm_characters

if TYPE_CHECKING:
    from outreach.config import Settings

EVENT_KINDS = (
    "colonoscopy",
    "fit",
    "fit_dna",
    "ct_colonography",
    "flexible_sigmoidoscopy",
    "mammogram",
    "cervical_cytology",
    "hpv_test",
    "flu_vaccine",
)
PLACEHOLDERS = ("first_name", "clinic_name", "clinic_phone", "link")
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# The settings each placeholder reads; a template using an unset one cannot be rendered.
PLACEHOLDER_SETTINGS = {
    "clinic_name": "OUTREACH_CLINIC_NAME",
    "clinic_phone": "OUTREACH_CLINIC_PHONE",
    "link": "OUTREACH_LINK",
}
# Sends outside these local hours are always held back (DESIGN.md §7.3), whatever a file says.
QUIET_BEFORE, QUIET_AFTER = dt.time(8, 0), dt.time(21, 0)

_DURATION = re.compile(r"^(\d+)([dwmy])$")
_ID = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_STEP_ID = re.compile(r"^[a-z0-9]+([-_][a-z0-9]+)*$")
_OUTCOME = re.compile(r"^[a-z][a-z0-9_]*$")
_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_MONTH_DAY = re.compile(r"^(\d{2})-(\d{2})$")
_BRACED = re.compile(r"(?<!\{)\{([^{}]*)\}")
_OPT_OUT = re.compile(r"\bSTOP\b", re.IGNORECASE)


_OWN = "campaign_"  # prefix of the error kinds raised here, whose messages need no rewording


def _fail(kind: str, message: str) -> PydanticCustomError:
    """A validation error whose message is already `problem; fix` (no template substitution)."""
    return PydanticCustomError(_OWN + kind, message)


# --- durations and dates ----------------------------------------------------------------------


class Duration(BaseModel):
    """`Nd`, `Nw`, `Nm` or `Ny`; months and years are calendar months and years."""

    model_config = ConfigDict(frozen=True)
    amount: int
    unit: Literal["d", "w", "m", "y"]

    @classmethod
    def parse(cls, text: str) -> Duration:
        match = _DURATION.match(text.strip())
        if not match:
            raise ValueError(f"{text!r} is not a duration; write a number and d, w, m or y (e.g. 10y, 7d)")
        return cls(amount=int(match.group(1)), unit=match.group(2))

    def months(self) -> int:
        return self.amount * 12 if self.unit == "y" else self.amount if self.unit == "m" else 0

    def days(self) -> int:
        return self.amount * 7 if self.unit == "w" else self.amount if self.unit == "d" else 0

    def before(self, day: dt.date) -> dt.date:
        """`day` minus this duration (Feb 29 minus 1y is Feb 28)."""
        return add_months(day, -self.months()) - dt.timedelta(days=self.days())

    def after(self, day: dt.date) -> dt.date:
        """`day` plus this duration (Jan 31 plus 1m is the last day of February)."""
        return add_months(day, self.months()) + dt.timedelta(days=self.days())

    def __str__(self) -> str:
        return f"{self.amount}{self.unit}"


def add_months(day: dt.date, months: int) -> dt.date:
    """Calendar month arithmetic clamped to the month's last day."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    month += 1
    for last in (31, 30, 29, 28):
        try:
            return day.replace(year=year, month=month, day=min(day.day, last))
        except ValueError:
            continue
    raise AssertionError("unreachable")


def _duration(value: object) -> Duration:
    if isinstance(value, Duration):
        return value
    if isinstance(value, str):
        try:
            return Duration.parse(value)
        except ValueError:
            pass
    raise _fail(
        "duration",
        f"{_show(value)} is not a duration; write a whole number and d, w, m or y, such as 7d, 2w, 6m or 10y",
    )


def _optional_duration(value: object) -> Duration | None:
    return None if value is None else _duration(value)


def _date(value: object) -> dt.date:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str) and _DATE.match(value.strip()):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            raise _fail(
                "date", f"{_show(value)} is not a day of the calendar; check the month and day (YYYY-MM-DD)"
            ) from None
    raise _fail("date", f"{_show(value)} is not a date; write YYYY-MM-DD, such as 2026-09-01")


def _time(value: object) -> dt.time:
    if isinstance(value, dt.time):
        return value
    match = _TIME.match(value.strip()) if isinstance(value, str) else None
    if not match:
        raise _fail(
            "time", f'{_show(value)} is not a time of day; write 24-hour "HH:MM" in quotes, such as "09:00"'
        )
    return dt.time(int(match.group(1)), int(match.group(2)))


def _month_day(value: str) -> str:
    match = _MONTH_DAY.match(value)
    try:
        if not match:
            raise ValueError
        dt.date(2001, int(match.group(1)), int(match.group(2)))  # 2001: Feb 29 must not pass
    except ValueError:
        raise _fail(
            "month_day",
            f'{_show(value)} is not a month and day that occurs every year; write "MM-DD" in quotes, '
            'such as "07-01"',
        ) from None
    return value


def _optional_date(value: object) -> dt.date | None:
    return None if value is None else _date(value)


def _optional_month_day(value: str | None) -> str | None:
    return None if value is None else _month_day(value)


DurationField = Annotated[Duration, BeforeValidator(_duration)]
OptionalDuration = Annotated[Duration | None, BeforeValidator(_optional_duration)]
DateField = Annotated[dt.date, BeforeValidator(_date)]
TimeField = Annotated[dt.time, BeforeValidator(_time)]


# --- texts ------------------------------------------------------------------------------------


def template_problems(template: str) -> list[str]:
    """What is wrong with a message template, each as `problem; fix`; empty when it is fine."""
    if not template.strip():
        return ["the text is empty; write the message"]
    problems = []
    try:
        fields = [
            (name, spec or conversion) for _, name, spec, conversion in string.Formatter().parse(template)
        ]
    except ValueError:
        # Still name the placeholders that are well formed, so one run shows every problem.
        fields = [(match.group(1), None) for match in _BRACED.finditer(template)]
        problems.append(
            "malformed braces (every { needs a matching }); write placeholders as {first_name}, "
            "and a literal brace as {{ or }}"
        )
    allowed = ", ".join(f"{{{name}}}" for name in PLACEHOLDERS)
    for name, extra in fields:
        if name is None:
            continue
        if name not in PLACEHOLDERS:
            problems.append(f"unknown placeholder {{{name}}}; use only {allowed}")
        elif extra:
            problems.append(f"placeholder {{{name}}} takes no format or conversion; write {{{name}}}")
    return problems


def _template(value: str) -> str:
    problems = template_problems(value)
    if problems:
        raise _fail("template", problems[0])
    return value


def render(template: str, *, first_name: str, settings: Settings) -> str:
    """Fill the whitelisted placeholders; nothing else about a patient can reach a message
    (DESIGN.md §7.7), and an unset setting a template needs stops the run rather than sending
    "Hi Ana, None here"."""
    problems = template_problems(template)
    if problems:
        raise UserError(f"cannot render a campaign text: {problems[0]}")
    values: dict[str, str | None] = {
        "first_name": first_name,
        "clinic_name": settings.clinic_name,
        "clinic_phone": settings.clinic_phone,
        "link": settings.link,
    }
    out = []
    for literal, name, _spec, _conversion in string.Formatter().parse(template):
        out.append(literal)
        if name is None:
            continue
        value = values[name]
        if value is None:
            raise UserError(
                f"{PLACEHOLDER_SETTINGS[name]} is not set, but a campaign text uses {{{name}}}; "
                "set it in the environment or .env"
            )
        out.append(value)
    return "".join(out)


def _language(value: str) -> str:
    if not _LANGUAGE.match(value):
        raise _fail(
            "language", f"{_show(value)} is not a language code; write it in lowercase, such as en or es"
        )
    return value


Language = Annotated[str, AfterValidator(_language)]
Template = Annotated[str, AfterValidator(_template)]
Texts = dict[Language, Template]


def _keyword(value: str) -> str:
    word = value.strip()
    if not re.fullmatch(r"\w+", word):
        raise _fail(
            "keyword",
            f"{_show(value)} is not one word; replies are matched on their first word without "
            "punctuation, so use a single word such as YES",
        )
    # The classifier's own question: a word it answers before campaigns could never reach a rule.
    found = reserved(normalize(word), opted_out=False)
    if found is not None:
        words = ", ".join(single_words(found.family))
        label = found.family.label
        raise _fail("keyword", f"{word} is reserved for {label} ({words}); choose another keyword")
    return word


def _id(value: str) -> str:
    if not _ID.match(value) or len(value) > 64:
        raise _fail(
            "id",
            f"{_show(value)} is not a valid campaign id; use lowercase letters, digits and single dashes "
            "(at most 64), such as flu-season",
        )
    return value


def _step_id(value: str) -> str:
    if not _STEP_ID.match(value) or len(value) > 40:
        raise _fail(
            "step_id",
            f"{_show(value)} is not a valid step id; use lowercase letters, digits, dashes or underscores "
            "(at most 40), such as reminder-2",
        )
    return value


def _outcome(value: str) -> str:
    if not _OUTCOME.match(value) or len(value) > 64:
        raise _fail(
            "outcome",
            f"{_show(value)} is not a valid outcome; write lowercase_with_underscores, such as kit_requested",
        )
    return value


def _event(value: str) -> str:
    if value not in EVENT_KINDS:
        raise _fail("event", f"unknown event kind {_show(value)}; use one of {', '.join(EVENT_KINDS)}")
    return value


def _weekday(value: object) -> object:
    if isinstance(value, str) and value not in WEEKDAYS:
        guess = value.strip().lower()[:3]
        hint = f"did you mean {guess}? " if guess in WEEKDAYS else ""
        raise _fail("weekday", f"unknown weekday {_show(value)}; {hint}use {', '.join(WEEKDAYS)}")
    return value


# --- the schema -------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ActiveDates(_Strict):
    from_: DateField = Field(alias="from")
    until: Annotated[dt.date | None, BeforeValidator(_optional_date)] = None

    @model_validator(mode="after")
    def _ordered(self) -> ActiveDates:
        if self.until is not None and self.until < self.from_:
            raise _fail("dates", f"until {self.until} is before from {self.from_}; swap them")
        return self


class AgeRange(_Strict):
    min: int = Field(ge=0, le=130)
    max: int = Field(ge=0, le=130)

    @model_validator(mode="after")
    def _ordered(self) -> AgeRange:
        if self.min > self.max:
            raise _fail("age", f"min {self.min} is above max {self.max}; swap them (both ends are inclusive)")
        return self


class CareGap(_Strict):
    """Eligible only when no `event` happened in the look-back: `within` (planning day - within <
    date <= planning day) or `since` a month-day ("07-01": since the latest July 1 on or before
    the planning day)."""

    event: Annotated[str, AfterValidator(_event)]
    within: OptionalDuration = None
    since: Annotated[str | None, AfterValidator(_optional_month_day)] = None

    @model_validator(mode="after")
    def _one_look_back(self) -> CareGap:
        if (self.within is None) == (self.since is None):
            which = "both" if self.within is not None else "neither"
            raise _fail(
                "care_gap",
                f"has {which} of within and since; give exactly one: within (a look-back such as 10y) "
                'or since (a month-day such as "07-01")',
            )
        return self

    def window_start(self, on: dt.date) -> dt.date:
        """The earliest event date that still closes the gap on `on` (events from this day up to
        `on`, inclusive, count); for `within` that is the day after `on - within`."""
        if self.within is not None:
            return self.within.before(on) + dt.timedelta(days=1)
        assert self.since is not None
        month, day = (int(part) for part in self.since.split("-"))
        start = dt.date(on.year, month, day)
        return start if start <= on else dt.date(on.year - 1, month, day)


class Audience(_Strict):
    age: AgeRange
    sex: Literal["any", "female", "male"] = "any"
    care_gap: list[CareGap] = Field(default_factory=list)


def _some_days(days: list[Weekday]) -> list[Weekday]:
    if not days:
        raise _fail(
            "weekday", "the send window has no days; list at least one, such as [mon, tue, wed, thu, fri]"
        )
    return days


def _working_days() -> list[Weekday]:
    return ["mon", "tue", "wed", "thu", "fri"]


class SendWindow(_Strict):
    days: Annotated[list[Annotated[Weekday, BeforeValidator(_weekday)]], AfterValidator(_some_days)] = Field(
        default_factory=_working_days
    )
    start: TimeField = dt.time(9, 0)
    end: TimeField = dt.time(18, 0)

    @model_validator(mode="after")
    def _ordered(self) -> SendWindow:
        if self.start >= self.end:
            raise _fail(
                "send_window",
                f"start {self.start:%H:%M} is not before end {self.end:%H:%M}; the window is one stretch "
                "of a day in the patient's time zone, so start must be earlier than end",
            )
        if max(self.start, QUIET_BEFORE) >= min(self.end, QUIET_AFTER):
            raise _fail(
                "send_window",
                f"{self.start:%H:%M}-{self.end:%H:%M} has no time inside {QUIET_BEFORE:%H:%M}-"
                f"{QUIET_AFTER:%H:%M}, the only hours texts are ever sent; move the window into them",
            )
        return self


class Step(_Strict):
    id: Annotated[str, AfterValidator(_step_id)]
    after: DurationField
    only_if: Literal["no_reply"] | None = None
    text: Texts


class ReplyRule(_Strict):
    keywords: list[Annotated[str, AfterValidator(_keyword)]] = Field(min_length=1)
    outcome: Annotated[str, AfterValidator(_outcome)]
    handoff: bool = False
    answer: Texts | None = None


class CampaignFile(_Strict):
    id: Annotated[str, AfterValidator(_id)]
    name: str = Field(min_length=1)
    source: str | None = None
    active: ActiveDates
    audience: Audience
    send_window: SendWindow = SendWindow()
    re_enroll_after: OptionalDuration = None
    default_language: Language = "en"
    steps: list[Step] = Field(min_length=1)
    replies: list[ReplyRule] = Field(default_factory=list)

    _content_hash: str | None = PrivateAttr(default=None)
    _path: str | None = PrivateAttr(default=None)

    @property
    def content_hash(self) -> str | None:
        """sha256 (hex) of the bytes this campaign was parsed from."""
        return self._content_hash

    @property
    def path(self) -> str | None:
        """The file this campaign was loaded from, as shown in messages."""
        return self._path

    def is_active(self, on: dt.date) -> bool:
        return self.active.from_ <= on and (self.active.until is None or on <= self.active.until)

    def text_for(self, texts: dict[str, str], language: str) -> tuple[str, str]:
        """The text in `language`, else in the default language; returns (language, text)."""
        if language in texts:
            return language, texts[language]
        return self.default_language, texts[self.default_language]

    def summary(self) -> dict[str, Any]:
        """What `outreach campaigns list --json` prints per campaign (plain JSON types)."""
        return {
            "id": self.id,
            "name": self.name,
            "source": self.source,
            "active": {
                "from": self.active.from_.isoformat(),
                "until": self.active.until.isoformat() if self.active.until else None,
            },
            "steps": [{"id": s.id, "after": str(s.after), "only_if": s.only_if} for s in self.steps],
            "languages": self.languages(),
            "path": self.path,
            "content_hash": self.content_hash,
        }

    def languages(self) -> list[str]:
        """Every language any text is written in, the default first."""
        found = {lang for step in self.steps for lang in step.text}
        found |= {lang for rule in self.replies for lang in (rule.answer or {})}
        return [self.default_language, *sorted(found - {self.default_language})]


# --- problems ---------------------------------------------------------------------------------


Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class CampaignProblem:
    path: str  # the file as the user named it
    field: str  # e.g. steps[1].text.es; "(file)" for the file as a whole, "line N" for YAML syntax
    message: str  # "problem; fix"
    severity: Severity = "error"
    line: int | None = None  # where in the file, when known (problems are sorted by it)

    def __str__(self) -> str:
        tag = "warning: " if self.severity == "warning" else ""
        return f"{self.path}: {self.field}: {tag}{self.message}"


def content_hash(path: Path | str) -> str:
    """sha256 (hex) of the file's bytes: what the `campaigns` table records per loaded version."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def validate_files(
    paths: Sequence[Path], *, settings: Settings | None = None
) -> tuple[dict[str, CampaignFile], list[CampaignProblem]]:
    """Check every file and report every problem; the dict holds only the files without errors.

    `settings` supply the clinic name, phone and link used to estimate segment counts (defaults
    to the process settings)."""
    if settings is None:
        from outreach.config import get_settings

        settings = get_settings()
    campaigns: dict[str, CampaignFile] = {}
    problems: list[CampaignProblem] = []
    for path in paths:
        shown = _display(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            problems.append(
                CampaignProblem(shown, "(file)", f"cannot read it ({exc.strerror}); check the path")
            )
            continue
        campaign, found = _check(data, shown, path.stem, settings)
        problems.extend(found)
        if campaign is None:
            continue
        if campaign.id in campaigns:
            first = campaigns[campaign.id].path
            problems.append(
                CampaignProblem(
                    shown, "id", f"campaign id {campaign.id} is also used by {first}; remove one file"
                )
            )
            continue
        campaigns[campaign.id] = campaign
    return campaigns, problems


def parse_campaign(text: str, *, path: str = "<text>", settings: Settings | None = None) -> CampaignFile:
    """A campaign from YAML text (tests, previews); raises UserError listing every error. The id
    is checked against the file name only when `path` names a .yaml file."""
    if settings is None:
        from outreach.config import get_settings

        settings = get_settings()
    stem = Path(path).stem if path.endswith((".yaml", ".yml")) else None
    campaign, problems = _check(text.encode("utf-8"), path, stem, settings)
    if campaign is None:
        raise UserError(_summary([p for p in problems if p.severity == "error"]))
    return campaign


def campaign_paths(directory: Path) -> list[Path]:
    """The campaign files in a directory: *.yaml and *.yml, hidden files (editor backups) skipped."""
    found = [*directory.glob("*.yaml"), *directory.glob("*.yml")]
    return sorted(p for p in found if not p.name.startswith(".") and p.is_file())


def expand_paths(paths: Sequence[Path]) -> list[Path]:
    """Files as given, directories as the campaign files in them, each file once (a missing path
    stays, so that validation reports it)."""
    found: dict[Path, Path] = {}
    for path in paths:
        for file in campaign_paths(path) if path.is_dir() else [path]:
            found.setdefault(file.resolve(), file)
    return list(found.values())


def load_campaigns(directory: Path | str | None = None) -> dict[str, CampaignFile]:
    """Every campaign in `directory` (default OUTREACH_CAMPAIGNS_DIR) by id; raises UserError
    listing every error when any file is invalid, so nothing runs on half a protocol."""
    from outreach.config import get_settings

    settings = get_settings()
    folder = Path(directory if directory is not None else settings.campaigns_dir)
    if not folder.is_dir():
        where = "" if directory is not None else " (OUTREACH_CAMPAIGNS_DIR)"
        raise UserError(
            f"campaign directory {folder}{where} does not exist; create it or point to the right one"
        )
    campaigns, problems = validate_files(campaign_paths(folder), settings=settings)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise UserError(_summary(errors))
    return campaigns


def _summary(errors: list[CampaignProblem]) -> str:
    count = f"{len(errors)} error{'s' if len(errors) != 1 else ''}"
    lines = "\n".join(f"  {problem}" for problem in errors)
    return (
        f"invalid campaign files ({count}; `outreach campaigns validate` shows them with warnings):\n{lines}"
    )


def _display(path: Path) -> str:
    """Paths under the working directory are shown relative to it, as the user would type them."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


# --- checking one file ------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """YAML 1.2 scalars (only true/false are booleans; no sexagesimal numbers, no implicit dates)
    and duplicate keys are errors instead of the last one silently winning."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if not tag.endswith((":bool", ":int", ":float", ":timestamp"))]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^[-+]?[0-9]+$"), list("-+0123456789"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*)(?:[eE][-+]?[0-9]+)?$"),
    list("-+.0123456789"),
)


def _check(
    data: bytes, shown: str, stem: str | None, settings: Settings
) -> tuple[CampaignFile | None, list[CampaignProblem]]:
    def error(field: str, message: str) -> CampaignProblem:
        return CampaignProblem(shown, field, message)

    try:
        loader = _Loader(data.decode("utf-8-sig"))
        try:
            node = loader.get_single_node()
            raw = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except UnicodeDecodeError:
        return None, [error("(file)", "is not UTF-8 text; save it as UTF-8")]
    except yaml.MarkedYAMLError as exc:
        return None, [_syntax_problem(shown, exc)]
    except yaml.YAMLError as exc:
        return None, [error("(file)", f"YAML error ({exc}); check the file's syntax")]
    if raw is None:
        return None, [
            error("(file)", "the file is empty; start from a shipped campaign such as flu-season.yaml")
        ]
    if not isinstance(raw, dict):
        return None, [
            error(
                "(file)",
                f"expected keys such as id, name and steps, got {_what(raw)}; write key: value lines",
            )
        ]

    problems: list[CampaignProblem] = []
    campaign: CampaignFile | None = None
    try:
        campaign = CampaignFile.model_validate(raw)
    except ValidationError as exc:
        for e in exc.errors(include_url=False):
            if e["type"] == _OWN + "template":  # one problem per mistake in the text
                problems.extend(error(_field(e["loc"]), text) for text in template_problems(e["input"]))
            else:
                problems.append(error(_field(e["loc"]), _describe(e)))
    problems.extend(error(field, message) for field, message in _file_checks(raw, stem))
    problems.extend(
        CampaignProblem(shown, field, message, "warning") for field, message in _file_warnings(raw, settings)
    )
    lines = _field_lines(node) if node is not None else {}
    problems = sorted(
        (replace(p, line=_line_of(p.field, lines)) for p in problems),
        key=lambda p: p.line or 0,
    )
    if campaign is None or any(p.severity == "error" for p in problems):
        return None, problems
    campaign._content_hash = hashlib.sha256(data).hexdigest()
    campaign._path = shown
    return campaign, problems


def _field_lines(node: yaml.Node, prefix: str = "") -> dict[str, int]:
    """Field path -> line number (1-based) of every key and item in the document."""
    found = {prefix: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = f"{prefix}.{key.value}" if prefix else str(key.value)
            found.update(_field_lines(value, path))
            found[path] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found.update(_field_lines(item, f"{prefix}[{index}]"))
    return found


def _line_of(field: str, lines: dict[str, int]) -> int | None:
    """The line of `field`, else of its nearest enclosing field (a missing key: its parent)."""
    while field not in lines and field:
        field = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", field) if re.search(r"[.\[]", field) else ""
    return lines.get(field)


def _syntax_problem(shown: str, exc: yaml.MarkedYAMLError) -> CampaignProblem:
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}" if mark is not None else "(file)"
    what = exc.problem or "unreadable"
    context = f" ({exc.context})" if exc.context else ""
    fix = (
        "remove or rename one of them"
        if "duplicate key" in what
        else "check indentation and colons on that line, and quote text containing ': ' or '#' "
        "or starting with { or ["
    )
    return CampaignProblem(shown, where, f"YAML syntax error: {what}{context}; {fix}")


def _field(loc: tuple[int | str, ...]) -> str:
    """('steps', 1, 'text', 'es') -> steps[1].text.es"""
    out = ""
    for part in loc:
        if part == "[key]":
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(file)"


_EXAMPLES = {
    "id": "id: followed by the file name without .yaml",
    "steps.id": "id: such as reminder",
    "name": "name: followed by a title care teams recognize",
    "active": "active: {from: 2026-01-01}",
    "from": "from: 2026-01-01",
    "audience": "audience: with age: {min: 18, max: 75}",
    "age": "age: {min: 18, max: 75}",
    "min": "min: 18",
    "max": "max: 75",
    "steps": "steps: with at least an invite step",
    "after": "after: 0d (time from enrollment)",
    "text": 'text: {en: "..."}',
    "event": "event: one of " + ", ".join(EVENT_KINDS),
    "keywords": "keywords: [YES, SI]",
    "outcome": "outcome: such as kit_requested",
}


def _describe(error: Any) -> str:
    """A pydantic error as `problem; fix` in the words of the campaign file."""
    kind: str = error["type"]
    loc: tuple[int | str, ...] = error["loc"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    name = next((str(p) for p in reversed(loc) if isinstance(p, str) and p != "[key]"), "value")
    if kind == "extra_forbidden":
        valid = _valid_keys(loc[:-1])
        close = difflib.get_close_matches(name, valid, n=1)
        fix = f"did you mean {close[0]}?" if close else f"valid keys here: {', '.join(valid)}"
        return f"unknown key {name}; {fix}"
    if kind == "missing":
        example = _EXAMPLES.get(f"steps.{name}" if loc[0] == "steps" and name == "id" else name)
        return f"missing required field {name}; add {example or name + ': ...'}"
    if kind == "string_type":
        return f"expected text, got {_what(value)}; write it as text (in quotes if it looks like a number)"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected a whole number, got {_show(value)}; write digits only, such as 45"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false, got {_show(value)}; write true or false"
    if kind == "list_type":
        return f"expected a list, got {_what(value)}; write [a, b] or one '- item' per line"
    if kind == "dict_type" and name in ("text", "answer"):
        return f'expected one text per language, got {_what(value)}; write {name}: {{en: "...", es: "..."}}'
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected keys and values, got {_what(value)}; write key: value pairs indented under {name}"
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        return f"{_show(value)} is not allowed here; {hint}use {' or '.join(choices)}"
    if kind in ("greater_than_equal", "less_than_equal"):
        bound = ctx.get("ge", ctx.get("le"))
        side = "at least" if kind == "greater_than_equal" else "at most"
        return f"{_show(value)} is out of range; use a number {side} {bound}"
    if kind == "too_short":
        return f"{name} is empty; add at least one"
    if kind == "string_too_short":
        return f"{name} is empty; write it"
    if kind.startswith(_OWN):
        return str(error["msg"])
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    return f"{error['msg']}; see the campaign file format in DESIGN.md §5"


def _valid_keys(loc: tuple[int | str, ...]) -> list[str]:
    """The keys allowed in the mapping at `loc`, found by walking the schema."""
    model: type[BaseModel] = CampaignFile
    for part in loc:
        if isinstance(part, int):
            continue
        field = next((f for n, f in model.model_fields.items() if (f.alias or n) == part), None)
        inner = _model_in(field.annotation) if field is not None else None
        if inner is None:
            return []
        model = inner
    return [f.alias or n for n, f in model.model_fields.items()]


def _model_in(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _show(value: object) -> str:
    """A value as the user wrote it: text in quotes, true/false in YAML's spelling."""
    if isinstance(value, str):
        return f'"{value}"'
    if value is None:
        return "nothing"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _what(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a yes/no value)"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f'the text "{value}"'
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "keys and values"
    return type(value).__name__


# --- checks across fields (run on the raw data, so they report even when other fields fail) ---


def _items(raw: dict[str, Any], key: str) -> Iterator[tuple[int, dict[str, Any]]]:
    value = raw.get(key)
    if isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, dict):
                yield index, item


def _texts(raw: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every translated text mapping in the file with its field path."""
    for index, step in _items(raw, "steps"):
        if isinstance(step.get("text"), dict):
            yield f"steps[{index}].text", step["text"]
    for index, rule in _items(raw, "replies"):
        if isinstance(rule.get("answer"), dict):
            yield f"replies[{index}].answer", rule["answer"]


def _default_language(raw: dict[str, Any]) -> str | None:
    value = raw.get("default_language", "en")
    return value if isinstance(value, str) and _LANGUAGE.match(value) else None


def _file_checks(raw: dict[str, Any], stem: str | None) -> Iterator[tuple[str, str]]:
    campaign_id = raw.get("id")
    if stem is not None and isinstance(campaign_id, str) and _ID.match(campaign_id) and campaign_id != stem:
        yield "id", f"id {campaign_id} does not match the file name {stem}; rename the file or set id: {stem}"

    step_ids: dict[str, int] = {}
    for index, step in _items(raw, "steps"):
        step_id = step.get("id")
        if isinstance(step_id, str):
            if step_id in step_ids:
                yield (
                    f"steps[{index}].id",
                    f"duplicate step id {step_id} (also steps[{step_ids[step_id]}]); rename one",
                )
            else:
                step_ids[step_id] = index

    events: dict[str, int] = {}
    audience = raw.get("audience")
    gaps = audience.get("care_gap") if isinstance(audience, dict) else None
    for index, gap in enumerate(gaps if isinstance(gaps, list) else []):
        event = gap.get("event") if isinstance(gap, dict) else None
        if isinstance(event, str):
            if event in events:
                yield (
                    f"audience.care_gap[{index}].event",
                    f"{event} is listed twice (also care_gap[{events[event]}]); keep one look-back per event",
                )
            else:
                events[event] = index

    default = _default_language(raw)
    if default is not None:
        for field, texts in _texts(raw):
            if default not in texts:
                yield field, f'no {default} text (the default language); add {default}: "..."'

    keywords: dict[str, str] = {}
    for index, rule in _items(raw, "replies"):
        words = rule.get("keywords")
        for position, word in enumerate(words if isinstance(words, list) else []):
            if not isinstance(word, str) or not word.strip():
                continue
            folded = word.strip().casefold()
            here = f"replies[{index}].keywords[{position}]"
            if folded in keywords:
                yield (
                    here,
                    f"keyword {word.strip()} is also {keywords[folded]}; "
                    "a keyword can lead to one outcome only, remove one",
                )
            else:
                keywords[folded] = here


# Stand-ins for segment estimates when a setting is unset; a first name of 10 letters.
_SAMPLE_FIRST_NAME = "Jacqueline"
_SAMPLE_SETTINGS = {
    "clinic_name": "Community Health Center",
    "clinic_phone": "(555) 555-0100",
    "link": "https://example.org/book",
}


def _estimate(template: str, settings: Settings) -> str:
    values = {
        "first_name": _SAMPLE_FIRST_NAME,
        "clinic_name": settings.clinic_name or _SAMPLE_SETTINGS["clinic_name"],
        "clinic_phone": settings.clinic_phone or _SAMPLE_SETTINGS["clinic_phone"],
        "link": settings.link or _SAMPLE_SETTINGS["link"],
    }
    return "".join(
        literal + (values[name] if name else "")
        for literal, name, _s, _c in string.Formatter().parse(template)
    )


def _file_warnings(raw: dict[str, Any], settings: Settings) -> Iterator[tuple[str, str]]:
    for field, texts in _texts(raw):
        for language, template in texts.items():
            if isinstance(template, str) and not template_problems(template):
                message = _segment_warning(_estimate(template, settings))
                if message:
                    yield f"{field}.{language}", message

    steps = dict(_items(raw, "steps"))
    first = steps.get(0)
    if first is not None and isinstance(first.get("text"), dict):
        for language, text in first["text"].items():
            if isinstance(text, str) and not _OPT_OUT.search(text):
                yield (
                    f"steps[0].text.{language}",
                    'the first message has no opt-out instructions; add "Reply STOP to opt out." '
                    "(carriers expect them in the first message, keeping the word STOP in every language)",
                )

    window = raw.get("send_window")
    if isinstance(window, dict):
        for key, limit, outside in (("start", QUIET_BEFORE, "before"), ("end", QUIET_AFTER, "after")):
            try:
                value = _time(window.get(key))
            except PydanticCustomError:
                continue
            if (value < limit) if outside == "before" else (value > limit):
                yield (
                    f"send_window.{key}",
                    f"{value:%H:%M} is {outside} {limit:%H:%M}; messages are never sent {outside} "
                    f"{limit:%H:%M} patient-local time (20:00 in FL, OK and MD), "
                    "so they wait for the next opening",
                )


def _segment_warning(text: str) -> str | None:
    counted = count_segments(text)
    if counted.segments <= 2:
        return None
    if counted.encoding == "UCS-2":
        chars = ", ".join(f'"{c}"' for c in non_gsm_characters(text)[:5])
        why = f"UCS-2 because of {chars}: {counted.units} UTF-16 units, 67 per segment"
        fix = "shorten it to 134 units or write those characters another way, or accept the cost"
    else:
        why = f"GSM-7: {counted.units} characters, 153 per segment"
        fix = "shorten it to 306 characters or accept the cost"
    return (
        f"about {counted.segments} segments per message with a {len(_SAMPLE_FIRST_NAME)}-letter first name "
        f"({why}); {fix}"
    )
