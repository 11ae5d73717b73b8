"""Phone numbers: parse any human format, store E.164, and infer time zones from the number.

phonenumbers knows a number's region and the zones its prefix spans, but for NANP numbers it
cannot tell a mobile from a landline (both are FIXED_LINE_OR_MOBILE), so nothing here claims to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers
from phonenumbers import (
    COUNTRY_CODE_TO_REGION_CODE,
    NumberParseException,
    PhoneMetadata,
    PhoneNumber,
    PhoneNumberType,
    national_significant_number,
    timezone,
)

# The library's per-region type check; public `number_type` would redo the region search.
from phonenumbers.phonenumberutil import _number_type_helper
from phonenumbers.tzdata import TIMEZONE_LONGEST_PREFIX

_UNKNOWN_ZONE = "Etc/Unknown"

# Types that can never receive a text message.
_NOT_TEXTABLE = {
    PhoneNumberType.PAGER: "a pager number",
    PhoneNumberType.PREMIUM_RATE: "a premium-rate number",
    PhoneNumberType.SHARED_COST: "a shared-cost number",
    PhoneNumberType.UAN: "a universal access number",
    PhoneNumberType.VOICEMAIL: "a voicemail number",
    PhoneNumberType.TOLL_FREE: "a toll-free number",
}


class PhoneError(ValueError):
    """Why a phone number cannot be used; the message is shown to a care team."""


@dataclass(frozen=True)
class Phone:
    e164: str
    region: str | None
    zones: tuple[str, ...]  # IANA zones the number's prefix spans; empty when unknown

    @property
    def zones_text(self) -> str | None:
        return " ".join(self.zones) or None


def parse_phone(raw: str, default_region: str = "US") -> Phone:
    """Parse `raw` in any human format; raise PhoneError with a reason a person can act on.

    This is the roster import's hot spot, so each phonenumbers check runs once: the region and the
    type come from one pass over the region metadata (`number_type` is UNKNOWN exactly when
    `is_valid_number` is False), and a number's zones depend only on its leading digits, so they
    are cached by prefix.
    """
    text = raw.strip()
    if not text:
        raise PhoneError("phone number is empty")
    number = _nanp_fast_path(text, default_region)
    if number is None:
        try:
            number = phonenumbers.parse(text, default_region)
        except NumberParseException as exc:
            raise PhoneError(f"not a phone number ({_parse_reason(exc)})") from None
        if number.extension:
            # A text reaches a line, never an extension behind a switchboard: the number is an
            # office's, and dropping the extension would text whoever answers there.
            raise PhoneError(
                f"has an extension ({number.extension}), so it is not a mobile number; "
                "give the patient's mobile number"
            )
    if not phonenumbers.is_possible_number(number):
        raise PhoneError("impossible phone number (wrong number of digits for its country)")
    region, kind = region_and_type(number)
    if kind == PhoneNumberType.UNKNOWN:
        raise PhoneError("invalid phone number (no such area code or exchange)")
    if kind in _NOT_TEXTABLE:
        raise PhoneError(f"cannot receive texts: {_NOT_TEXTABLE[kind]}")
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return Phone(e164=e164, region=region, zones=_zones(e164, number))


def region_and_type(number: PhoneNumber) -> tuple[str | None, int]:
    """`(phonenumbers.region_code_for_number(n), phonenumbers.number_type(n))` in one pass.

    Both library calls find the region of a shared country code (+1 has 25 regions) by matching
    the number against each region's type patterns, and `number_type` then matches them again for
    the region it found: three full type checks per number. This follows the same steps (the
    library's own `_region_code_for_number_from_list` and `number_type`) and keeps the type the
    region search already computed; tests/test_phones.py checks that both answers agree.
    """
    calling_code = number.country_code
    regions = None if calling_code is None else COUNTRY_CODE_TO_REGION_CODE.get(calling_code)
    if calling_code is None or regions is None:
        return None, PhoneNumberType.UNKNOWN
    national = national_significant_number(number)
    if len(regions) == 1:
        metadata = PhoneMetadata.metadata_for_region_or_calling_code(calling_code, regions[0])
        return regions[0], _type_in(national, metadata)
    for region in regions:
        metadata = PhoneMetadata.metadata_for_region(region.upper(), None)
        if metadata is None:
            continue
        if metadata.leading_digits is not None:
            if re.match(metadata.leading_digits, national):
                return region, _type_in(national, metadata)
        else:
            kind = _type_in(national, metadata)
            if kind != PhoneNumberType.UNKNOWN:
                return region, kind
    return None, PhoneNumberType.UNKNOWN


def _type_in(national: str, metadata: PhoneMetadata | None) -> int:
    if metadata is None:
        return PhoneNumberType.UNKNOWN
    kind: int = _number_type_helper(national, metadata)
    return kind


_SEPARATORS_ONLY = re.compile(r"^\+?[\d\s().-]+$")
_NON_DIGITS = re.compile(r"\D")


def _nanp_fast_path(text: str, default_region: str) -> PhoneNumber | None:
    """A plain North American number ('(617) 555-0123', '+1 617 555 0123') without the general
    parser; anything else (letters, extensions, other countries) goes through `phonenumbers.parse`."""
    if not _SEPARATORS_ONLY.match(text):
        return None
    digits = _NON_DIGITS.sub("", text)  # what is left are separators: \s ( ) . - +
    if text.startswith("+") or len(digits) == 11:
        if len(digits) != 11 or digits[0] != "1":
            return None
        digits = digits[1:]
    elif len(digits) != 10 or phonenumbers.country_code_for_region(default_region) != 1:
        return None
    return PhoneNumber(country_code=1, national_number=int(digits))


def _zones(e164: str, number: PhoneNumber) -> tuple[str, ...]:
    key = e164[1 : 1 + _TZ_PREFIX]
    zones = _ZONE_CACHE.get(key)
    if zones is None:
        zones = tuple(z for z in timezone.time_zones_for_number(number) if z != _UNKNOWN_ZONE)
        _ZONE_CACHE[key] = zones
    return zones


# phonenumbers maps zones by prefixes of at most this many digits (country code included).
_TZ_PREFIX = TIMEZONE_LONGEST_PREFIX
_ZONE_CACHE: dict[str, tuple[str, ...]] = {}


def _parse_reason(exc: NumberParseException) -> str:
    reasons = {
        NumberParseException.INVALID_COUNTRY_CODE: "unknown country code",
        NumberParseException.NOT_A_NUMBER: "no digits in the right places",
        NumberParseException.TOO_SHORT_AFTER_IDD: "too short after the international prefix",
        NumberParseException.TOO_SHORT_NSN: "too short",
        NumberParseException.TOO_LONG: "too long",
    }
    return reasons.get(exc.error_type, "unreadable")


def mask(e164: str) -> str:
    """Logs never carry a whole number: keep the country code and the last two digits."""
    if len(e164) <= 4:
        return "*" * len(e164)
    return e164[:2] + "*" * (len(e164) - 4) + e164[-2:]


# A number inside free text in a stored form: E.164 (webhooks, the outbox) or a bare run of digits.
_NUMBER_IN_TEXT = re.compile(r"\+\d{7,15}\b|\b\d{10,15}\b")


def mask_in_text(text: str) -> str:
    """`text` with every number in it masked as `mask` does (audit entries, notes staff typed)."""
    return _NUMBER_IN_TEXT.sub(lambda found: mask(found.group(0)), text)
