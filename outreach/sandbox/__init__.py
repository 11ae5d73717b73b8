"""A Twilio-compatible server for demos, tests and benchmarks (DESIGN.md §9)."""

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
