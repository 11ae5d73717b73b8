"""Message texts: the placeholder whitelist, template checks, rendering and segment estimates.

Only `{first_name}`, `{clinic_name}`, `{clinic_phone}` and `{link}` can reach a message
(DESIGN.md §5, §7.7): a template is checked against that list when the file is validated and
again when it is rendered, so nothing else about a patient (last name, birth date, condition)
can be texted even by a file that skipped validation. Segment estimates warn when a text costs
more than two segments, naming the characters that force UCS-2.
"""

from __future__ import annotations

import re
import string
from typing import TYPE_CHECKING, Annotated

from pydantic import AfterValidator

from outreach.campaigns._wording import fail, show
from outreach.errors import UserError
from outreach.segments import count_segments, non_gsm_characters

if TYPE_CHECKING:
    from outreach.config import Settings

PLACEHOLDERS = ("first_name", "clinic_name", "clinic_phone", "link")
# The settings each placeholder reads; a template using an unset one cannot be rendered.
PLACEHOLDER_SETTINGS = {
    "clinic_name": "OUTREACH_CLINIC_NAME",
    "clinic_phone": "OUTREACH_CLINIC_PHONE",
    "link": "OUTREACH_LINK",
}
# Stand-ins for segment estimates when a setting is unset; a first name of 10 letters.
_SAMPLE_FIRST_NAME = "Jacqueline"
_SAMPLE_SETTINGS = {
    "clinic_name": "Community Health Center",
    "clinic_phone": "(555) 555-0100",
    "link": "https://example.org/book",
}

# A campaign with `link:` renders {link} as OUTREACH_PUBLIC_URL/l/<token> (outreach/outcomes/links.py):
# the token is 12 URL-safe characters (72 random bits), so segment estimates use that length.
LINK_PATH = "/l/"
LINK_TOKEN_LENGTH = 12


def tracked_url(public_url: str | None, token: str) -> str:
    """The tracked short link of `token` (a stand-in host when OUTREACH_PUBLIC_URL is unset)."""
    return f"{(public_url or 'https://example.org').rstrip('/')}{LINK_PATH}{token}"


_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_BRACED = re.compile(r"(?<!\{)\{([^{}]*)\}")
_OPT_OUT = re.compile(r"\bSTOP\b", re.IGNORECASE)


def template_problems(template: str) -> list[str]:
    """What is wrong with a message template, each as `problem; fix`; empty when it is fine."""
    if not template.strip():
        return ["the text is empty; write the message"]
    problems = []
    try:
        fields = [
            (name, spec or conversion) for _, name, spec, conversion in string.Formatter().parse(template)
        ]
    except ValueError:
        # Still name the placeholders that are well formed, so one run shows every problem.
        fields = [(match.group(1), None) for match in _BRACED.finditer(template)]
        problems.append(
            "malformed braces (every { needs a matching }); write placeholders as {first_name}, "
            "and a literal brace as {{ or }}"
        )
    allowed = ", ".join(f"{{{name}}}" for name in PLACEHOLDERS)
    for name, extra in fields:
        if name is None:
            continue
        if name not in PLACEHOLDERS:
            problems.append(f"unknown placeholder {{{name}}}; use only {allowed}")
        elif extra:
            problems.append(f"placeholder {{{name}}} takes no format or conversion; write {{{name}}}")
    return problems


def render(template: str, *, first_name: str, settings: Settings, link: str | None = None) -> str:
    """Fill the whitelisted placeholders; nothing else about a patient can reach a message
    (DESIGN.md §7.7), and an unset setting a template needs stops the run rather than sending
    "Hi Ana, None here". `link`, when given, is the message's tracked link (a campaign with
    `link:`), which replaces OUTREACH_LINK."""
    return first_name.join(render_parts(template, settings=settings, link=link))


def render_parts(template: str, *, settings: Settings, link: str | None = None) -> tuple[str, ...]:
    """The template with every placeholder but `{first_name}` filled, split where the first name
    goes: `first_name.join(parts)` is the message. Planning renders a text once per language and
    step this way, not once per patient, since only the first name differs between patients
    (and a tracked link's token, which planning passes here as a marker it replaces per row)."""
    problems = template_problems(template)
    if problems:
        raise UserError(f"cannot render a campaign text: {problems[0]}")
    values: dict[str, str | None] = {
        "clinic_name": settings.clinic_name,
        "clinic_phone": settings.clinic_phone,
        "link": link or settings.link,
    }
    parts, current = [], []
    for literal, name, _spec, _conversion in string.Formatter().parse(template):
        current.append(literal)
        if name is None:
            continue
        if name == "first_name":
            parts.append("".join(current))
            current = []
            continue
        value = values[name]
        if value is None:
            raise UserError(
                f"{PLACEHOLDER_SETTINGS[name]} is not set, but a campaign text uses {{{name}}}; "
                "set it in the environment or .env"
            )
        current.append(value)
    parts.append("".join(current))
    return tuple(parts)


def is_language_code(value: object) -> bool:
    """en, es, pt-BR ...: what a text mapping's keys and `default_language` must be."""
    return isinstance(value, str) and _LANGUAGE.match(value) is not None


def has_opt_out_instructions(text: str) -> bool:
    """Carriers expect the word STOP in the first message, in every language."""
    return _OPT_OUT.search(text) is not None


def segment_warning(template: str, settings: Settings) -> str | None:
    """`problem; fix` when a text would cost more than two segments with a long first name and the
    clinic's settings (sample values stand in for unset ones); None when it is cheap enough."""
    text = _estimate(template, settings)
    counted = count_segments(text)
    if counted.segments <= 2:
        return None
    if counted.encoding == "UCS-2":
        chars = ", ".join(f'"{c}"' for c in non_gsm_characters(text)[:5])
        why = f"UCS-2 because of {chars}: {counted.units} UTF-16 units, 67 per segment"
        fix = "shorten it to 134 units or write those characters another way, or accept the cost"
    else:
        why = f"GSM-7: {counted.units} characters, 153 per segment"
        fix = "shorten it to 306 characters or accept the cost"
    return (
        f"about {counted.segments} segments per message with a {len(_SAMPLE_FIRST_NAME)}-letter first name "
        f"({why}); {fix}"
    )


def _estimate(template: str, settings: Settings) -> str:
    values = {
        "first_name": _SAMPLE_FIRST_NAME,
        "clinic_name": settings.clinic_name or _SAMPLE_SETTINGS["clinic_name"],
        "clinic_phone": settings.clinic_phone or _SAMPLE_SETTINGS["clinic_phone"],
        # The longer of a tracked link and OUTREACH_LINK: the estimate does not know the campaign.
        "link": max(
            settings.link or _SAMPLE_SETTINGS["link"],
            tracked_url(settings.public_url, "x" * LINK_TOKEN_LENGTH),
            key=len,
        ),
    }
    return "".join(
        literal + (values[name] if name else "")
        for literal, name, _s, _c in string.Formatter().parse(template)
    )


def _template(value: str) -> str:
    problems = template_problems(value)
    if problems:
        raise fail("template", problems[0])
    return value


def _language(value: str) -> str:
    if not is_language_code(value):
        raise fail(
            "language", f"{show(value)} is not a language code; write it in lowercase, such as en or es"
        )
    return value


Language = Annotated[str, AfterValidator(_language)]
Template = Annotated[str, AfterValidator(_template)]
Texts = dict[Language, Template]
