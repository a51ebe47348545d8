"""AI inventory, model lines and versions, content-addressed blobs, golden sets, validation runs,
approvals.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "ai_system",
        sa.Column("id", sa.String, primary_key=True),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("purpose", sa.Text, nullable=False),
        sa.Column("intended_use", sa.Text, nullable=False),
        sa.Column("deployment_context", sa.Text, nullable=False),
        sa.Column("decision_influenced", sa.Text, nullable=False),
        sa.Column("consequence_if_wrong", sa.Text, nullable=True),
        sa.Column("eu_category", sa.String, nullable=True),
        sa.Column("eu_basis", sa.Text, nullable=True),
        sa.Column("eu_rationale", sa.Text, nullable=True),
        sa.Column("nist_tier", sa.Integer, nullable=True),
        sa.Column("owner_name", sa.String, nullable=True),
        sa.Column("owner_email", sa.String, nullable=True),
        sa.Column("cadence_override", sa.String, nullable=True),
        sa.Column("cadence_override_reason", sa.Text, nullable=True),
        sa.Column("provider", sa.String, nullable=False),
        sa.Column("product", sa.String, nullable=True),
        sa.Column("supplier_id", sa.String, nullable=True),
        sa.Column("lines", sa.JSON, nullable=False),
        sa.Column("status", sa.String, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("created_by", sa.String, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("updated_by", sa.String, nullable=False),
    )
    op.create_table(
        "inventory_candidate",
        sa.Column("id", sa.String, primary_key=True),
        sa.Column("source", sa.String, nullable=False),
        sa.Column("location", sa.String, nullable=False),
        sa.Column("passage", sa.Text, nullable=False),
        sa.Column("vendor", sa.String, nullable=True),
        sa.Column("terms", sa.JSON, nullable=False),
        sa.Column("suggestion", sa.JSON, nullable=False),
        sa.Column("status", sa.String, nullable=False, index=True),
        sa.Column("system_id", sa.String, nullable=True),
        sa.Column("decided_by", sa.String, nullable=True),
        sa.Column("decided_at", TZ, nullable=True),
        sa.Column("decision_reason", sa.Text, nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("created_by", sa.String, nullable=False),
    )
    op.create_table(
        "model_line",
        sa.Column("name", sa.String, primary_key=True),
        sa.Column(
            "system_id", sa.String, sa.ForeignKey("ai_system.id"), nullable=False, index=True
        ),
        sa.Column("critical_classes", sa.JSON, nullable=False),
        sa.Column("tolerance", sa.Float, nullable=False),
        sa.Column("good_class", sa.String, nullable=True),
        sa.Column("min_defect_detection", sa.JSON, nullable=False),
        sa.Column("max_lighting_flip_rate", sa.Float, nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("created_by", sa.String, nullable=False),
    )
    op.create_table(
        "blob",
        sa.Column("digest", sa.String, primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
    )
    op.create_table(
        "model_version",
        sa.Column("id", sa.String, primary_key=True),
        sa.Column(
            "model_name", sa.String, sa.ForeignKey("model_line.name"), nullable=False, index=True
        ),
        sa.Column("version", sa.String, nullable=False),
        sa.Column("security_version", sa.Integer, nullable=False),
        sa.Column("state", sa.String, nullable=False, index=True),
        sa.Column("files", sa.JSON, nullable=False),
        sa.Column("artefact_digest", sa.String, nullable=False, index=True),
        sa.Column("manifest_digest", sa.String, nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("onnx", sa.JSON, nullable=False),
        sa.Column("meta", sa.JSON, nullable=False),
        sa.Column("signature_digest", sa.String, nullable=False),
        sa.Column("signing_key_id", sa.String, nullable=False),
        sa.Column("uploader", sa.String, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("validation_id", sa.String, nullable=True),
        sa.Column("validated_at", TZ, nullable=True),
        sa.Column("approved_at", TZ, nullable=True),
        sa.Column("released_at", TZ, nullable=True),
        sa.Column("released_by", sa.String, nullable=True),
        sa.Column("release_evidence", sa.JSON, nullable=False),
        sa.Column("revoked_at", TZ, nullable=True),
        sa.Column("revoked_by", sa.String, nullable=True),
        sa.Column("revoke_reason", sa.Text, nullable=True),
        sa.UniqueConstraint("model_name", "version"),
    )
    op.create_table(
        "golden_set",
        sa.Column("id", sa.String, primary_key=True),
        sa.Column(
            "model_name", sa.String, sa.ForeignKey("model_line.name"), nullable=False, index=True
        ),
        sa.Column("digest", sa.String, nullable=False),
        sa.Column("samples", sa.Integer, nullable=False),
        sa.Column("label_names", sa.JSON, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("created_by", sa.String, nullable=False),
    )
    op.create_table(
        "validation_run",
        sa.Column("id", sa.String, primary_key=True),
        sa.Column(
            "version_id",
            sa.String,
            sa.ForeignKey("model_version.id"),
            nullable=False,
            index=True,
        ),
        sa.Column("golden_set_id", sa.String, sa.ForeignKey("golden_set.id"), nullable=False),
        sa.Column("baseline_version_id", sa.String, nullable=True),
        sa.Column("passed", sa.Boolean, nullable=False),
        sa.Column("report", sa.JSON, nullable=False),
        sa.Column("envelope", sa.JSON, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("created_by", sa.String, nullable=False),
    )
    op.create_table(
        "approval",
        sa.Column("id", sa.String, primary_key=True),
        sa.Column(
            "version_id",
            sa.String,
            sa.ForeignKey("model_version.id"),
            nullable=False,
            index=True,
        ),
        sa.Column("approver", sa.String, nullable=False),
        sa.Column("decision", sa.String, nullable=False),
        sa.Column("rationale", sa.Text, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.UniqueConstraint("version_id", "approver"),
    )


def downgrade() -> None:
    for table in (
        "approval",
        "validation_run",
        "golden_set",
        "model_version",
        "blob",
        "model_line",
        "inventory_candidate",
        "ai_system",
    ):
        op.drop_table(table)
