"""SMS segment counting: what a text costs, since Twilio bills (and rate-limits) per segment.

A text that fits the GSM 03.38 alphabet goes as 7-bit septets: 160 in a single message, 153 per
part once it is split (the concatenation header takes the rest). One character outside that
alphabet switches the whole text to UCS-2: 70 UTF-16 code units alone, 67 per part. Characters of
the GSM extension table take two septets (an escape and the character), and neither an escape pair
nor a UTF-16 surrogate pair (an emoji) is ever split across two parts, so a character that does
not fit in what is left of a part starts the next one. This matches Twilio's own segment
calculator (github.com/TwilioDevEd/message-segment-calculator) with Smart Encoding off, except
that it keeps multi-code-point graphemes (emoji joined with ZWJ) whole where this counts code
points; the two differ only when such a grapheme straddles a part boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Encoding = Literal["GSM-7", "UCS-2"]

# GSM 03.38 default alphabet (without the escape code 0x1B, which is not a character of its own).
GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: each costs an escape septet plus its own.
GSM_EXTENSION = frozenset("\f^{}\\[~]|€")

GSM_SINGLE, GSM_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67


@dataclass(frozen=True)
class Segments:
    encoding: Encoding
    segments: int
    units: int  # septets for GSM-7, UTF-16 code units for UCS-2, for the whole text


def is_gsm(char: str) -> bool:
    return char in GSM_BASIC or char in GSM_EXTENSION


def non_gsm_characters(text: str) -> list[str]:
    """The characters that force UCS-2, each once, in order of appearance (for warnings)."""
    seen: dict[str, None] = {}
    for char in text:
        if not is_gsm(char):
            seen.setdefault(char, None)
    return list(seen)


def count_segments(text: str) -> Segments:
    """How many segments Twilio bills for `text` (an empty text is one segment)."""
    if all(is_gsm(char) for char in text):
        costs = [2 if char in GSM_EXTENSION else 1 for char in text]
        return Segments("GSM-7", _pack(costs, GSM_SINGLE, GSM_PART), sum(costs))
    costs = [2 if ord(char) > 0xFFFF else 1 for char in text]
    return Segments("UCS-2", _pack(costs, UCS2_SINGLE, UCS2_PART), sum(costs))


def _pack(costs: list[int], single: int, part: int) -> int:
    """Fill parts greedily; a character never straddles two parts."""
    if sum(costs) <= single:
        return 1
    parts, used = 1, 0
    for cost in costs:
        if used + cost > part:
            parts, used = parts + 1, 0
        used += cost
    return parts
