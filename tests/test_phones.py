"""Phone numbers: formats care teams type, invalid and impossible numbers, foreign numbers, zones."""

from __future__ import annotations

import random

import phonenumbers
import pytest

from outreach.phones import PhoneError, mask, parse_phone, region_and_type


@pytest.mark.parametrize(
    "raw",
    [
        "(617) 555-0123",
        "617-555-0123",
        "617.555.0123",
        "6175550123",
        "+1 617 555 0123",
        "1-617-555-0123",
        "  +1 (617) 555-0123  ",
        "+16175550123",
    ],
)
def test_human_formats_become_e164(raw: str) -> None:
    phone = parse_phone(raw)
    assert (phone.e164, phone.region, phone.zones) == ("+16175550123", "US", ("America/New_York",))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("call me", "not a phone number"),
        ("12", "impossible"),
        ("617-555-01234567", "impossible"),
        ("555-283-2805", "invalid"),  # Synthea's area code 555 does not exist
        ("(123) 555-0100", "invalid"),
        ("800-555-0100", "toll-free"),
        ("+1 900 555 0100", "premium-rate"),
    ],
)
def test_unusable_numbers_say_why(raw: str, reason: str) -> None:
    with pytest.raises(PhoneError, match=reason):
        parse_phone(raw)


@pytest.mark.parametrize(
    "raw",
    [
        "617-555-0100 ext. 12",
        "(617) 555-0100 ext 12",
        "617-555-0100 x12",
        "617-555-0100 x 12",
        "617-555-0100 #12",
        "617-555-0100,12",
        "+1 617 555 0100 extension 12",
        "+44 20 7946 0958 ext. 12",
    ],
)
def test_a_number_with_an_extension_is_refused_not_cut_short(raw: str) -> None:
    """An extension sits behind a switchboard: dropping it would text whoever answers the
    office's line, so the number is refused, naming the extension phonenumbers found."""
    with pytest.raises(PhoneError) as refused:
        parse_phone(raw)
    assert str(refused.value) == (
        "has an extension (12), so it is not a mobile number; give the patient's mobile number"
    )


def test_foreign_numbers_keep_their_country_and_zone() -> None:
    london = parse_phone("+44 20 7946 0958")
    assert (london.e164, london.region, london.zones) == ("+442079460958", "GB", ("Europe/London",))
    mexico = parse_phone("+52 55 1234 5678")
    assert mexico.region == "MX" and mexico.e164 == "+525512345678"


def test_default_region_applies_to_numbers_without_a_country_code() -> None:
    assert parse_phone("020 7946 0958", "GB").e164 == "+442079460958"
    assert parse_phone("(416) 555-0123", "CA").region == "CA"


@pytest.mark.parametrize(
    ("raw", "zones"),
    [
        ("(415) 555-0101", ("America/Los_Angeles",)),
        ("(312) 555-0101", ("America/Chicago",)),
        ("(808) 555-0101", ("Pacific/Honolulu",)),
        ("(907) 555-0101", ("America/Adak", "America/Anchorage")),  # one area code, two zones: keep both
    ],
)
def test_time_zones_come_from_the_number(raw: str, zones: tuple[str, ...]) -> None:
    phone = parse_phone(raw)
    assert phone.zones == zones
    assert phone.zones_text == " ".join(zones)


def test_fast_path_agrees_with_the_general_parser() -> None:
    """The shortcut for plain North American numbers must give what phonenumbers.parse gives."""
    rng = random.Random(7)
    for _ in range(3000):
        raw = f"({rng.randint(100, 999)}) {rng.randint(100, 999)}-{rng.randint(0, 9999):04d}"
        number = phonenumbers.parse(raw, "US")
        expected = (
            phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
            if phonenumbers.is_valid_number(number)
            else None
        )
        try:
            got: str | None = parse_phone(raw).e164
        except PhoneError:
            got = None
        kind = phonenumbers.number_type(number)
        if expected is not None and kind in (
            phonenumbers.PhoneNumberType.TOLL_FREE,
            phonenumbers.PhoneNumberType.PREMIUM_RATE,
            phonenumbers.PhoneNumberType.SHARED_COST,
            phonenumbers.PhoneNumberType.UAN,
            phonenumbers.PhoneNumberType.VOICEMAIL,
            phonenumbers.PhoneNumberType.PAGER,
        ):
            expected = None
        assert got == expected, raw


def test_mask_keeps_only_country_code_and_last_two_digits() -> None:
    assert mask("+16175550123") == "+1********23"
    assert "555" not in mask("+16175550123")


# Numbers of country codes several regions share, where finding the region is the hard part.
SHARED_CODE_PREFIXES = (
    "+1 242|+1 246|+1 268|+1 340|+1 345|+1 416|+1 441|+1 473|+1 604|+1 649|+1 670|+1 671|+1 684|"
    "+1 721|+1 758|+1 787|+1 800|+1 809|+1 829|+1 868|+1 876|+1 900|+1 939|+7 7|+7 9|+44 1624|"
    "+44 1481|+44 7|+39 06 698|+39 3|+47 79|+61 8 9164|+262 269|+262 639|+590 590|+599 9|+212 528|"
    "+800|+882 13"
)


def test_region_and_type_in_one_pass_agree_with_the_library() -> None:
    """parse_phone finds region and type in one pass over the metadata; the answers must be the
    library's own, including country codes shared by several regions (+1, +7, +44, +262, +599...)."""
    rng = random.Random(11)
    numbers = []
    for _ in range(1500):
        area = rng.randint(200, 999)
        numbers.append(f"+1 {area} {rng.randint(200, 999)} {rng.randint(0, 9999):04d}")
    for prefix in SHARED_CODE_PREFIXES.split("|"):
        for _ in range(40):
            digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(4, 9)))
            numbers.append(f"{prefix} {digits}")
    for raw in numbers:
        try:
            number = phonenumbers.parse(raw, "US")
        except phonenumbers.NumberParseException:
            continue
        expected = (phonenumbers.region_code_for_number(number), phonenumbers.number_type(number))
        assert region_and_type(number) == expected, raw
