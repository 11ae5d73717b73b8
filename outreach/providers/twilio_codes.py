"""Twilio error codes the engine acts on, in one place.

Kept apart from `outreach.providers.twilio` so that status callbacks (outreach.listen), planning
and the sender can read them without importing the twilio client. The sender and the status
callbacks used to keep a set each, and the two had drifted (a 30004 opted a number out on a
callback but not on create).

Each code is in the set of what it says about the world, because that decides what is done:
- the *number* refuses our texts (OPT_OUT_CODES): record an opt-out for it;
- the *number* cannot receive texts (UNREACHABLE_CODES): remember it, plan nothing more for it;
- the *account or sender* is misconfigured (OPERATOR_CODES): no row is at fault; hold the sender
  and keep the rows until the setup is fixed (outreach.send.holds).
Codes come from Twilio's error dictionary (https://www.twilio.com/docs/api/errors/<code>).
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

# The number cannot receive a text, whoever sends it: every later step and campaign would fail the
# same way, so the number is remembered (outreach.send.reachability) and planning skips it.
# 30003 (handset off or out of coverage) is *not* here: that one passes.
UNREACHABLE_CODES = frozenset(
    {
        21211,  # invalid 'To' number (on create)
        21614,  # 'To' number is not a mobile number (on create)
        30005,  # unknown destination handset: unknown, inactive or no longer in service (callback)
        30006,  # landline or unreachable carrier (callback)
    }
)

# The account or the sender is misconfigured: every message would be refused alike, and fixing
# the setup lets the very same rows go out. Answered to a create, these hold the sender instead
# of failing the row. (On a read, 20404 means "no such message" and is not an operator error.)
OPERATOR_CODES = frozenset(
    {
        20003,  # authentication failed: wrong account SID or auth token (HTTP 401)
        20404,  # not found on create: the account in the URL is not this one
        21212,  # invalid 'From' number
        21408,  # no permission to send to the region of the 'To' number (held for that region only)
        21601,  # 'From' is not an SMS-capable number of this account
        21606,  # 'From' is not a message-capable Twilio number for this destination or account
        21609,  # invalid StatusCallback URL (OUTREACH_PUBLIC_URL)
        21659,  # 'From' is not a Twilio number, or a short code sending to another country
        21660,  # 'From' belongs to another account
        21661,  # 'From' is not SMS-capable
        21701,  # the Messaging Service does not exist or belongs to another account
        21702,  # Messaging Service problems (21701-21705, TWILIO_MESSAGING_SERVICE_SID): the
        21703,  #   service is unusable, or has no sender that can reach the number; an operator
        21704,  #   fixes them in the console (the wording of 21702-21704 was not confirmed
        21705,  #   against Twilio's pages; 21701 and 21705 were)
        30127,  # invalid MessagingServiceSid
    }
)
# HTTP answers that are about the credentials or the account whatever the code (403: account
# suspended, test credentials, a resource of another account).
OPERATOR_HTTP = frozenset({401, 403})

# Operator codes that concern one destination country, not the whole sender: a roster with one
# foreign number and no permission for its country must not stop every domestic text.
REGION_CODES = frozenset({21408})

# Status callbacks carry only ErrorCode; these short reasons make the outbox readable.
ERROR_MESSAGES = {
    21211: "invalid 'To' number",
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
