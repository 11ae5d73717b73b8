"""Tracked links (DESIGN.md §11): `{link}` renders OUTREACH_PUBLIC_URL/l/<token> per message, and
a hit on it is recorded before the patient is sent on to the campaign's page.

- A token is 9 random bytes from `secrets` (72 bits, 12 URL-safe characters), made in the
  planning process for each row it renders (no round trip: the row is inserted with it), so the
  whole URL stays short enough for honest segment counts and cannot be guessed or enumerated.
- A GET from a browser is a click, and the first click per patient and campaign is an activation.
  HEAD requests, the link-preview fetchers of messengers and social sites, and any hit within
  `PREVIEW_GRACE` of delivery (a phone unfurling the link on arrival) are previews: recorded,
  never counted as clicks.
- A token nobody issued, or one whose message went out more than OUTREACH_LINK_TTL_DAYS ago, gets
  the friendly page (the caller's), never a stack trace; nothing about the patient is ever shown.

A hit is one SELECT (token -> message, enrollment, campaign) and one upsert on `link_clicks`,
plus, for the first click, one insert-or-skip of the activation: the web route runs it inside the
webhooks' group commit, so a burst of hits shares transactions.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, func, select

from outreach.campaigns import CampaignFile
from outreach.campaigns.texts import LINK_PATH, LINK_TOKEN_LENGTH, tracked_url
from outreach.config import Settings
from outreach.store import sql
from outreach.store.models import Activation, Enrollment, LinkClick, Message

PATH = LINK_PATH
TOKEN_BYTES = 9  # 72 random bits: at least 64 (DESIGN.md §11), and a whole number of base64 characters
TOKEN_LENGTH = LINK_TOKEN_LENGTH
assert len(secrets.token_urlsafe(TOKEN_BYTES)) == TOKEN_LENGTH
PREVIEW_GRACE = dt.timedelta(seconds=2)
_TOKEN = re.compile(rf"[A-Za-z0-9_-]{{{TOKEN_LENGTH}}}")
# Link-preview fetchers (iMessage announces itself as facebookexternalhit + Twitterbot, WhatsApp,
# Facebook, Slack, Twitter/X, Google, LinkedIn, Telegram, Discord, Skype, Apple, Bing, Pinterest).
PREVIEW_AGENTS = re.compile(
    r"facebookexternalhit|facebot|whatsapp|slackbot|slack-imgproxy|twitterbot|googlebot|"
    r"google-pagerenderer|googleother|google-inspectiontool|google-read-aloud|feedfetcher-google|"
    r"linkedinbot|telegrambot|discordbot|skypeuripreview|applebot|bingpreview|bingbot|pinterest|"
    r"redditbot|embedly|iframely|mastodon|vkshare|snapchat",
    re.IGNORECASE,
)


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def sample_url(public_url: str | None) -> str:
    """A tracked URL of the real length, for previews and segment estimates."""
    return tracked_url(public_url, "x" * TOKEN_LENGTH)


def for_template(campaign: CampaignFile, template: str, settings: Settings) -> tuple[str | None, str | None]:
    """(token, URL) for a text of `campaign` that has {link} and a campaign `link:`; (None, None)
    otherwise ({link} then renders OUTREACH_LINK). Without OUTREACH_PUBLIC_URL there is no
    `outreach web` to serve a tracked link, so the campaign's page itself is sent, untracked."""
    if campaign.link is None or "{link}" not in template:
        return None, None
    if not settings.public_url:
        return None, campaign.link
    token = new_token()
    return token, tracked_url(settings.public_url, token)


def well_formed(token: str) -> bool:
    """Whether `token` could be one we issued: anything else is answered without the database."""
    return _TOKEN.fullmatch(token) is not None


@dataclass(frozen=True)
class Hit:
    campaign_id: str
    click: bool  # False: a preview
    activated: bool  # this click is the patient's first positive action in the campaign


_TARGET = (
    select(
        Message.id,
        Message.enrollment_id,
        Message.delivered_at,
        Message.went_out_at.label("went_out_at"),
        Enrollment.patient_id,
        Enrollment.campaign_id,
    )
    .join(Enrollment, Enrollment.id == Message.enrollment_id)
    .where(Message.link_token == bindparam("token"))
)


def _record_statement(dialect: str) -> sql.Upsert:
    insert = sql.upsert(LinkClick, dialect)
    return insert.on_conflict_do_update(
        index_elements=[LinkClick.message_id],
        set_={
            "clicks": LinkClick.clicks + insert.excluded.clicks,
            "previews": LinkClick.previews + insert.excluded.previews,
            "first_click_at": func.coalesce(LinkClick.first_click_at, insert.excluded.first_click_at),
            "first_preview_at": func.coalesce(LinkClick.first_preview_at, insert.excluded.first_preview_at),
            "last_at": insert.excluded.last_at,
        },
    )


_RECORD = sql.per_dialect(_record_statement)
_ACTIVATE = sql.insert_or_skip(Activation, index_elements=["patient_id", "campaign_id"])


def is_preview(method: str, user_agent: str, delivered_at: dt.datetime | None, now: dt.datetime) -> bool:
    if method == "HEAD" or PREVIEW_AGENTS.search(user_agent):
        return True
    return delivered_at is not None and dt.timedelta(0) <= now - delivered_at < PREVIEW_GRACE


def follow(
    conn: Connection, token: str, *, method: str, user_agent: str, now: dt.datetime, ttl_days: int
) -> Hit | None:
    """Record a hit on `token`; None when it is unknown or expired (nothing recorded)."""
    if not well_formed(token):
        return None
    row = conn.execute(_TARGET, {"token": token}).first()
    if row is None or row.went_out_at is None or now - row.went_out_at > dt.timedelta(days=ttl_days):
        return None
    click = not is_preview(method, user_agent, row.delivered_at, now)
    conn.execute(
        _RECORD[conn.dialect.name],
        {
            "message_id": row.id,
            "enrollment_id": row.enrollment_id,
            "clicks": int(click),
            "previews": int(not click),
            "first_click_at": now if click else None,
            "first_preview_at": None if click else now,
            "last_at": now,
        },
    )
    activated = False
    if click:
        activation = {
            "patient_id": row.patient_id,
            "campaign_id": row.campaign_id,
            "enrollment_id": row.enrollment_id,
            "inbound_id": None,
            "activated_at": now,
            "how": "link_click",
        }
        activated = conn.scalar(_ACTIVATE[conn.dialect.name], activation) is not None
    return Hit(campaign_id=row.campaign_id, click=click, activated=activated)
