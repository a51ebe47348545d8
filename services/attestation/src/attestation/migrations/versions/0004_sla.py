"""SLA terms, contracted artefacts, notices and breaches.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "supplier_sla",
        sa.Column("supplier_id", sa.String, sa.ForeignKey("supplier.id"), primary_key=True),
        sa.Column("required_evidence", sa.JSON, nullable=False),
        sa.Column("max_attestation_age_days", sa.Integer, nullable=False),
        sa.Column("vulnerability_response_days", sa.Integer, nullable=False),
        sa.Column("incident_response_days", sa.Integer, nullable=False),
        sa.Column("performance_commitments", sa.JSON, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("updated_by", sa.String, nullable=False),
    )
    op.create_table(
        "supplier_artefact",
        sa.Column("id", sa.String, primary_key=True),
        sa.Column(
            "supplier_id", sa.String, sa.ForeignKey("supplier.id"), nullable=False, index=True
        ),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("kind", sa.String, nullable=False),
        sa.Column("digest", sa.String, nullable=False),
        sa.Column("registered_at", TZ, nullable=False),
        sa.Column("registered_by", sa.String, nullable=False),
        sa.UniqueConstraint("supplier_id", "digest", name="uq_supplier_artefact_digest"),
    )
    op.create_table(
        "supplier_notice",
        sa.Column("id", sa.String, primary_key=True),
        sa.Column(
            "supplier_id", sa.String, sa.ForeignKey("supplier.id"), nullable=False, index=True
        ),
        sa.Column("kind", sa.String, nullable=False),
        sa.Column("reference", sa.String, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("sent_at", TZ, nullable=False),
        sa.Column("sent_by", sa.String, nullable=False),
        sa.Column("responded_at", TZ, nullable=True),
        sa.Column("response", sa.Text, nullable=True),
    )
    op.create_table(
        "sla_breach",
        sa.Column("id", sa.String, primary_key=True),
        sa.Column(
            "supplier_id", sa.String, sa.ForeignKey("supplier.id"), nullable=False, index=True
        ),
        sa.Column("term", sa.String, nullable=False),
        sa.Column("key", sa.String, nullable=False),
        sa.Column("since", TZ, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("opened_at", TZ, nullable=False),
        sa.Column("resolved_at", TZ, nullable=True, index=True),
    )


def downgrade() -> None:
    for table in ("sla_breach", "supplier_notice", "supplier_artefact", "supplier_sla"):
        op.drop_table(table)
