"""Simulated patients: what the people on the other end of the sandbox answer, and when.

A `SimulatedPatients` is the sandbox's `ReplyPlanner`: for each delivered message it returns the
patient's reply (or none), which the sandbox posts to the inbound URL as a signed webhook, exactly
as Twilio would. Replies come from a script (per number, one entry per message, in order) or from a
weighted mix of what real patients send: YES, NO, CALL, DONE, STOP, HELP, questions, Spanish
variants, an emoji, an empty body, mixed case with trailing words, and silence.

Choices made here:

- Patients answer only texts that ask for an answer (by default ones containing "Reply" or
  "Responda", or ending with a question mark, as a care team's own question does): the clinic's
  own answers to a reply ("Thank you, we will mail your kit") get no reply, so a simulated
  conversation always ends.
- Reproducible with a seed whatever the order of deliveries: each draw uses its own generator
  seeded by (seed, number, how many prompting texts that number has had), so concurrent workers
  and the sandbox's timing cannot reshuffle who says what.
- The sandbox knows nothing about patients, so the reply language is read from the text being
  answered (`language_of`): Spanish when it has more common Spanish words ("hola", "responda",
  "le", "para", ...) than English ones, or Spanish-only letters (ñ, ¿, ¡) and no English word.
"""

from __future__ import annotations

import json
import random
import re
import threading
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from outreach.errors import UserError
from outreach.sandbox.state import PlannedReply, SandboxMessage, normalize_number

Language = Literal["en", "es"]

# What patients type, per kind of reply and language: keywords in several spellings, with
# trailing words and odd case, so the classifier meets the variety it will see in production.
PHRASES: dict[str, dict[Language, tuple[str, ...]]] = {
    "yes": {
        "en": ("YES", "Yes", "yes please", "Yes, thank you!", "Y", "YES!!", "yes 👍"),
        "es": ("Sí", "si", "SÍ", "Si, gracias", "sí por favor"),
    },
    "call": {
        "en": ("CALL", "Call me please", "call"),
        "es": ("LLAMAR", "Llamar por favor", "llamar"),
    },
    "done": {
        "en": ("DONE", "Done already, last spring", "done"),
        "es": ("YA", "Ya me la hice", "hecho"),
    },
    "no": {
        "en": ("NO", "No thanks", "no"),
        "es": ("NO", "No gracias", "no"),
    },
    "stop": {
        "en": ("STOP", "Stop", "stop please", "please stop texting me"),
        "es": ("STOP", "no más mensajes", "BASTA"),
    },
    "help": {
        "en": ("HELP", "help"),
        "es": ("AYUDA", "ayuda"),
    },
    "question": {
        "en": ("How much does it cost?", "Is this covered by my insurance?", "Who is this?"),
        "es": ("¿Cuánto cuesta?", "¿Lo cubre mi seguro?", "¿Quién es?"),
    },
    "emoji": {"en": ("👍",), "es": ("👍",)},
    "empty": {"en": ("",), "es": ("",)},
}

# Texts that ask for an answer: a campaign's "Reply YES ...", or a person's text that ends with a
# question (a staff reply from the workspace: "Can you come in on Tuesday?"). "Questions? Call us."
# inside an answer does not end with one, so a simulated conversation still ends.
DEFAULT_PROMPT = r"\b(reply|responda|responde)\b|\?\s*$"

_ES_WORDS = frozenset(
    {
        *("hola", "responda", "responde", "le", "la", "el", "los", "las", "de", "del", "para", "usted"),
        *("su", "sus", "gracias", "que", "por", "con", "una", "es", "mensajes", "prueba", "recuerda"),
        *("llame", "puede"),
    }
)
_EN_WORDS = frozenset(
    {"hi", "hello", "reply", "the", "you", "your", "for", "to", "and", "this", "is", "we", "of", "from"}
)
_WORDS = re.compile(r"[^\W\d_]+")


def language_of(body: str) -> Language:
    """Spanish or English, guessed from the text being answered (see the module docstring)."""
    words = [w.casefold() for w in _WORDS.findall(body)]
    spanish = sum(w in _ES_WORDS for w in words)
    english = sum(w in _EN_WORDS for w in words)
    if spanish > english:
        return "es"
    if english == 0 and any(c in body for c in "ñÑ¿¡"):
        return "es"
    return "en"


class ReplyMix(BaseModel):
    """Relative weights of each kind of reply (they need not add up to 1); `silent` is no reply."""

    model_config = ConfigDict(extra="forbid")

    yes: float = Field(0.22, ge=0)
    call: float = Field(0.06, ge=0)
    done: float = Field(0.04, ge=0)
    no: float = Field(0.06, ge=0)
    stop: float = Field(0.05, ge=0)
    help: float = Field(0.03, ge=0)
    question: float = Field(0.06, ge=0)
    emoji: float = Field(0.03, ge=0)
    empty: float = Field(0.02, ge=0)
    silent: float = Field(0.43, ge=0)

    @model_validator(mode="after")
    def _some_weight(self) -> ReplyMix:
        if sum(self.weights().values()) <= 0:
            raise ValueError("at least one weight must be above 0")
        return self

    def weights(self) -> dict[str, float]:
        return self.model_dump()


class PatientsConfig(BaseModel):
    """Everything that shapes the simulated replies; also the JSON file `outreach sandbox --replies` reads.

    `script` maps a number to its replies, one entry per prompting text in order (null: no reply to
    that one; past the end: silence). Numbers without a script follow `mix`; `mix: null` keeps them
    silent.
    """

    model_config = ConfigDict(extra="forbid")

    seed: int | None = None
    delay_s: tuple[float, float] = Field((1.0, 5.0), description="each reply comes this long after delivery")
    prompt: str | None = Field(
        DEFAULT_PROMPT, description="answer only texts matching this (case-insensitive)"
    )
    mix: ReplyMix | None = Field(default_factory=ReplyMix)
    script: dict[str, list[str | None]] = Field(default_factory=dict)

    @field_validator("delay_s")
    @classmethod
    def _delay_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if low < 0 or high < low:
            raise ValueError("expected [min, max] seconds with 0 <= min <= max")
        return value

    @field_validator("prompt")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression ({exc})") from None
        return value

    @field_validator("script", mode="before")
    @classmethod
    def _e164_keys(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        script = {}
        for raw, replies in value.items():
            number = normalize_number(str(raw))
            if number is None:
                raise ValueError(f"{raw!r} is not a valid phone number")
            script[number] = replies
        return script


class SimulatedPatients:
    """A `ReplyPlanner` (see outreach/sandbox/state.py): pass it as `SandboxServer(..., replies=...)`.

    Called on the sandbox's event loop; the figures it keeps (`planned`, `seen`) are read by other
    threads (the demo waits on them), so they sit behind a lock.
    """

    def __init__(self, config: PatientsConfig | None = None, **settings: Any) -> None:
        if config is not None and settings:
            raise TypeError("pass a PatientsConfig or keyword settings, not both")
        self.config = config or PatientsConfig.model_validate(settings)
        self._prompt = re.compile(self.config.prompt, re.IGNORECASE) if self.config.prompt else None
        self._lock = threading.Lock()
        self._prompts: Counter[str] = Counter()  # prompting texts delivered per number so far
        self._seen: set[str] = set()
        self._planned = 0
        self._categories: Counter[str] = Counter()

    def __call__(self, message: SandboxMessage) -> list[PlannedReply]:
        with self._lock:
            self._seen.add(message.sid)
            if self._prompt is not None and not self._prompt.search(message.body):
                return []
            index = self._prompts[message.to]
            self._prompts[message.to] += 1
        kind, reply = self.reply_to(message.to, message.body, index)
        with self._lock:
            self._categories[kind] += 1
            if reply is None:
                return []
            self._planned += 1
        return [reply]

    def reply_to(self, to: str, body: str, index: int) -> tuple[str, PlannedReply | None]:
        """The `index`-th (from 0) answer of `to` to a prompting text `body`: (kind, reply or None).

        Pure: the same seed, number, index and body always give the same answer.
        """
        seed = self.config.seed
        rng = random.Random(f"{seed}|{to}|{index}") if seed is not None else random.Random()
        delay = rng.uniform(*self.config.delay_s)
        if to in self.config.script:
            entries = self.config.script[to]
            text = entries[index] if index < len(entries) else None
            return ("script", None if text is None else PlannedReply(after_s=delay, body=text))
        mix = self.config.mix
        if mix is None:
            return ("silent", None)
        weights = mix.weights()
        kind = rng.choices(list(weights), weights=list(weights.values()))[0]
        if kind == "silent":
            return ("silent", None)
        text = rng.choice(PHRASES[kind][language_of(body)])
        return (kind, PlannedReply(after_s=delay, body=text))

    # --- figures for whoever waits on the simulation ----------------------------------------------

    @property
    def planned(self) -> int:
        """Replies decided so far (each is posted `after_s` later)."""
        with self._lock:
            return self._planned

    def seen(self, sid: str) -> bool:
        """Whether the sandbox has asked about this delivered message yet."""
        with self._lock:
            return sid in self._seen

    def kinds(self) -> dict[str, int]:
        """How many draws fell to each kind ("script" for scripted numbers)."""
        with self._lock:
            return dict(self._categories)


def load_replies(spec: str, *, seed: int | None = None) -> SimulatedPatients:
    """`outreach sandbox --replies SPEC`: "probabilities" (the default mix) or a JSON file.

    The file is either a whole PatientsConfig ({"seed", "delay_s", "prompt", "mix", "script"}) or
    just a script ({"+16175550123": ["YES", null, "STOP"]}), in which case unscripted numbers stay
    silent. `seed` (the sandbox's --seed) applies when the file sets none.
    """
    if spec == "probabilities":
        return SimulatedPatients(PatientsConfig(seed=seed))
    path = Path(spec)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"--replies: {spec} is neither 'probabilities' nor an existing JSON file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"--replies: cannot read {spec} as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"--replies: {spec} must hold a JSON object")
    if not set(data) & set(PatientsConfig.model_fields):
        data = {"script": data, "mix": None}
    if data.get("seed") is None:
        data["seed"] = seed
    try:
        return SimulatedPatients(PatientsConfig.model_validate(data))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "file"
        raise UserError(f"--replies: {spec}: {where}: {first['msg']}") from None
