"""Sample data: the small roster and events shipped in samples/, and large synthetic rosters for
benchmarks.

Everything is seeded, so the shipped files are reproducible (`python samples/generate.py`) and a
benchmark sees the same million patients every run. No real person is in here: names are drawn
from common-name lists, and every phone number is in the 555 exchange, which is not assigned to
subscribers (the shipped sample uses only 555-0100..555-0199, the range reserved for fiction).

Library use (bench/plan.py):  write_roster(path, n, seed) and write_events(path, n_patients, seed)
stream rows to disk with flat memory; both agree on the mrns (`mrn_for(i)`).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import random
from collections.abc import Iterator
from pathlib import Path

REFERENCE_DATE = dt.date(2026, 11, 23)
HERE = Path(__file__).resolve().parent

ROSTER_HEADER = (
    "mrn",
    "first_name",
    "last_name",
    "birth_date",
    "sex",
    "phone",
    "language",
    "timezone",
    "postal_code",
)
EVENTS_HEADER = ("mrn", "event", "date", "code", "code_system")


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# Area codes of the shipped sample: several zones, and the states with stricter quiet hours (FL, OK, MD).
SAMPLE_AREAS: dict[str, tuple[str, str]] = {
    "617": ("02115", "Boston MA"),
    "212": ("10027", "New York NY"),
    "305": ("33130", "Miami FL"),
    "405": ("73102", "Oklahoma City OK"),
    "410": ("21201", "Baltimore MD"),
    "312": ("60614", "Chicago IL"),
    "303": ("80203", "Denver CO"),
    "415": ("94110", "San Francisco CA"),
    "602": ("85004", "Phoenix AZ"),
    "907": ("99501", "Anchorage AK"),
}

# Long-established US geographic area codes (one time zone each) for large rosters: 120 codes x
# 10,000 lines of the 555 exchange gives 1.2 million distinct numbers.
BENCH_AREAS = _words(
    "201 202 203 205 206 207 209 210 212 213 214 215 216 217 218 219 224 225 228 229 231 234 239 240 "
    "248 251 252 253 254 256 260 262 267 269 270 276 281 301 302 303 304 305 307 308 309 310 312 313 "
    "314 315 316 317 318 319 320 321 323 325 330 334 336 337 339 347 351 352 360 361 386 401 402 404 "
    "405 406 407 408 409 410 412 413 414 415 417 419 423 424 425 430 432 434 435 440 443 469 478 479 "
    "480 484 501 502 503 504 505 507 508 509 510 512 513 515 516 517 518 520 530 540 541 559 561 562"
)

FEMALE_EN = _words(
    "Mary Patricia Jennifer Linda Elizabeth Barbara Susan Jessica Sarah Karen Nancy Lisa Betty "
    "Margaret Sandra Ashley Dorothy Kimberly Emily Donna Michelle Carol Amanda Melissa Deborah"
)
MALE_EN = _words(
    "James Robert John Michael David William Richard Joseph Thomas Charles Christopher Daniel "
    "Matthew Anthony Mark Donald Steven Paul Andrew Joshua Kenneth Kevin Brian George Edward"
)
FEMALE_ES = _words(
    "María Guadalupe Rosa Carmen Ana Sofía Lucía Isabel Elena Teresa Verónica Gabriela Alejandra "
    "Adriana Patricia Leticia Yolanda Claudia Mónica Beatriz"
)
MALE_ES = _words(
    "José Juan Luis Carlos Jorge Miguel Francisco Antonio Jesús Alejandro Manuel Ricardo Javier "
    "Fernando Roberto Eduardo Raúl Andrés Diego Alberto"
)
LAST_EN = _words(
    "Smith Johnson Williams Brown Jones Miller Davis Wilson Anderson Taylor Thomas Moore Jackson "
    "Martin Lee Thompson White Harris Clark Lewis Robinson Walker Young Allen King Wright Scott"
)
LAST_ES = _words(
    "García Rodríguez Martínez Hernández López González Pérez Sánchez Ramírez Torres Flores Rivera "
    "Gómez Díaz Cruz Morales Reyes Gutiérrez Ortiz Ramos Castillo Vargas Mendoza Ruiz Chávez"
)

# (event, code, code system): CPT for procedures and lab tests, CVX for vaccines.
CODES = {
    "colonoscopy": ("45378", "CPT"),
    "fit": ("82274", "CPT"),
    "fit_dna": ("81528", "CPT"),
    "mammogram": ("77067", "CPT"),
    "cervical_cytology": ("88175", "CPT"),
    "hpv_test": ("87624", "CPT"),
    "flu_vaccine": ("150", "CVX"),
}

# The eCQM denominator exclusions the shipped campaigns honour (CMS130, CMS125, CMS124), on a few
# patients the campaigns would otherwise text, plus one hospice stay too old to exclude (the
# look-back is a year). Fixed rows appended after the random ones, so the random draws (and every
# other sample row) are unchanged. SNOMED CT codes as in outreach/ingest/fhir/codemap.csv.
SAMPLE_EXCLUSIONS = (
    ("RH1012", "colorectal_cancer", "2019-03-14", "363406005", "SNOMED"),  # CMS130, ever
    ("RH1050", "total_colectomy", "2021-06-02", "26390003", "SNOMED"),  # CMS130, ever
    ("RH1003", "bilateral_mastectomy", "2018-09-10", "27865001", "SNOMED"),  # CMS125, ever
    ("RH1053", "hysterectomy_no_cervix", "2012-01-15", "116140006", "SNOMED"),  # CMS124, ever
    ("RH1058", "hospice", "2026-10-02", "385763009", "SNOMED"),  # within the last year: excluded
    ("RH1011", "hospice", "2024-03-01", "385763009", "SNOMED"),  # over a year ago: still invited
)


def mrn_for(i: int) -> str:
    """The mrn of the i-th synthetic patient (shared by write_roster and write_events)."""
    return f"P{i:07d}"


def _years_ago(years: int, rng: random.Random, on: dt.date = REFERENCE_DATE) -> dt.date:
    """A birth date giving exactly `years` completed years on `on`."""
    latest = on.replace(year=on.year - years, day=28 if (on.month, on.day) == (2, 29) else on.day)
    return latest - dt.timedelta(days=rng.randint(0, 364))


def _days_ago(days: int) -> str:
    return (REFERENCE_DATE - dt.timedelta(days=days)).isoformat()


def _format_phone(area: str, line: int, style: int) -> str:
    """The same number the way different clinics' systems export it."""
    digits = f"{line:04d}"
    return (
        f"({area}) 555-{digits}",
        f"{area}-555-{digits}",
        f"{area}.555.{digits}",
        f"+1 {area} 555 {digits}",
        f"1{area}555{digits}",
    )[style % 5]


# --- the shipped sample ------------------------------------------------------------------------


def sample_rows(seed: int = 2026) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    """About 60 patients and their events, with every situation the demo should show."""
    rng = random.Random(seed)
    areas = list(SAMPLE_AREAS)
    count = 60
    ages = [18 + (i * 67) // (count - 1) for i in range(count)]  # 18..85, evenly spread
    rng.shuffle(ages)
    for slot, age in ((0, 52), (1, 19)):  # the family: a parent and a grown-up son on one number
        other = ages.index(age)
        ages[slot], ages[other] = ages[other], ages[slot]
    patients: list[tuple[str, ...]] = []
    events: list[tuple[str, ...]] = []
    for i in range(count):
        spanish = i % 10 in (1, 4, 7, 9) if i >= 2 else False
        language = "es" if spanish and i % 10 != 9 else "en"  # ~30% es; some Spanish names prefer en
        roll = rng.random()
        sex = "female" if roll < 0.52 else "male" if roll < 0.95 else "other" if roll < 0.97 else "unknown"
        if i == 33:
            sex = "other"
        firsts = (FEMALE_ES if spanish else FEMALE_EN) if sex != "male" else (MALE_ES if spanish else MALE_EN)
        first = rng.choice(firsts)
        last = rng.choice(LAST_ES if spanish else LAST_EN)
        area = areas[i % len(areas)]
        phone = _format_phone(area, 100 + i, i)
        postal, _city = SAMPLE_AREAS[area]
        timezone = ""
        if i == 1:  # family: shares patient 0's number and last name
            last, phone, area = patients[0][2], patients[0][5], areas[0]
            postal = patients[0][8]
            first, sex = rng.choice(MALE_EN), "male"
        if area == "907":
            timezone = "America/Anchorage"  # the area code spans two zones
        elif i in (5, 23):
            timezone = "America/Chicago"  # kept an out-of-state number after moving
        sex_text = {0: sex, 1: sex[:1].upper(), 2: sex.capitalize()}[i % 3] if sex != "unknown" else ""
        birth = _years_ago(ages[i], rng)
        mrn = f"RH{1001 + i}"
        if i == 17:
            last = ""  # last name is optional
        patients.append(
            (
                mrn,
                first,
                last,
                birth.isoformat(),
                sex_text,
                phone,
                language,
                timezone,
                postal if i % 7 else "",
            )
        )
        events.extend(_sample_events(mrn, ages[i], sex, rng))
    events.extend(SAMPLE_EXCLUSIONS)
    return patients, events


def _sample_events(mrn: str, age: int, sex: str, rng: random.Random) -> list[tuple[str, ...]]:
    """Some patients up to date, some with care gaps (never screened, or screened too long ago)."""
    found: list[tuple[str, str]] = []  # (event, date)
    if 45 <= age <= 75:
        found += rng.choice(
            [
                [("colonoscopy", _days_ago(rng.randint(400, 3300)))],  # within 10y: up to date
                [("fit", _days_ago(rng.randint(30, 330)))],  # within 1y: up to date
                [("colonoscopy", _days_ago(rng.randint(3700, 4500)))],  # 10-12y ago: due
                [("fit", _days_ago(rng.randint(400, 800)))],  # more than 1y ago: due
                [],  # never screened: due
            ]
        )
    if sex == "female" and 40 <= age <= 74:
        found += rng.choice(
            [
                [("mammogram", _days_ago(rng.randint(60, 600)))],
                [("mammogram", _days_ago(rng.randint(800, 1400)))],
                [],
            ]
        )
    if sex == "female" and 21 <= age <= 65:
        found += rng.choice(
            [
                [("cervical_cytology", _days_ago(rng.randint(90, 1000)))],
                [("hpv_test", _days_ago(rng.randint(90, 1700))), ("cervical_cytology", _days_ago(1200))],
                [("cervical_cytology", _days_ago(rng.randint(1200, 2000)))],
                [],
            ]
        )
    found += rng.choice(
        [
            [("flu_vaccine", f"2026-{rng.randint(9, 10):02d}-{rng.randint(1, 28):02d}")],  # this season
            [("flu_vaccine", f"2025-{rng.randint(9, 11):02d}-{rng.randint(1, 28):02d}")],  # last season: due
            [],
        ]
    )
    rows: list[tuple[str, ...]] = []
    for index, (event, date) in enumerate(found):
        code, system = CODES[event] if index % 4 != 3 else ("", "")  # codes are optional
        rows.append((mrn, event, date, code, system))
    return rows


def write_samples(directory: Path = HERE, seed: int = 2026) -> None:
    patients, events = sample_rows(seed)
    _write(directory / "roster.csv", ROSTER_HEADER, iter(patients))
    _write(directory / "events.csv", EVENTS_HEADER, iter(events))


# --- large synthetic rosters -------------------------------------------------------------------


def roster_rows(n: int, seed: int) -> Iterator[tuple[str, ...]]:
    """n distinct patients with distinct numbers (up to len(BENCH_AREAS) * 10,000)."""
    if n > len(BENCH_AREAS) * 10_000:
        raise ValueError(f"at most {len(BENCH_AREAS) * 10_000} distinct patients")
    rng = random.Random(seed)
    random_ = rng.random
    choice = rng.choice
    base = REFERENCE_DATE.toordinal()
    areas = BENCH_AREAS
    width = len(areas)
    zones = ("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles")
    for i in range(n):
        spanish = random_() < 0.3
        female = random_() < 0.52
        if spanish:
            first = choice(FEMALE_ES if female else MALE_ES)
            last = choice(LAST_ES)
        else:
            first = choice(FEMALE_EN if female else MALE_EN)
            last = choice(LAST_EN)
        birth = dt.date.fromordinal(base - 6575 - int(random_() * 24_500)).isoformat()  # 18 to ~85
        yield (
            mrn_for(i),
            first,
            last,
            birth,
            "female" if female else "male",
            _format_phone(areas[i % width], i // width, i),
            "es" if spanish and random_() < 0.8 else "en",
            choice(zones) if random_() < 0.05 else "",
            f"{int(random_() * 99_999):05d}",
        )


def event_rows(n_patients: int, seed: int) -> Iterator[tuple[str, ...]]:
    """0-3 events per patient, dated in the ten years before the reference date."""
    rng = random.Random(seed + 1)
    random_ = rng.random
    choice = rng.choice
    kinds = tuple(CODES)
    base = REFERENCE_DATE.toordinal()
    for i in range(n_patients):
        mrn = mrn_for(i)
        for _ in range(int(random_() * 4)):
            kind = choice(kinds)
            code, system = CODES[kind]
            day = dt.date.fromordinal(base - int(random_() * 3650)).isoformat()
            yield (mrn, kind, day, code, system)


def write_roster(path: Path, n: int, seed: int = 1) -> None:
    _write(Path(path), ROSTER_HEADER, roster_rows(n, seed))


def write_events(path: Path, n_patients: int, seed: int = 1) -> None:
    _write(Path(path), EVENTS_HEADER, event_rows(n_patients, seed))


def _write(path: Path, header: tuple[str, ...], rows: Iterator[tuple[str, ...]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--patients", type=int, help="write a large synthetic roster of this many patients")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--out", type=Path, default=HERE, help="directory for roster.csv and events.csv")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.patients is None:
        write_samples(args.out, 2026 if args.seed is None else args.seed)
    else:
        seed = 1 if args.seed is None else args.seed
        write_roster(args.out / "roster.csv", args.patients, seed)
        write_events(args.out / "events.csv", args.patients, seed)
    print(f"wrote {args.out / 'roster.csv'} and {args.out / 'events.csv'}")


if __name__ == "__main__":
    main()
