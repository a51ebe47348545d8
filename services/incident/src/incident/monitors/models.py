"""Tables of the monitors: per model version x line, its configuration (risk tier and where
it came from, threshold overrides, reference window) and each monitor's last state."""

from __future__ import annotations

import sqlalchemy as sa

TZ = sa.DateTime(timezone=True)
metadata = sa.MetaData()

monitor_config = sa.Table(
    "monitor_config",
    metadata,
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("version", sa.String(100), primary_key=True),
    sa.Column("line", sa.String(64), primary_key=True),
    sa.Column("tier", sa.Integer, nullable=False),
    sa.Column("cadence", sa.String(32), nullable=False),
    #: ``registry`` / ``registry (cadence override)`` / ``default: <why>``.
    sa.Column("tier_source", sa.Text, nullable=False),
    sa.Column("tier_checked_at", TZ, nullable=True),
    #: Threshold overrides set through the API (the tier's defaults fill the rest).
    sa.Column("thresholds", sa.JSON, nullable=False),
    sa.Column("reference_from", TZ, nullable=True),
    sa.Column("reference_to", TZ, nullable=True),
    sa.Column("last_evaluated_at", TZ, nullable=True),
    sa.Column("next_due_at", TZ, nullable=True),
    sa.Column("created_at", TZ, nullable=False),
    sa.Column("updated_at", TZ, nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
)

monitor_state = sa.Table(
    "monitor_state",
    metadata,
    sa.Column("model", sa.String(200), primary_key=True),
    sa.Column("version", sa.String(100), primary_key=True),
    sa.Column("line", sa.String(64), primary_key=True),
    #: ``confidence_drift``, ``input_drift:<device>/<camera>``, ``outcome``, ...
    sa.Column("monitor", sa.String(200), primary_key=True),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("values", sa.JSON, nullable=False),
    sa.Column("dedup_key", sa.String(500), nullable=False),
    sa.Column("evaluated_at", TZ, nullable=False),
    sa.Column("since", TZ, nullable=False),
    sa.Column("fired_at", TZ, nullable=True),
    sa.Column("fire_count", sa.Integer, nullable=False),
)
