"""Which US state a phone number or a ZIP code belongs to, for the states whose texting laws end
earlier than the federal 21:00 (DESIGN.md §7.3).

Florida (Florida Telephone Solicitation Act, Fla. Stat. 501.059), Oklahoma (Telephone Solicitation Act of
2022) and Maryland (Stop the Spam Calls Act of 2023) forbid these messages after 20:00 local time.
A patient may live in one of them with an out-of-state number, or carry one of their numbers
elsewhere, so either the number or the address is enough to apply the earlier end.

Only these three states are mapped: the tables answer "is this FL, OK or MD?", not "which state?".
"""

from __future__ import annotations

import re

STRICT_STATES = frozenset({"FL", "OK", "MD"})

# Area codes (NPA) in service or assigned as of 2025, per the NANPA planning letters.
# phonenumbers' geocoder names a city for some exchanges ("Miami, FL") and the state for others, so it
# cannot be queried with one number per area code; tests/test_windows.py checks this table against
# the geocoder's data for every NANP prefix it has. 728 (Palm Beach overlay, 2025) is newer than some
# geocoder releases.
AREA_CODES: dict[str, str] = {
    **dict.fromkeys(
        (
            "239", "305", "321", "324", "352", "386", "407", "448", "561", "645", "656", "689",
            "727", "728", "754", "772", "786", "813", "850", "863", "904", "941", "954",
        ),
        "FL",
    ),
    **dict.fromkeys(("405", "539", "572", "580", "918"), "OK"),
    **dict.fromkeys(("227", "240", "301", "410", "443", "667"), "MD"),
}  # fmt: skip

# Three-digit ZIP prefixes (the USPS sectional center facilities), from the USPS "L002 3-Digit ZIP Code
# Prefix Matrix" as summarized in Wikipedia's "List of ZIP Code prefixes". Gaps are deliberate:
# 340 is APO/FPO "AA" (armed forces, the Americas), 343/345/348 are unassigned; 732 and 742 are
# unassigned and 733 is Austin, Texas (IRS); 213 is unassigned. 739 (the Oklahoma panhandle) is
# served from Liberal, Kansas but the addresses are in Oklahoma.
ZIP3: dict[str, str] = {
    **{str(p): "FL" for p in (*range(320, 340), 341, 342, 344, 346, 347, 349)},
    **{str(p): "OK" for p in (730, 731, *range(734, 742), *range(743, 750))},
    **{str(p): "MD" for p in (*range(206, 213), *range(214, 220))},
}

_US_ZIP = re.compile(r"^(\d{3})\d{2}(?:-?\d{4})?$")
_NANP = re.compile(r"^\+1(\d{3})\d{7}$")


def area_code_state(phone_e164: str) -> str | None:
    """FL, OK or MD when a NANP number's area code belongs to one of them, else None."""
    match = _NANP.match(phone_e164)
    return AREA_CODES.get(match.group(1)) if match else None


def postal_code_state(postal_code: str | None) -> str | None:
    """FL, OK or MD for a US ZIP or ZIP+4 in one of them, else None (also for non-US codes).

    The roster has no country column, so a five-digit code is read as a US ZIP: for another
    country's code that errs towards the earlier 20:00 end, which is the safe side.
    """
    if not postal_code:
        return None
    match = _US_ZIP.match(postal_code.strip())
    return ZIP3.get(match.group(1)) if match else None
