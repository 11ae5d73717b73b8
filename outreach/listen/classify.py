"""What a reply means (DESIGN.md §8), decided from its text and what we know of its number, with no
database and no transport: outreach/listen/replies.py stores it and acts on the answer.

Order, first match wins: opt-out, opt-in, help (the reserved words of outreach/keywords.py, which
campaign validation asks too), then the campaign's own keywords for the enrollment the reply
belongs to, then free text for a person.

Opt-out is honored for any reasonable request (FCC 2024): a reserved keyword as the FIRST word, one
of the explicit English/Spanish phrases anywhere, or a short whole-message request ("please stop",
"para"). STOP in the middle of a sentence ("I can't stop by today") only counts inside an explicit
phrase, so ordinary replies do not silence a patient by accident.

With Twilio Advanced Opt-Out, Twilio matches its own keyword lists first and tells us which family
a reply was in (`OptOutType`: STOP, START or HELP); that decides before our words (DESIGN.md §8):

- STOP is an opt-out whatever the word: a clinic may have configured one only Twilio knows (REMOVE),
  and Twilio refuses texts to the number from then on either way.
- HELP is help.
- START is an opt-in only when our record says the number is opted out. Twilio's default opt-in
  family includes YES, so a patient answering a campaign's "Reply YES" gets OptOutType=START; read
  as an opt-in it would lose the campaign's rule and its activation. Otherwise the reply is
  classified as if Twilio had said nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from outreach.campaigns import ReplyRule
from outreach.keywords import CARRIER_OPT_OUT, Family, Normalized, normalize, reserved


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


def classify(
    text: Normalized,
    *,
    opted_out: bool,
    rules: Sequence[ReplyRule] = (),
    opt_out_type: str | None = None,
) -> Meaning:
    """The meaning of reply `text` from a number that is `opted_out` (or not), where `rules` are
    the campaign's reply rules for the enrollment the reply belongs to (none without one) and
    `opt_out_type` is Twilio Advanced Opt-Out's verdict (STOP, START, HELP; None without one)."""
    said = _as_twilio_says(text, opt_out_type, opted_out=opted_out)
    if said is not None:
        return said
    found = reserved(text, opted_out=opted_out)
    if found is not None:
        return Meaning(Kind(found.family), found.word)
    rule = match_rule(text, rules)
    if rule is not None:
        return Meaning(Kind.keyword, rule.outcome, rule)
    return Meaning(Kind.question if text.question else Kind.free_text)


# Twilio Advanced Opt-Out's OptOutType values and the family each decides.
_OPT_OUT_TYPES: Mapping[str, Family] = {"STOP": Family.opt_out, "START": Family.opt_in, "HELP": Family.help}


def by_twilio(opt_out_type: str) -> str:
    """How a consent change decided by Twilio's OptOutType alone is recorded (`opted_out_by`,
    `opted_in_by`), like `twilio:21610` for an opt-out Twilio reports as an error."""
    return f"twilio:{opt_out_type}"


def _as_twilio_says(text: Normalized, opt_out_type: str | None, *, opted_out: bool) -> Meaning | None:
    """The meaning Twilio's OptOutType decides, or None to classify the reply ourselves (no or an
    unknown OptOutType, or START from a number that is not opted out).

    What decided is recorded as our own word when ours agree, else as `twilio:TYPE`. For an opt-out
    only Twilio's own words count as ours (they already mean "Twilio blocks the number too"), so an
    opt-out Twilio decided is always recorded as one Twilio enforces as well."""
    family = _OPT_OUT_TYPES.get(opt_out_type or "")
    if opt_out_type is None or family is None or (family is Family.opt_in and not opted_out):
        return None
    ours = reserved(text, opted_out=opted_out)
    if ours is None or ours.family is not family:
        return Meaning(Kind(family), by_twilio(opt_out_type))
    if family is Family.opt_out and ours.word.lower() not in CARRIER_OPT_OUT:
        return Meaning(Kind(family), by_twilio(opt_out_type))
    return Meaning(Kind(family), ours.word)
