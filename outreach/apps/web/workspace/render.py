"""Jinja2 pages of the workspace: one environment, autoescaped, templates shipped in the package.

Times are shown in the clinic's zone (OUTREACH_DEFAULT_TIMEZONE), where the care team works; the
database keeps naive UTC.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"


class Pages:
    """Renders templates with what every page needs (the person, the CSRF token, the clock's zone)."""

    def __init__(self, zone: str) -> None:
        self.env = Environment(
            loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]), trim_blocks=True
        )
        self.zone = ZoneInfo(zone)
        self.env.filters["local"] = self.local

    def local(self, value: dt.datetime | None, fmt: str = "%b %d, %H:%M") -> str:
        if value is None:
            return ""
        return value.replace(tzinfo=dt.UTC).astimezone(self.zone).strftime(fmt)

    def page(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(self.env.get_template(name).render(**context), status_code=status)
