"""Celery app and tasks. Tasks parse arguments and call `outreach`; no rules live here."""

from workers.app import app

__all__ = ["app"]
