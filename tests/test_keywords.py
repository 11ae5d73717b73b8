"""The reserved reply words: one table (outreach/keywords.py) that reply classification and campaign
validation share, so a campaign can never own a word the classifier answers first (AYUDA, BASTA
and ALTO once validated and then never fired; ALTO silently opted the patient out).

The words are taken from keywords.py's own tables, never retyped here: a word added to a table is
tested in every spelling a phone might send."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from outreach.campaigns import ReplyRule, parse_campaign
from outreach.config import get_settings
from outreach.errors import UserError
from outreach.keywords import BY_LANGUAGE, Family, Reserved, normalize, reserved, single_words
from outreach.listen.classify import Kind

_ACCENTED = {"a": "á", "e": "é", "i": "í", "o": "ó", "u": "ú", "n": "ñ"}


def _spellings(word: str) -> list[str]:
    """A table word as a care team might type it in a file: any case, with or without accents,
    and a phrase with underscores for its spaces (a keyword is one \\w+ word)."""
    joined = word.replace(" ", "_")
    accented = "".join(_ACCENTED.get(c, c) for c in joined)
    return [joined, joined.upper(), joined.title(), accented, accented.upper()]


def _table(family: Family) -> Iterator[tuple[str, str]]:
    """(language, word) for every entry that `family` reserves, phrases included."""
    for language, words in BY_LANGUAGE.items():
        if family is Family.opt_out:
            entries = (*words.opt_out, *words.opt_out_whole, *words.opt_out_phrases)
        else:
            entries = words.opt_in if family is Family.opt_in else words.help
        for entry in entries:
            yield language, entry


RESERVED = [(family, language, word) for family in Family for language, word in _table(family)]


def refusal(keyword: str) -> str | None:
    """Campaign validation's verdict on `keyword` as a reply rule's keyword: the message, or None."""
    try:
        ReplyRule.model_validate({"keywords": [keyword], "outcome": "kit_requested"})
    except ValidationError as exc:
        return str(exc.errors()[0]["msg"])
    return None


def test_every_language_can_opt_out_and_ask_for_help() -> None:
    for language, words in BY_LANGUAGE.items():
        assert words.opt_out and words.opt_out_phrases and words.help, language


@pytest.mark.parametrize(("family", "language", "word"), RESERVED, ids=lambda v: str(v))
def test_every_reserved_word_is_refused_as_a_campaign_keyword(
    family: Family, language: str, word: str
) -> None:
    for spelling in _spellings(word):
        assert reserved(normalize(spelling), opted_out=False) is not None, (language, spelling)
        message = refusal(spelling)
        assert message is not None, f"{spelling} ({language}) validates as a campaign keyword"
        assert message.startswith(f"{spelling} is reserved for {family.label} ("), message
        assert message.endswith("; choose another keyword")


@pytest.mark.parametrize(("family", "language", "word"), RESERVED, ids=lambda v: str(v))
def test_a_reserved_word_alone_is_classified_as_its_family(family: Family, language: str, word: str) -> None:
    found = reserved(normalize(word.upper()), opted_out=False)
    assert found is not None and found.family is family, (language, word, found)
    words = ", ".join(single_words(family))
    keyword = word.replace(" ", "_")
    assert refusal(keyword) == f"{keyword} is reserved for {family.label} ({words}); choose another keyword"


@pytest.mark.parametrize("keyword", ["AYUDA", "Ayuda", "ayúda", "BASTA", "basta", "ALTO", "Alto", "ÁLTO"])
def test_the_spanish_words_that_slipped_through_are_refused_in_a_campaign_file(keyword: str) -> None:
    text = f"""
id: test-campaign
name: Test
active: {{from: 2026-01-01}}
audience: {{age: {{min: 45, max: 75}}}}
steps: [{{id: invite, after: 0d, text: {{en: "Hi {{first_name}}. Reply STOP to opt out."}}}}]
replies: [{{keywords: [YES, "{keyword}"], outcome: kit_requested}}]
"""
    with pytest.raises(UserError) as caught:
        parse_campaign(text, path="test-campaign.yaml", settings=get_settings())
    family = "help" if keyword.casefold().startswith(("ayuda", "ayúda")) else "opt-out"
    assert f"replies[0].keywords[1]: {keyword} is reserved for {family} (" in str(caught.value)


def test_yes_and_si_stay_campaign_keywords_and_opt_in_only_an_opted_out_number() -> None:
    for language, words in BY_LANGUAGE.items():
        for word in words.opt_in_if_opted_out:
            for spelling in _spellings(word):
                assert refusal(spelling) is None, (language, spelling)
                assert reserved(normalize(spelling), opted_out=False) is None
                assert reserved(normalize(spelling), opted_out=True) == Reserved(Family.opt_in, word.upper())


def test_every_family_is_a_kind_of_reply() -> None:
    assert {Kind(family) for family in Family} == {Kind.opt_out, Kind.opt_in, Kind.help}


def test_tables_hold_normalized_words() -> None:
    """The classifier compares normalized text, so an unnormalized entry could never match."""
    for words in BY_LANGUAGE.values():
        for entries in vars(words).values():
            for entry in entries:
                assert normalize(entry).text == entry, entry


# --- the property: validation refuses exactly what the classifier answers before campaigns -----

_TABLE_WORDS = sorted({word.replace(" ", "_") for _f, _l, word in RESERVED})
_LETTERS = "abcdefghijklmnopqrstuvwxyzáéíóúñü"


@st.composite
def keywords(draw: st.DrawFn) -> str:
    """A one-word keyword: a table word or a random one, with phone-like case and accents, and
    sometimes a table word glued to another (STOPPED, NOSTOP)."""
    word = draw(st.one_of(st.sampled_from(_TABLE_WORDS), st.text(_LETTERS, min_size=1, max_size=10)))
    if draw(st.booleans()):
        other = draw(st.sampled_from(_TABLE_WORDS))
        word = draw(st.sampled_from([word + "s", "no" + word, f"{word}_{other}", f"{other}_{word}"]))
    if draw(st.booleans()):
        word = "".join(_ACCENTED.get(c, c) if draw(st.booleans()) else c for c in word)
    case = draw(st.sampled_from([str.lower, str.upper, str.title, str.swapcase]))
    return unicodedata.normalize("NFC", case(word))


@given(keywords())
def test_validation_refuses_exactly_the_words_the_classifier_answers_first(keyword: str) -> None:
    assert re.fullmatch(r"\w+", keyword)
    found = reserved(normalize(keyword), opted_out=False)
    message = refusal(keyword)
    if found is None:
        assert message is None, message
    else:
        assert message is not None, f"{keyword} validates but the classifier reads it as {found.family.label}"
        assert f" is reserved for {found.family.label} (" in message
