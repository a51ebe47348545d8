"""Operator feedback: line staff reporting a wrong output."""

from __future__ import annotations

import sqlalchemy as sa

TZ = sa.DateTime(timezone=True)
metadata = sa.MetaData()

operator_feedback = sa.Table(
    "operator_feedback",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("reported_at", TZ, nullable=False, index=True),
    sa.Column("reported_by", sa.String(200), nullable=False),
    sa.Column("occurred_at", TZ, nullable=False),
    sa.Column("line", sa.String(64), nullable=False),
    sa.Column("station", sa.String(64), nullable=True),
    sa.Column("device_id", sa.String(64), nullable=True),
    sa.Column("camera", sa.String(64), nullable=True),
    sa.Column("record_id", sa.String(128), nullable=True),
    sa.Column("model", sa.String(200), nullable=True),
    sa.Column("version", sa.String(100), nullable=True),
    sa.Column("problem", sa.String(32), nullable=False),
    sa.Column("expected_decision", sa.String(32), nullable=True),
    sa.Column("comment", sa.Text, nullable=False),
    #: Whether it was counted in a monitor window (it needs a model version).
    sa.Column("counted", sa.Boolean, nullable=False),
)
