"""Small rules of outreach/team/ that the pages rely on: roles, shared canned replies, what the
sessions table keeps, and the law's hours for staff texts."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine, select

from outreach.campaigns.texts import template_problems
from outreach.plan.windows import LAW_HOURS, next_opening
from outreach.store.db import session_scope
from outreach.store.models import User, WebSession
from outreach.team import sessions, staff
from outreach.team.accounts import Role, may
from tests.workspace_support import make_user

NOW = dt.datetime(2026, 11, 23, 15, 0)


def test_roles_include_the_ones_below_them_and_unknown_roles_nothing() -> None:
    assert may("admin", Role.coordinator) and may("coordinator", Role.viewer) and may("viewer", Role.viewer)
    assert not may("viewer", Role.coordinator) and not may("coordinator", Role.admin)
    assert not may("superuser", Role.viewer)


def test_shared_canned_replies_use_only_the_allowed_placeholders() -> None:
    for key, texts in staff.SHARED.items():
        for language, text in texts.items():
            assert template_problems(text) == [], (key, language)
            assert "{link}" not in text  # a staff text has no tracked link


def test_the_sessions_table_keeps_a_digest_of_the_token_never_the_token(engine: Engine) -> None:
    make_user(engine, "view@example.org", "viewer", NOW)
    with session_scope(engine) as session:
        user = session.scalar(select(User))
        assert user is not None
        token = sessions.start(session, user, NOW, mfa_passed=True)
    with session_scope(engine) as session:
        stored = session.scalar(select(WebSession))
        assert stored is not None and token not in (stored.id, stored.csrf_token) and len(stored.id) == 64
        assert sessions.current(session, token, NOW) is not None
        assert sessions.current(session, token + "x", NOW) is None


def test_the_law_hours_are_every_day_08_to_21_and_20_in_strict_states() -> None:
    saturday_night = dt.datetime(2026, 11, 29, 2, 30)  # Saturday 21:30 in New York
    opening = next_opening(saturday_night, window=LAW_HOURS, zones=("America/New_York",), strict=False)
    assert opening == dt.datetime(2026, 11, 29, 13, 0)  # Sunday 08:00: no weekday rule
    at_2030 = dt.datetime(2026, 11, 24, 1, 30)  # 20:30 in New York
    assert next_opening(at_2030, window=LAW_HOURS, zones=("America/New_York",), strict=False) == at_2030
    assert next_opening(at_2030, window=LAW_HOURS, zones=("America/New_York",), strict=True) > at_2030
