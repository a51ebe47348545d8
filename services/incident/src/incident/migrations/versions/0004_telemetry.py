"""Telemetry ingest, monitor windows, the post-market monitoring log, operator feedback.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
HIST = [f"h{i:02d}" for i in range(20)]
STATS = ("brightness", "contrast", "sharpness")


def _int(name: str) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.Integer, nullable=False)


def _float(name: str) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.Float, nullable=False)


def upgrade() -> None:
    op.create_table(
        "postmarket_event",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("occurred_at", TZ, nullable=False),
        sa.Column("recorded_at", TZ, nullable=False),
        sa.Column("event_id", sa.String(128), nullable=True),
        sa.Column("incident_id", sa.String(128), nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("version", sa.String(100), nullable=True),
        sa.Column("device_id", sa.String(64), nullable=True),
        sa.Column("line", sa.String(64), nullable=True),
        sa.Column("station", sa.String(64), nullable=True),
        sa.Column("record_id", sa.String(128), nullable=True),
        sa.Column("payload", sa.Text, nullable=False),
    )
    op.create_index("ix_postmarket_incident", "postmarket_event", ["incident_id", "id"])
    op.create_index("ix_postmarket_model_version", "postmarket_event", ["model", "version", "id"])
    op.create_index("ix_postmarket_device", "postmarket_event", ["device_id", "id"])
    op.create_index("ix_postmarket_line", "postmarket_event", ["line", "id"])
    op.create_index("ix_postmarket_occurred", "postmarket_event", ["occurred_at"])
    op.create_index("ix_postmarket_record", "postmarket_event", ["record_id"])

    op.create_table(
        "telemetry_seen",
        sa.Column("event_id", sa.String(160), primary_key=True),
        sa.Column("seen_at", TZ, nullable=False, index=True),
    )
    op.create_table(
        "telemetry_dead_letter",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("received_at", TZ, nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("stream_seq", sa.BigInteger, nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("truncated", sa.Boolean, nullable=False),
    )
    op.create_table(
        "telemetry_window",
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("version", sa.String(100), primary_key=True),
        sa.Column("line", sa.String(64), primary_key=True),
        sa.Column("bucket_start", TZ, primary_key=True),
        sa.Column("bucket_end", TZ, nullable=False),
        sa.Column("shift", sa.String(64), nullable=False),
        *(_int(c) for c in ("n", "passes", "rejects", "manual", "conf_n")),
        _float("conf_sum"),
        _float("conf_sumsq"),
        *(_int(h) for h in HIST),
        _float("latency_sum"),
        *(_int(c) for c in ("overrides", "overrides_to_pass", "overrides_to_reject", "feedback")),
        sa.Column("updated_at", TZ, nullable=False, index=True),
    )
    op.create_table(
        "camera_window",
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("version", sa.String(100), primary_key=True),
        sa.Column("line", sa.String(64), primary_key=True),
        sa.Column("device_id", sa.String(64), primary_key=True),
        sa.Column("camera", sa.String(64), primary_key=True),
        sa.Column("bucket_start", TZ, primary_key=True),
        _int("n"),
        *(_float(f"{s}_{m}") for s in STATS for m in ("sum", "sumsq")),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_table(
        "kpi_window",
        sa.Column("line", sa.String(64), primary_key=True),
        sa.Column("bucket_start", TZ, primary_key=True),
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("version", sa.String(100), primary_key=True),
        sa.Column("bucket_end", TZ, nullable=False),
        sa.Column("shift", sa.String(64), nullable=False),
        *(_int(c) for c in ("samples", "produced", "scrap", "rework", "escapes")),
        _float("oee_sum"),
        _int("oee_n"),
        sa.Column("updated_at", TZ, nullable=False, index=True),
    )
    op.create_table(
        "monitor_config",
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("version", sa.String(100), primary_key=True),
        sa.Column("line", sa.String(64), primary_key=True),
        sa.Column("tier", sa.Integer, nullable=False),
        sa.Column("cadence", sa.String(32), nullable=False),
        sa.Column("tier_source", sa.Text, nullable=False),
        sa.Column("tier_checked_at", TZ, nullable=True),
        sa.Column("thresholds", sa.JSON, nullable=False),
        sa.Column("reference_from", TZ, nullable=True),
        sa.Column("reference_to", TZ, nullable=True),
        sa.Column("last_evaluated_at", TZ, nullable=True),
        sa.Column("next_due_at", TZ, nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
    )
    op.create_table(
        "monitor_state",
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("version", sa.String(100), primary_key=True),
        sa.Column("line", sa.String(64), primary_key=True),
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
    op.create_table(
        "operator_feedback",
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
        sa.Column("counted", sa.Boolean, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "operator_feedback",
        "monitor_state",
        "monitor_config",
        "kpi_window",
        "camera_window",
        "telemetry_window",
        "telemetry_dead_letter",
        "telemetry_seen",
        "postmarket_event",
    ):
        op.drop_table(table)
