"""Segment counts at every boundary Twilio bills on: one segment too many on every message is money."""

from __future__ import annotations

import pytest

from outreach.segments import GSM_BASIC, GSM_EXTENSION, Segments, count_segments, non_gsm_characters


def test_the_alphabets_have_their_standard_sizes() -> None:
    # 128 positions in the default alphabet, one of which is the escape to the extension table.
    assert len(GSM_BASIC) == 127
    assert len(GSM_EXTENSION) == 10
    assert not GSM_BASIC & GSM_EXTENSION


def test_empty_text_is_one_gsm_segment() -> None:
    assert count_segments("") == Segments("GSM-7", 1, 0)


@pytest.mark.parametrize(
    ("length", "segments"),
    [(1, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4)],
)
def test_gsm_boundaries(length: int, segments: int) -> None:
    assert count_segments("a" * length) == Segments("GSM-7", segments, length)


@pytest.mark.parametrize(
    ("length", "segments"),
    [(1, 1), (70, 1), (71, 2), (134, 2), (135, 3), (201, 3), (202, 4)],
)
def test_ucs2_boundaries(length: int, segments: int) -> None:
    text = "í" + "a" * (length - 1)
    assert count_segments(text) == Segments("UCS-2", segments, length)


def test_extension_characters_count_two_septets() -> None:
    assert count_segments("€") == Segments("GSM-7", 1, 2)
    assert count_segments("a" * 158 + "€") == Segments("GSM-7", 1, 160)
    assert count_segments("a" * 159 + "€") == Segments("GSM-7", 2, 161)
    assert count_segments("{}[]~|^\\\f€").units == 20


def test_an_escape_pair_is_never_split_across_segments() -> None:
    # 306 septets would fit two parts of 153, but the euro sign cannot straddle the first boundary.
    text = "a" * 152 + "€" + "a" * 152
    assert count_segments(text) == Segments("GSM-7", 3, 306)
    assert count_segments("a" * 151 + "€" + "a" * 153).segments == 2


def test_e_acute_is_gsm_but_i_acute_forces_ucs2() -> None:
    assert count_segments("é" * 160) == Segments("GSM-7", 1, 160)
    assert count_segments("í" * 70) == Segments("UCS-2", 1, 70)
    assert count_segments("a" * 159 + "í").encoding == "UCS-2"
    assert count_segments("a" * 159 + "í").segments == 3


def test_spanish_punctuation_and_tilde_n_are_gsm() -> None:
    assert count_segments("¿Sí?").encoding == "UCS-2"
    assert count_segments("¡Señor! ¿Qué?").encoding == "GSM-7"
    assert count_segments("Ç").encoding == "GSM-7"
    assert count_segments("ç").encoding == "UCS-2"
    assert count_segments("`").encoding == "UCS-2"
    assert count_segments("\t").encoding == "UCS-2"


def test_emoji_take_two_units_and_never_split() -> None:
    assert count_segments("😀") == Segments("UCS-2", 1, 2)
    assert count_segments("a" * 68 + "😀") == Segments("UCS-2", 1, 70)
    assert count_segments("a" * 69 + "😀") == Segments("UCS-2", 2, 71)
    # 134 units would fit two parts of 67, but the surrogate pair cannot straddle the boundary.
    assert count_segments("a" * 66 + "😀" + "a" * 66) == Segments("UCS-2", 3, 134)
    assert count_segments("a" * 65 + "😀" + "a" * 67) == Segments("UCS-2", 2, 134)


def test_non_gsm_characters_are_listed_once_in_order() -> None:
    assert non_gsm_characters("Sí, más información í") == ["í", "á", "ó"]
    assert non_gsm_characters("plain text €") == []
