"""Twilio error codes the engine acts on, in one place.

Kept apart from `outreach.providers.twilio` so that status callbacks (outreach.listen) can read
them without importing the twilio client. The sender and the status callbacks used to keep a set
each, and the two had drifted (a 30004 opted a number out on a callback but not on create).
"""

from __future__ import annotations

# The number itself refuses our texts: record an opt-out for it, whether the code comes back on
# the create request (the sender) or on a status callback.
OPT_OUT_CODES = frozenset(
    {
        21610,  # the recipient replied STOP to this sender (unsubscribed): Twilio will not send to it
        30004,  # message blocked: by the recipient, or by the carrier for this number
    }
)

# Status callbacks carry only ErrorCode; these short reasons make the outbox readable.
ERROR_MESSAGES = {
    21610: "recipient has opted out of messages from this sender",
    21614: "not a mobile number",
    30001: "queue overflow",
    30002: "account suspended",
    30003: "unreachable destination handset",
    30004: "message blocked",
    30005: "unknown destination handset",
    30006: "landline or unreachable carrier",
    30007: "message filtered by the carrier",
    30008: "unknown error",
    30034: "message from an unregistered number",
}
