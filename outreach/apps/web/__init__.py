"""The web service: Twilio webhooks, health, and the care-team workspace under /app/ (workspace/)."""

from outreach.apps.web.app import create_app

__all__ = ["create_app"]
