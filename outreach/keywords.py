"""The reserved reply words (DESIGN.md §8): one home for what reply classification and campaign
validation must agree on.

A reply is checked for opt-out, opt-in and help before any campaign keyword. A campaign whose
keyword is one of these words would validate and then never fire, or worse (ALTO in a campaign
rule silently opted the patient out while the campaign file looked fine). So both sides ask the
same question of the same tables, in the same normalized form: `reserved(normalize(text))`.

Words are stored normalized (case-folded, accent-folded, apostrophes dropped), per language, so
a new language is one more entry in `BY_LANGUAGE` and both sides learn it at once.

YES and SI are opt-in only from an opted-out number (a patient answering "yes" to an invitation
means the invitation); they stay legitimate campaign keywords.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

_WORD = re.compile(r"[^\W_]+")


class Family(enum.StrEnum):
    """What a reserved word does; the values are those of `classify.Kind`."""

    opt_out = "opt_out"
    opt_in = "opt_in"
    help = "help"

    @property
    def label(self) -> str:
        """As a care team reads it ("opt-out")."""
        return self.value.replace("_", "-")


@dataclass(frozen=True)
class Words:
    """The reserved words of one language, normalized."""

    opt_out: tuple[str, ...]  # as the first word ("stop", "Stop please", "STOP!!")
    opt_out_whole: tuple[str, ...]  # only as the whole message ("please stop by" is not a request)
    opt_out_phrases: tuple[str, ...]  # anywhere in the message ("please stop texting me")
    opt_in: tuple[str, ...]  # as the first word
    opt_in_if_opted_out: tuple[str, ...]  # as the first word, only from an opted-out number
    help: tuple[str, ...]  # as the first word


# The carriers' (and Twilio's) own opt-out words: after one of them Twilio itself refuses texts to
# the number until it texts START, whatever our database says.
CARRIER_OPT_OUT = ("stop", "stopall", "unsubscribe", "cancel", "end", "quit", "revoke", "optout")

_ENGLISH = Words(
    opt_out=CARRIER_OPT_OUT,
    opt_out_whole=("please stop", "stop please", "stop it", "stop now"),
    opt_out_phrases=(
        *("stop texting", "stop sending", "stop messaging", "stop contacting"),
        *("stop the texts", "stop the messages", "stop these texts", "stop these messages"),
        *("no more texts", "no more text", "no more texting", "no more messages", "no more msgs"),
        *("dont text me", "do not text me", "dont message me", "do not message me"),
        *("dont contact me", "do not contact me", "dont send me", "do not send me"),
        *("remove me", "take me off", "unsubscribe", "opt out", "opt me out"),
    ),
    opt_in=("start", "unstop"),
    opt_in_if_opted_out=("yes",),
    help=("help", "info"),
)
_SPANISH = Words(
    opt_out=("basta", "parar", "alto"),
    opt_out_whole=(
        *("para", "pare", "paren", "ya basta", "cancelar", "baja", "no mas"),
        *("por favor para", "por favor pare", "por favor paren"),
    ),
    opt_out_phrases=(
        *("para de enviar", "pare de enviar", "paren de enviar"),
        *("deja de enviar", "deje de enviar", "dejen de enviar"),
        *("deja de mandar", "dejen de mandar", "dejen de mandarme"),
        *("deja de escribirme", "deje de escribirme", "dejen de escribirme"),
        *("no mas mensajes", "no mas textos", "no me envien mas", "no me envies mas"),
        *("no me manden mas", "no me mandes mas", "no me escriban mas", "no me escribas mas"),
        *("no quiero mas mensajes", "ya no quiero mensajes", "no me contacten"),
        *("borrame", "eliminame", "sacame de la lista"),
        *("dar de baja", "darme de baja", "dame de baja", "denme de baja", "cancelar suscripcion"),
    ),
    opt_in=(),
    opt_in_if_opted_out=("si",),  # SÍ folds to si
    help=("ayuda",),
)
# Every supported language; English first, as messages list the words in this order.
BY_LANGUAGE: Mapping[str, Words] = {"en": _ENGLISH, "es": _SPANISH}


def _union(lists: Iterable[tuple[str, ...]]) -> tuple[str, ...]:
    """The words of every language, each once, in language order."""
    return tuple(dict.fromkeys(word for words in lists for word in words))


OPT_OUT_WORDS = frozenset(_union(w.opt_out for w in BY_LANGUAGE.values()))
OPT_OUT_WHOLE = frozenset(_union(w.opt_out_whole for w in BY_LANGUAGE.values()))
OPT_OUT_PHRASES = _union(w.opt_out_phrases for w in BY_LANGUAGE.values())
OPT_IN_WORDS = frozenset(_union(w.opt_in for w in BY_LANGUAGE.values()))
OPT_IN_IF_OPTED_OUT = frozenset(_union(w.opt_in_if_opted_out for w in BY_LANGUAGE.values()))
HELP_WORDS = frozenset(_union(w.help for w in BY_LANGUAGE.values()))


@dataclass(frozen=True)
class Normalized:
    """A reply as both sides compare it: what the phone sent minus case, accents and punctuation."""

    text: str  # accent-folded, case-folded words joined by single spaces
    words: tuple[str, ...]
    question: bool  # the raw text asked something (? or ¿)

    @property
    def first(self) -> str:
        return self.words[0] if self.words else ""


def normalize(body: str) -> Normalized:
    """Trim, case-fold, fold accents, drop punctuation, symbols and emoji; contractions lose their
    apostrophe ("don't" -> "dont") so phrases match however the phone typed it."""
    folded = "".join(c for c in unicodedata.normalize("NFKD", body) if not unicodedata.combining(c))
    folded = folded.casefold().replace("'", "").replace("\u2019", "")
    words = tuple(_WORD.findall(folded))
    return Normalized(text=" ".join(words), words=words, question="?" in body or "¿" in body)


def opt_out_request(text: Normalized) -> str | None:
    """The keyword or phrase that makes this an opt-out request, else None."""
    if text.first in OPT_OUT_WORDS:
        return text.first.upper()
    if text.text in OPT_OUT_WHOLE:
        return text.text
    padded = f" {text.text} "
    for phrase in OPT_OUT_PHRASES:
        if f" {phrase} " in padded:
            return phrase
    return None


class Reserved(NamedTuple):
    family: Family
    word: str  # the keyword or phrase that decided it, as stored in inbound_messages


def reserved(text: Normalized, *, opted_out: bool) -> Reserved | None:
    """What a reply means before any campaign sees it, in the order of DESIGN.md §8 (opt-out,
    opt-in, help); None when it is the campaign's to match. Validation asks with
    `opted_out=False`: a keyword only opt-in numbers would lose (YES, SI) is still a keyword."""
    stop = opt_out_request(text)
    if stop is not None:
        return Reserved(Family.opt_out, stop)
    if text.first in OPT_IN_WORDS or (opted_out and text.first in OPT_IN_IF_OPTED_OUT):
        return Reserved(Family.opt_in, text.first.upper())
    if text.first in HELP_WORDS:
        return Reserved(Family.help, text.first.upper())
    return None


def single_words(family: Family) -> tuple[str, ...]:
    """The one-word replies of `family` in every language, in capitals: what a refused campaign
    keyword is told to avoid (opt-in-if-opted-out words are not reserved for campaigns)."""

    def of(words: Words) -> tuple[str, ...]:
        if family is Family.opt_out:
            return (*words.opt_out, *words.opt_out_whole, *words.opt_out_phrases)
        return words.opt_in if family is Family.opt_in else words.help

    return tuple(word.upper() for word in _union(map(of, BY_LANGUAGE.values())) if " " not in word)
