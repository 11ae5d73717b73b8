"""The web service: Twilio webhooks and health (and, later, the care-team dashboard)."""

from outreach.apps.web.app import create_app

__all__ = ["create_app"]
