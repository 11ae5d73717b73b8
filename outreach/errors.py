"""Errors a user can cause and fix; the CLI prints them as one line, never a traceback."""


class UserError(Exception):
    """A problem with input or configuration that the person running outreach can fix."""
