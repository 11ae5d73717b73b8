"""The holdout arm (DESIGN.md §5, §11): a reproducible random share of each enrollment cycle
enrolled as control, never texted, and followed for gap closure like everyone else.

The arm is a column computed inside the enrollment INSERT … SELECT (no row goes through Python):
an MD5 bucket (outreach/store/sql.py) of "holdout|campaign|cycle|patient", below the campaign's
`holdout` percentage (in hundredths) for the control arm. The key makes the draw reproducible
(the same patient, campaign and cycle always land in the same arm), independent between campaigns
and cycles (a control this year is not a control forever), and unrelated to anything about the
patient, which is what makes the treated-vs-holdout difference a causal estimate.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, SQLColumnExpression, String, case, cast, literal

from outreach.campaigns import CampaignFile
from outreach.store import sql
from outreach.store.models import Arm


def threshold(holdout_percent: float) -> int:
    """Buckets below this are control: the percentage in hundredths of a percent."""
    return round(holdout_percent * sql.BUCKETS / 100)


def holdout_key(campaign_id: str, cycle: int, patient_id: int) -> str:
    """What a patient's arm is drawn from; `arm_column` builds the same text in SQL."""
    return f"holdout|{campaign_id}|{cycle}|{patient_id}"


def arm_of(campaign_id: str, holdout_percent: float, cycle: int, patient_id: int) -> Arm:
    """The arm `arm_column` gives, computed in Python (tests check the SQL against it)."""
    control = sql.bucket_of(holdout_key(campaign_id, cycle, patient_id)) < threshold(holdout_percent)
    return Arm.holdout if control else Arm.treated


def arm_column(
    campaign: CampaignFile, cycle: ColumnElement[Any], patient_id: SQLColumnExpression[Any], dialect: str
) -> ColumnElement[str]:
    """The arm as an SQL expression of the enrollment's cycle and patient id."""
    if threshold(campaign.holdout) <= 0:
        return literal(Arm.treated.value, String)
    key = (
        literal(f"holdout|{campaign.id}|", String)
        .concat(cast(cycle, String))
        .concat("|")
        .concat(cast(patient_id, String))
    )
    return case(
        (sql.bucket(key, dialect) < threshold(campaign.holdout), literal(Arm.holdout.value, String)),
        else_=literal(Arm.treated.value, String),
    )
