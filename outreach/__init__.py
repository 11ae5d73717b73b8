"""outreach: an SMS-first patient outreach engine.

Data flows one way: campaign files -> plan -> outbox -> workers -> provider -> events -> reports.
"""

__version__ = "0.1.0"
