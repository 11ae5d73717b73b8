"""Patient-local send windows and the hard quiet hours (DESIGN.md §7.3)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from phonenumbers.geodata import GEOCODE_DATA

from outreach.campaigns import WEEKDAYS, SendWindow
from outreach.phones import parse_phone
from outreach.plan.states import AREA_CODES, ZIP3, area_code_state, postal_code_state
from outreach.plan.windows import (
    effective_hours,
    is_open,
    next_opening,
    patient_zones,
    strict_hours,
    window_close,
)

NY = "America/New_York"
LA = "America/Los_Angeles"
WEEKDAYS_9_18 = SendWindow(days=["mon", "tue", "wed", "thu", "fri"], start=dt.time(9), end=dt.time(18))
EVERY_DAY_9_18 = SendWindow(days=list(WEEKDAYS), start=dt.time(9), end=dt.time(18))
EVERY_DAY_WIDE = SendWindow(days=list(WEEKDAYS), start=dt.time(7), end=dt.time(22))


def utc(zone: str, year: int, month: int, day: int, hour: int, minute: int) -> dt.datetime:
    """A local wall time in `zone`, as the naive UTC the database stores."""
    local = dt.datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(zone))
    return local.astimezone(dt.UTC).replace(tzinfo=None)


def opening(at: dt.datetime, window: SendWindow, zones: tuple[str, ...], strict: bool = False) -> dt.datetime:
    return next_opening(at, window=window, zones=zones, strict=strict)


# --- zones -----------------------------------------------------------------------------------------


def test_known_zone_wins_over_the_numbers_zones() -> None:
    assert patient_zones(LA, "America/Adak America/Anchorage", NY) == (LA,)


def test_number_zones_are_used_when_no_zone_is_known() -> None:
    phone = parse_phone("+1 907 555 0123")
    assert patient_zones(None, phone.zones_text, NY) == ("America/Adak", "America/Anchorage")


def test_default_zone_when_nothing_is_known() -> None:
    assert patient_zones(None, None, NY) == (NY,)
    assert patient_zones("", "Etc/Unknown", NY) == (NY,)


# --- states with a 20:00 end ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phone", "postal_code", "strict"),
    [
        ("+13055550123", None, True),  # Miami
        ("+14055550123", None, True),  # Oklahoma City
        ("+14105550123", None, True),  # Baltimore
        ("+16175550123", None, False),  # Boston
        ("+16175550123", "20814", True),  # Bethesda, MD
        ("+16175550123", "20814-1234", True),
        ("+16175550123", "33101", True),  # Miami
        ("+16175550123", "73102", True),  # Oklahoma City
        ("+16175550123", "73942", True),  # Guymon, OK (739: served from Kansas, still Oklahoma)
        ("+16175550123", "73301", False),  # Austin, TX (733 sits inside Oklahoma's range)
        ("+16175550123", "34001", False),  # APO/FPO AA (340 sits inside Florida's range)
        ("+16175550123", "20001", False),  # Washington, DC
        ("+16175550123", "02139", False),
        ("+16175550123", "K1A 0B6", False),  # Canadian
        ("+16175550123", "", False),
        ("+442071838750", None, False),  # London
    ],
)
def test_strict_hours_by_number_or_address(phone: str, postal_code: str | None, strict: bool) -> None:
    assert strict_hours(phone, postal_code) is strict


def test_area_code_table_agrees_with_the_phonenumbers_geocoder() -> None:
    """Every NANP prefix the geocoder places in FL, OK or MD (by state name or ", XX" city
    suffix) is in the table with that state, and every table entry has such a prefix."""
    names = {"Florida": "FL", "Oklahoma": "OK", "Maryland": "MD"}
    seen: dict[str, set[str]] = {}
    for prefix, descriptions in GEOCODE_DATA.items():
        if not (prefix.startswith("1") and len(prefix) >= 4):
            continue
        text = descriptions.get("en", "")
        state = names.get(text) or (text[-2:] if text[-4:-2] == ", " else None)
        seen.setdefault(prefix[1:4], set()).add(state or "")
    for npa, states in seen.items():
        strict = states & {"FL", "OK", "MD"}
        if strict:
            assert AREA_CODES.get(npa) in strict, f"{npa} is {strict} per the geocoder"
    for npa, state in AREA_CODES.items():
        assert state in seen.get(npa, set()), f"the geocoder does not place {npa} in {state}"


def test_area_code_state_needs_a_nanp_number() -> None:
    assert area_code_state("+13055550123") == "FL"
    assert area_code_state("+443055550123") is None  # +44 305...: not an area code


def test_zip3_table_spans_the_documented_ranges() -> None:
    fl = {p for p, s in ZIP3.items() if s == "FL"}
    ok = {p for p, s in ZIP3.items() if s == "OK"}
    md = {p for p, s in ZIP3.items() if s == "MD"}
    assert fl == {str(p) for p in range(320, 350)} - {"340", "343", "345", "348"}
    assert ok == {str(p) for p in range(730, 750)} - {"732", "733", "742"}
    assert md == {str(p) for p in range(206, 220)} - {"213"}
    assert postal_code_state("3310") is None  # too short to be a ZIP


# --- windows ------------------------------------------------------------------------------------


def test_patient_local_los_angeles_vs_new_york() -> None:
    at = utc(NY, 2026, 3, 17, 9, 30)  # Tuesday: 09:30 in New York, 06:30 in Los Angeles
    assert opening(at, WEEKDAYS_9_18, (NY,)) == at
    assert opening(at, WEEKDAYS_9_18, (LA,)) == utc(LA, 2026, 3, 17, 9, 0)
    assert opening(at, WEEKDAYS_9_18, (LA,)) == dt.datetime(2026, 3, 17, 16, 0)


def test_florida_number_stops_at_20() -> None:
    window = SendWindow(days=list(WEEKDAYS), start=dt.time(9), end=dt.time(21))
    strict = strict_hours("+13055550123", None)
    at = utc(NY, 2026, 3, 17, 20, 0)
    assert not is_open(at, window=window, zones=(NY,), strict=strict)
    assert opening(at, window, (NY,), strict) == utc(NY, 2026, 3, 18, 9, 0)
    assert window_close(utc(NY, 2026, 3, 17, 19, 59), window=window, zones=(NY,), strict=strict) == at
    # The same time is fine for a Boston number with a Boston address.
    assert is_open(at, window=window, zones=(NY,), strict=strict_hours("+16175550123", "02139"))


def test_maryland_address_on_a_non_strict_number_stops_at_20() -> None:
    strict = strict_hours("+16175550123", "21201")
    assert strict
    at = utc(NY, 2026, 3, 17, 20, 30)
    assert not is_open(at, window=EVERY_DAY_WIDE, zones=(NY,), strict=strict)
    assert opening(at, EVERY_DAY_WIDE, (NY,), strict) == utc(NY, 2026, 3, 18, 8, 0)


def test_campaign_hours_are_clipped_to_8_and_21() -> None:
    assert effective_hours(EVERY_DAY_WIDE, strict=False) == (dt.time(8), dt.time(21))
    assert effective_hours(EVERY_DAY_WIDE, strict=True) == (dt.time(8), dt.time(20))
    assert opening(utc(NY, 2026, 3, 17, 7, 30), EVERY_DAY_WIDE, (NY,)) == utc(NY, 2026, 3, 17, 8, 0)
    noon = utc(NY, 2026, 3, 17, 12, 0)
    assert window_close(noon, window=EVERY_DAY_WIDE, zones=(NY,), strict=False) == utc(NY, 2026, 3, 17, 21, 0)
    assert opening(utc(NY, 2026, 3, 17, 21, 30), EVERY_DAY_WIDE, (NY,)) == utc(NY, 2026, 3, 18, 8, 0)


def test_friday_evening_waits_for_monday_morning() -> None:
    friday = utc(NY, 2026, 3, 20, 18, 0)
    assert dt.date(2026, 3, 20).weekday() == 4
    assert opening(friday, WEEKDAYS_9_18, (NY,)) == utc(NY, 2026, 3, 23, 9, 0)
    assert opening(utc(NY, 2026, 3, 21, 10, 0), WEEKDAYS_9_18, (NY,)) == utc(NY, 2026, 3, 23, 9, 0)


def test_days_are_the_patients_local_days() -> None:
    # Friday 20:00 in Los Angeles is already Saturday in UTC, but still Friday for the patient.
    window = SendWindow(days=["fri"], start=dt.time(9), end=dt.time(21))
    at = utc(LA, 2026, 3, 20, 20, 0)
    assert at.weekday() == 5
    assert is_open(at, window=window, zones=(LA,), strict=False)


def test_multi_zone_number_waits_for_the_overlap() -> None:
    zones = patient_zones(None, parse_phone("+19075550123").zones_text, NY)
    assert zones == ("America/Adak", "America/Anchorage")
    adak, anchorage = zones
    # 09:00 in Adak is 10:00 in Anchorage; 18:00 in Anchorage is 17:00 in Adak.
    at = utc(anchorage, 2026, 3, 17, 9, 0)
    assert opening(at, WEEKDAYS_9_18, zones) == utc(anchorage, 2026, 3, 17, 10, 0)
    assert opening(at, WEEKDAYS_9_18, zones) == utc(adak, 2026, 3, 17, 9, 0)
    close = window_close(at, window=WEEKDAYS_9_18, zones=zones, strict=False)
    assert close == utc(anchorage, 2026, 3, 17, 18, 0) == utc(adak, 2026, 3, 17, 17, 0)
    assert not is_open(close, window=WEEKDAYS_9_18, zones=zones, strict=False)


def test_no_overlap_keeps_legal_hours_everywhere_and_campaign_hours_somewhere() -> None:
    """A one-hour window on a number spanning Eastern and Central has no overlap; the message
    goes out when it is 09:00-10:00 in one zone and within 08:00-21:00 in both."""
    window = SendWindow(days=list(WEEKDAYS), start=dt.time(9), end=dt.time(10))
    zones = (NY, "America/Chicago")
    at = utc(NY, 2026, 3, 17, 5, 0)
    first = opening(at, window, zones)
    assert first == utc(NY, 2026, 3, 17, 9, 0)  # 08:00 in Chicago: legal, not the campaign's hours
    close = window_close(at, window=window, zones=zones, strict=False)
    assert close == utc("America/Chicago", 2026, 3, 17, 10, 0)  # the Chicago window, 11:00 in NY


def test_when_even_legal_hours_never_overlap_the_first_zone_decides() -> None:
    zones = ("Etc/GMT+6", "Etc/GMT-6")  # 12 hours apart: 08:00-20:00 in one is 20:00-08:00 in the other
    at = dt.datetime(2026, 3, 17, 3, 0)  # 21:00 in the first zone, 09:00 in the second
    assert opening(at, EVERY_DAY_WIDE, zones, strict=True) == utc("Etc/GMT+6", 2026, 3, 17, 8, 0)
    assert opening(at, EVERY_DAY_WIDE, zones[::-1], strict=True) == at


def test_spring_forward_in_new_york() -> None:
    # 2026-03-08 (Sunday) at 02:00 clocks go to 03:00: 09:00 is 13:00 UTC, the day before 14:00.
    saturday_night = utc(NY, 2026, 3, 7, 20, 0)
    assert opening(saturday_night, EVERY_DAY_9_18, (NY,)) == dt.datetime(2026, 3, 8, 13, 0)
    close = window_close(saturday_night, window=EVERY_DAY_9_18, zones=(NY,), strict=False)
    assert close == dt.datetime(2026, 3, 8, 22, 0)
    assert opening(utc(NY, 2026, 3, 7, 10, 0), EVERY_DAY_9_18, (NY,)) == dt.datetime(2026, 3, 7, 15, 0)


def test_fall_back_in_new_york() -> None:
    # 2026-11-01 (Sunday) at 02:00 clocks go back to 01:00: 09:00 is 14:00 UTC, the day before 13:00.
    saturday_night = utc(NY, 2026, 10, 31, 19, 0)
    assert opening(saturday_night, EVERY_DAY_9_18, (NY,)) == dt.datetime(2026, 11, 1, 14, 0)
    close = window_close(saturday_night, window=EVERY_DAY_9_18, zones=(NY,), strict=False)
    assert close == dt.datetime(2026, 11, 1, 23, 0)


def test_a_skipped_local_day_is_not_an_opening() -> None:
    # Samoa moved across the date line: 2011-12-29 was followed by 2011-12-31.
    apia = "Pacific/Apia"
    at = dt.datetime(2011, 12, 30, 6, 0)  # 2011-12-29 20:00 local
    assert opening(at, EVERY_DAY_9_18, (apia,)) == utc(apia, 2011, 12, 31, 9, 0)
    close = window_close(at, window=EVERY_DAY_9_18, zones=(apia,), strict=False)
    assert close == utc(apia, 2011, 12, 31, 18, 0)


def test_start_is_inside_and_end_is_outside() -> None:
    start = utc(NY, 2026, 3, 17, 9, 0)
    end = utc(NY, 2026, 3, 17, 18, 0)
    assert is_open(start, window=WEEKDAYS_9_18, zones=(NY,), strict=False)
    assert opening(start, WEEKDAYS_9_18, (NY,)) == start
    assert not is_open(end, window=WEEKDAYS_9_18, zones=(NY,), strict=False)
    assert opening(end, WEEKDAYS_9_18, (NY,)) == utc(NY, 2026, 3, 18, 9, 0)
    assert is_open(end - dt.timedelta(microseconds=1), window=WEEKDAYS_9_18, zones=(NY,), strict=False)


def test_a_row_due_at_2059_goes_out_and_one_due_at_21_waits_for_morning() -> None:
    window = SendWindow(days=list(WEEKDAYS), start=dt.time(8), end=dt.time(21))
    due = utc(NY, 2026, 3, 17, 20, 59)
    assert is_open(due, window=window, zones=(NY,), strict=False)
    assert window_close(due, window=window, zones=(NY,), strict=False) == utc(NY, 2026, 3, 17, 21, 0)
    late = utc(NY, 2026, 3, 17, 21, 0)
    assert not is_open(late, window=window, zones=(NY,), strict=False)
    assert opening(late, window, (NY,)) == utc(NY, 2026, 3, 18, 8, 0)


def test_aware_datetimes_are_read_as_the_instant_they_are() -> None:
    aware = dt.datetime(2026, 3, 17, 9, 30, tzinfo=ZoneInfo(NY))
    assert opening(aware, WEEKDAYS_9_18, (NY,)) == utc(NY, 2026, 3, 17, 9, 30)


def test_a_window_without_days_or_hours_is_an_error() -> None:
    at = dt.datetime(2026, 3, 17, 12, 0)
    with pytest.raises(ValueError, match="no days"):
        opening(at, SendWindow(days=[], start=dt.time(9), end=dt.time(18)), (NY,))
    with pytest.raises(ValueError, match="no time inside 08:00-21:00"):
        SendWindow(days=["mon"], start=dt.time(6), end=dt.time(7, 30))
    # Campaign validation refuses such a window; the window code still defends itself against one.
    early = SendWindow.model_construct(days=["mon"], start=dt.time(6), end=dt.time(7, 30))
    assert effective_hours(early, strict=False) is None
    with pytest.raises(ValueError, match="no hours between 08:00 and 21:00"):
        opening(at, early, (NY,))
    with pytest.raises(ValueError, match="no hours between 08:00 and 20:00"):
        opening(at, SendWindow(days=["mon"], start=dt.time(20), end=dt.time(21)), (NY,), strict=True)


@pytest.mark.parametrize(
    ("zones", "start"),
    [
        (("America/Adak", "America/Anchorage"), dt.datetime(2026, 3, 4)),  # across spring-forward
        ((NY,), dt.datetime(2026, 10, 28)),  # across fall-back
        (("America/Phoenix", "America/Denver"), dt.datetime(2026, 3, 4)),  # one zone has no DST
    ],
)
def test_agrees_with_local_clocks_minute_by_minute(zones: tuple[str, ...], start: dt.datetime) -> None:
    """Brute force over ten days: open exactly when every zone's wall clock is inside the window,
    and next_opening is the first open minute."""
    window = SendWindow(
        days=["mon", "tue", "wed", "thu", "fri", "sun"], start=dt.time(8, 30), end=dt.time(20)
    )

    def inside(at: dt.datetime) -> bool:
        for zone in zones:
            local = at.replace(tzinfo=dt.UTC).astimezone(ZoneInfo(zone))
            if WEEKDAYS[local.weekday()] not in window.days or not (
                window.start <= local.time() < window.end
            ):
                return False
        return True

    minutes = [start + dt.timedelta(minutes=m) for m in range(0, 10 * 24 * 60, 1)]
    truth = [inside(m) for m in minutes]
    assert any(truth) and not all(truth)
    next_open: dt.datetime | None = None
    for minute, expected in zip(reversed(minutes), reversed(truth), strict=True):
        if expected:
            next_open = minute
        assert is_open(minute, window=window, zones=zones, strict=False) is expected
        if next_open is not None:
            assert opening(minute, window, zones) == next_open


def test_phonenumbers_zone_for_a_florida_panhandle_number_is_central() -> None:
    """850 spans Central (Pensacola) and Eastern (Tallahassee); whatever phonenumbers says is what
    the window is evaluated in, and the number is strict either way."""
    phone = parse_phone("+18505550123")
    assert phone.zones and set(phone.zones) <= {"America/Chicago", "America/New_York"}
    assert strict_hours(phone.e164, None)
