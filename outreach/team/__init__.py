"""The care team's workspace without HTTP: accounts and their second factor, server-side sessions,
the audit log, conversations (the inbox) and staff replies through the outbox.

outreach/apps/web/workspace/ serves these as pages; nothing here imports a web framework, so the
CLI (`outreach users ...`) and later rooms (the control room) reuse the same rules.
"""
