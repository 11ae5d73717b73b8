"""The campaign file schema (DESIGN.md §5): pydantic models of what a care team writes.

Every field validator raises `problem; fix` in the words of the file (see `_wording`), because
the people who write these files are nurses and care managers, not programmers. Checks that
need more than one field of a possibly broken file live in `checks`; this module holds what a
valid campaign is.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    model_validator,
)

from outreach.campaigns._wording import fail, show
from outreach.campaigns.dates import (
    DateField,
    DurationField,
    OptionalDate,
    OptionalDuration,
    OptionalMonthDay,
    TimeField,
    Weekday,
    WeekdayField,
)
from outreach.campaigns.texts import Language, Texts
from outreach.keywords import normalize, reserved, single_words

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
    # Exclusion kinds (DESIGN.md §5): the eCQM denominator exclusions, on record ever or within a
    # look-back; the FHIR code map (outreach/ingest/fhir/codemap.csv) maps conditions and
    # procedures to them.
    "colorectal_cancer",
    "total_colectomy",
    "bilateral_mastectomy",
    "hysterectomy_no_cervix",
    "hospice",
    "palliative_care",
)
# Sends outside these local hours are always held back (DESIGN.md §7.3), whatever a file says.
QUIET_BEFORE, QUIET_AFTER = dt.time(8, 0), dt.time(21, 0)

# The warnings `checks.warnings` gives, by the name a file's `acknowledge` list uses for them.
WarningKind = Literal["segments", "opt_out", "quiet_hours"]

_ID = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_STEP_ID = re.compile(r"^[a-z0-9]+([-_][a-z0-9]+)*$")
_OUTCOME = re.compile(r"^[a-z][a-z0-9_]*$")


def is_campaign_id(value: object) -> bool:
    """Lowercase letters, digits and single dashes: also the file's name."""
    return isinstance(value, str) and _ID.match(value) is not None


def _id(value: str) -> str:
    if not is_campaign_id(value) or len(value) > 64:
        raise fail(
            "id",
            f"{show(value)} is not a valid campaign id; use lowercase letters, digits and single dashes "
            "(at most 64), such as flu-season",
        )
    return value


def _step_id(value: str) -> str:
    if not _STEP_ID.match(value) or len(value) > 40:
        raise fail(
            "step_id",
            f"{show(value)} is not a valid step id; use lowercase letters, digits, dashes or underscores "
            "(at most 40), such as reminder-2",
        )
    return value


def _outcome(value: str) -> str:
    if not _OUTCOME.match(value) or len(value) > 64:
        raise fail(
            "outcome",
            f"{show(value)} is not a valid outcome; write lowercase_with_underscores, such as kit_requested",
        )
    return value


def _event(value: str) -> str:
    if value not in EVENT_KINDS:
        raise fail("event", f"unknown event kind {show(value)}; use one of {', '.join(EVENT_KINDS)}")
    return value


def _percent(value: object) -> object:
    """`10%` or 10 -> 10.0; a share of a cycle kept as control, at most half of it."""
    number = value.strip().removesuffix("%").strip() if isinstance(value, str) else value
    try:
        percent = float(number)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise fail("holdout", f"{show(value)} is not a percentage; write it as 10%") from None
    if not 0 <= percent <= 50:
        raise fail("holdout", f"{show(value)} is outside 0%-50%; keep at most half of a cycle as control")
    return percent


def _link(value: str) -> str:
    if not re.fullmatch(r"https?://[^\s/$.?#][^\s]*", value):
        raise fail(
            "link", f"{show(value)} is not a web address; write it in full, such as https://example.org/book"
        )
    return value


def _keyword(value: str) -> str:
    word = value.strip()
    if not re.fullmatch(r"\w+", word):
        raise fail(
            "keyword",
            f"{show(value)} is not one word; replies are matched on their first word without "
            "punctuation, so use a single word such as YES",
        )
    # The classifier's own question: a word it answers before campaigns could never reach a rule.
    found = reserved(normalize(word), opted_out=False)
    if found is not None:
        words = ", ".join(single_words(found.family))
        label = found.family.label
        raise fail("keyword", f"{word} is reserved for {label} ({words}); choose another keyword")
    return word


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ActiveDates(_Strict):
    from_: DateField = Field(alias="from")
    until: OptionalDate = None

    @model_validator(mode="after")
    def _ordered(self) -> ActiveDates:
        if self.until is not None and self.until < self.from_:
            raise fail("dates", f"until {self.until} is before from {self.from_}; swap them")
        return self


class AgeRange(_Strict):
    min: int = Field(ge=0, le=130)
    max: int = Field(ge=0, le=130)

    @model_validator(mode="after")
    def _ordered(self) -> AgeRange:
        if self.min > self.max:
            raise fail("age", f"min {self.min} is above max {self.max}; swap them (both ends are inclusive)")
        return self


class CareGap(_Strict):
    """Eligible only when no `event` happened in the look-back: `within` (planning day - within <
    date <= planning day) or `since` a month-day ("07-01": since the latest July 1 on or before
    the planning day)."""

    event: Annotated[str, AfterValidator(_event)]
    within: OptionalDuration = None
    since: OptionalMonthDay = None

    @model_validator(mode="after")
    def _one_look_back(self) -> CareGap:
        if (self.within is None) == (self.since is None):
            which = "both" if self.within is not None else "neither"
            raise fail(
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


class Exclusion(_Strict):
    """Never eligible while an `event` of this kind is on record: ever, or with `within` only when
    dated inside that look-back (planning day - within < date <= planning day). These are the
    eCQM denominator exclusions (CMS130 colorectal cancer or total colectomy, CMS125 bilateral
    mastectomy, CMS124 hysterectomy with no residual cervix, hospice, palliative care)."""

    event: Annotated[str, AfterValidator(_event)]
    within: OptionalDuration = None

    def window_start(self, on: dt.date) -> dt.date | None:
        """The earliest event date that still excludes on `on`; None for "ever"."""
        return None if self.within is None else self.within.before(on) + dt.timedelta(days=1)


class Audience(_Strict):
    age: AgeRange
    sex: Literal["any", "female", "male"] = "any"
    care_gap: list[CareGap] = Field(default_factory=list)
    exclude: list[Exclusion] = Field(default_factory=list)


def _some_days(days: list[Weekday]) -> list[Weekday]:
    if not days:
        raise fail(
            "weekday", "the send window has no days; list at least one, such as [mon, tue, wed, thu, fri]"
        )
    return days


def _working_days() -> list[Weekday]:
    return ["mon", "tue", "wed", "thu", "fri"]


class SendWindow(_Strict):
    days: Annotated[list[WeekdayField], AfterValidator(_some_days)] = Field(default_factory=_working_days)
    start: TimeField = dt.time(9, 0)
    end: TimeField = dt.time(18, 0)

    @model_validator(mode="after")
    def _ordered(self) -> SendWindow:
        if self.start >= self.end:
            raise fail(
                "send_window",
                f"start {self.start:%H:%M} is not before end {self.end:%H:%M}; the window is one stretch "
                "of a day in the patient's time zone, so start must be earlier than end",
            )
        if max(self.start, QUIET_BEFORE) >= min(self.end, QUIET_AFTER):
            raise fail(
                "send_window",
                f"{self.start:%H:%M}-{self.end:%H:%M} has no time inside {QUIET_BEFORE:%H:%M}-"
                f"{QUIET_AFTER:%H:%M}, the only hours texts are ever sent; move the window into them",
            )
        return self


class Variant(_Strict):
    """One wording of a step, sent to a `weight` share of its patients (outreach/plan/variants.py)."""

    id: Annotated[str, AfterValidator(_step_id)]
    weight: int = Field(gt=0, le=10_000)
    text: Texts


class Step(_Strict):
    """One text of the campaign: a `text` in each language, or weighted `variants` of it."""

    id: Annotated[str, AfterValidator(_step_id)]
    after: DurationField
    only_if: Literal["no_reply"] | None = None
    text: Texts | None = None
    variants: list[Variant] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_wording(self) -> Step:
        if (self.text is None) == (not self.variants):
            which = "both" if self.text is not None else "neither"
            raise fail(
                "step_text",
                f"has {which} of text and variants; give exactly one: text (one wording) or variants "
                "(several, each with an id, a weight and a text)",
            )
        ids = [variant.id for variant in self.variants]
        if len(set(ids)) != len(ids):
            raise fail("step_text", f"variant ids repeat ({', '.join(ids)}); give each variant its own id")
        return self

    def wordings(self) -> list[tuple[str | None, int, dict[str, str]]]:
        """(variant id or None, weight, texts) of each wording, in the file's order."""
        if self.text is not None:
            return [(None, 1, self.text)]
        return [(variant.id, variant.weight, variant.text) for variant in self.variants]


class ReplyRule(_Strict):
    keywords: list[Annotated[str, AfterValidator(_keyword)]] = Field(min_length=1)
    outcome: Annotated[str, AfterValidator(_outcome)]
    handoff: bool = False
    answer: Texts | None = None
    # A decline (NO) is engagement, not activation (DESIGN.md §8): such rules say `activates: false`.
    activates: bool = True


class Acknowledgement(_Strict):
    """A warning the care team has weighed and accepts, so validation stops repeating it (a
    3-segment Spanish invite kept whole on purpose): the field the warning is about, exactly as
    `outreach campaigns validate` prints it, and which warning. `--verbose` still lists it."""

    field: str = Field(min_length=1)
    warning: WarningKind


class CampaignFile(_Strict):
    """One campaign. Loaded campaigns carry the sha256 of the file's bytes as `content_hash` (a
    read-only property over a private attribute; None for a campaign built directly from a dict),
    so the scheduler can record which version of a protocol a patient was enrolled under."""

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
    acknowledge: list[Acknowledgement] = Field(default_factory=list)
    # Percent of each enrollment cycle enrolled as control: never texted, followed for gap closure.
    holdout: Annotated[float, BeforeValidator(_percent)] = 0.0
    # The page `{link}` leads to, through a per-message tracked short link (/l/<token>).
    link: Annotated[str, AfterValidator(_link)] | None = None

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

    def loaded_from(self, path: str, content_hash: str) -> None:
        """Record where the loader read this campaign (the model is otherwise immutable)."""
        self._path = path
        self._content_hash = content_hash

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
        found = {lang for step in self.steps for _, _, texts in step.wordings() for lang in texts}
        found |= {lang for rule in self.replies for lang in (rule.answer or {})}
        return [self.default_language, *sorted(found - {self.default_language})]
