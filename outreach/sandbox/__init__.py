"""A Twilio-compatible server for demos, tests and benchmarks (DESIGN.md §9).

Test and demo infrastructure, not engine: only the entry points (outreach/apps/: `outreach
sandbox`, `outreach demo`), tests and benchmarks import it, and tests/test_architecture.py fails if
an engine module does. The engine reaches it only the way it reaches Twilio: over HTTP, through the
official client pointed at OUTREACH_TWILIO_API_URL.
"""

from outreach.sandbox.server import SandboxServer
from outreach.sandbox.state import (
    DEFAULT_ACCOUNT_SID,
    DEFAULT_AUTH_TOKEN,
    DeliveryOutcome,
    PlannedReply,
    ReplyPlanner,
    SandboxConfig,
    SandboxMessage,
    SandboxState,
)

__all__ = [
    "DEFAULT_ACCOUNT_SID",
    "DEFAULT_AUTH_TOKEN",
    "DeliveryOutcome",
    "PlannedReply",
    "ReplyPlanner",
    "SandboxConfig",
    "SandboxMessage",
    "SandboxServer",
    "SandboxState",
]
