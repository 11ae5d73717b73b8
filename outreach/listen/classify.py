"""What a reply means (DESIGN.md §8), decided from its text and what we know of its number, with no
database and no transport: outreach/listen/replies.py stores it and acts on the answer.

Order, first match wins: opt-out, opt-in, help (the reserved words of outreach/keywords.py, which
campaign validation asks too), then the campaign's own keywords for the enrollment the reply
belongs to, then free text for a person.

Opt-out is honored for any reasonable request (FCC 2024): a reserved keyword as the FIRST word, one
of the explicit English/Spanish phrases anywhere, or a short whole-message request ("please stop",
"para"). STOP in the middle of a sentence ("I can't stop by today") only counts inside an explicit
phrase, so ordinary replies do not silence a patient by accident.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from outreach.campaigns import ReplyRule
from outreach.keywords import Normalized, normalize, reserved


class Kind(enum.StrEnum):
    """Stored in inbound_messages.classification."""

    opt_out = "opt_out"
    opt_in = "opt_in"
    help = "help"
    keyword = "keyword"
    free_text = "free_text"
    question = "question"

    @property
    def engages(self) -> bool:
        """Counts as the patient engaging (replied_at, activation). An opt-out is engagement too,
        but not the kind a care team counts: it neither activates nor marks the enrollment replied."""
        return self is not Kind.opt_out


@dataclass(frozen=True)
class Meaning:
    """A reply's kind, with what decided it: the keyword or phrase (opt-out, opt-in, help), the
    campaign outcome (keyword), or nothing (free text, question)."""

    kind: Kind
    detail: str = ""
    rule: ReplyRule | None = None  # the campaign rule that matched, for Kind.keyword


def match_rule(text: Normalized, rules: Sequence[ReplyRule]) -> ReplyRule | None:
    """The first rule with a keyword the reply starts with ("Sí!", "SI 👍", "yes please" -> YES/SI/SÍ)."""
    for rule in rules:
        for keyword in rule.keywords:
            words = normalize(keyword).words
            if words and text.words[: len(words)] == words:
                return rule
    return None


def classify(text: Normalized, *, opted_out: bool, rules: Sequence[ReplyRule] = ()) -> Meaning:
    """The meaning of reply `text` from a number that is `opted_out` (or not), where `rules` are
    the campaign's reply rules for the enrollment the reply belongs to (none without one)."""
    found = reserved(text, opted_out=opted_out)
    if found is not None:
        return Meaning(Kind(found.family), found.word)
    rule = match_rule(text, rules)
    if rule is not None:
        return Meaning(Kind.keyword, rule.outcome, rule)
    return Meaning(Kind.question if text.question else Kind.free_text)
