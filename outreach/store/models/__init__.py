"""The tables of DESIGN.md §6, as SQLAlchemy 2.0 typed models: one module per table.

The database is the source of truth: every promise (once per step, consent, forward-only status)
is backed by a constraint here or by an atomic UPDATE in the module that owns the transition.
Importing this package registers every table on `Base.metadata` (the Alembic environment and the
tests rely on that), so the names are re-exported here and callers keep one import path.
"""

from __future__ import annotations

from outreach.store.models.activation import Activation
from outreach.store.models.audit import AuditEntry
from outreach.store.models.base import NAMING, Base
from outreach.store.models.campaign import Campaign
from outreach.store.models.consent import PhoneConsent
from outreach.store.models.conversation import Conversation
from outreach.store.models.conversation_read import ConversationRead
from outreach.store.models.enrollment import Arm, EndReason, Enrollment
from outreach.store.models.event import PatientEvent
from outreach.store.models.handoff import Handoff
from outreach.store.models.hold import SenderHold
from outreach.store.models.inbound import InboundMessage
from outreach.store.models.link_click import LinkClick
from outreach.store.models.message import Message
from outreach.store.models.patient import Patient, Sex
from outreach.store.models.plan_mark import PlanMark
from outreach.store.models.report_snapshot import ReportSnapshot
from outreach.store.models.roster_upload import RosterUpload, UploadStatus
from outreach.store.models.unreachable import UnreachableNumber
from outreach.store.models.user import User
from outreach.store.models.web_session import WebSession
from outreach.store.statuses import MessageKind, MessageStatus

__all__ = [
    "NAMING",
    "Activation",
    "Arm",
    "AuditEntry",
    "Base",
    "Campaign",
    "Conversation",
    "ConversationRead",
    "EndReason",
    "Enrollment",
    "Handoff",
    "InboundMessage",
    "LinkClick",
    "Message",
    "MessageKind",
    "MessageStatus",
    "Patient",
    "PatientEvent",
    "PhoneConsent",
    "PlanMark",
    "ReportSnapshot",
    "RosterUpload",
    "SenderHold",
    "Sex",
    "UnreachableNumber",
    "UploadStatus",
    "User",
    "WebSession",
]
