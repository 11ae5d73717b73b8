"""Outcomes: the funnel figures (targeted to activated) that the report and the workspace show."""
